"""Street-scene geometry and drawing for the generated benchmark.

A pinhole camera looks along a straight street from ``camera_height`` metres above the ground plane:
a world point (x right, y up, z forward) lands at ``u = cx + f x / z``, ``v = horizon + f (h - y) / z``,
so an object's size falls as 1 / depth. Every element is a polygon (or ellipse) drawn with the same
rasteriser into the colour canvas and the label map, so the labels are exact. Elements are painted back
to front: sky, skyline, ground bands, facades, setback vegetation, walls and fences, then the objects of
the street sorted by depth.

Colours here are the neutral base palette; the domain's per-class appearance and camera are applied
afterwards (``bench_style``), keyed by the label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cpsl_tf.data.bench_style import Density, DomainStyle

# Cityscapes labelIds (see cpsl_tf.labels.CITYSCAPES_IDS_19); 0 is void.
VOID, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 0, 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER = 19, 20, 21, 22, 23, 24, 25
CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 26, 27, 28, 31, 32, 33

_SHIFT = 4  # fixed-point bits of the polygon coordinates handed to OpenCV
_ONE = 1 << _SHIFT
Z_FAR = 160.0

BUILDING_COLOURS = ((150, 105, 85), (170, 165, 155), (200, 185, 150), (115, 112, 120), (185, 150, 120))
CAR_COLOURS = ((190, 30, 30), (30, 60, 150), (225, 225, 225), (35, 35, 38), (160, 160, 165),
               (40, 110, 60), (210, 170, 40), (110, 70, 40))
BUS_COLOURS = ((200, 60, 40), (235, 195, 40), (60, 120, 200), (230, 230, 230))
CLOTHES = ((40, 40, 60), (150, 30, 30), (30, 60, 130), (200, 200, 190), (90, 70, 50), (60, 100, 60),
           (30, 30, 30), (190, 150, 40))
SKIN = ((230, 190, 160), (180, 130, 100), (110, 75, 55))
SIGN_COLOURS = ((30, 80, 190), (200, 35, 35), (230, 190, 30), (240, 240, 240))
GLASS = (45, 60, 75)
TYRE = (25, 25, 25)


@dataclass(frozen=True)
class Camera:
    height: int
    width: int
    horizon: float
    cx: float
    focal: float
    camera_height: float

    def project(self, x, y, z):
        z = np.asarray(z, dtype=np.float64)
        return self.cx + self.focal * np.asarray(x) / z, self.horizon + self.focal * (
            self.camera_height - np.asarray(y)) / z

    def points(self, xyz) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates."""
        xyz = np.asarray(xyz, dtype=np.float64)
        u, v = self.project(xyz[:, 0], xyz[:, 1], xyz[:, 2])
        return np.stack([u, v], axis=-1)

    def near_depth(self) -> float:
        """Depth at which the ground plane leaves the bottom of the image (a little nearer)."""
        return 0.9 * self.focal * self.camera_height / max(self.height - self.horizon, 1.0)


class Canvas:
    """Colour image and label map painted by the same rasteriser calls."""

    def __init__(self, height: int, width: int, rng: np.random.Generator, colour_jitter: float):
        self.rgb = np.zeros((height, width, 3), dtype=np.uint8)
        self.label = np.zeros((height, width), dtype=np.uint8)
        self.rng = rng
        self.colour_jitter = colour_jitter

    def colour(self, base, jitter: float = 1.0, shade: float = 1.0) -> tuple[int, int, int]:
        """A per-object colour: base plus a random offset of the domain's spread, times a shade."""
        c = (np.asarray(base, np.float64) + self.colour_jitter * jitter * self.rng.standard_normal(3)) * shade
        return tuple(int(v) for v in np.clip(c, 0, 255))

    def polygons(self, polys, label: int, colour) -> None:
        pts = [np.round(np.asarray(p) * _ONE).astype(np.int32) for p in polys]
        if not pts:
            return
        cv2.fillPoly(self.rgb, pts, colour, lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(self.label, pts, label, lineType=cv2.LINE_8, shift=_SHIFT)

    def ellipse(self, centre, axes, label: int, colour, thickness: int = -1) -> None:
        c = (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE)))
        a = (max(int(round(axes[0] * _ONE)), _ONE // 2), max(int(round(axes[1] * _ONE)), _ONE // 2))
        for image, value in ((self.rgb, colour), (self.label, label)):
            cv2.ellipse(image, c, a, 0, 0, 360, value, thickness, cv2.LINE_8, _SHIFT)


def _quad_ground(cam: Camera, x0, x1, z0, z1) -> np.ndarray:
    return cam.points([(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)])


def _quad_vertical_x(cam: Camera, x, y0, y1, z0, z1) -> np.ndarray:
    """A vertical rectangle in the plane x = const (a facade, a vehicle side)."""
    return cam.points([(x, y0, z0), (x, y0, z1), (x, y1, z1), (x, y1, z0)])


def _quad_vertical_z(cam: Camera, x0, x1, y0, y1, z) -> np.ndarray:
    """A vertical rectangle facing the camera (plane z = const)."""
    return cam.points([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)])


@dataclass
class Street:
    road_left: float
    road_right: float
    lane_width: float
    sidewalk: tuple[float, float]  # widths, left and right
    setback: tuple[float, float]

    def kerb(self, side: int) -> float:
        return self.road_right if side > 0 else self.road_left

    def sidewalk_outer(self, side: int) -> float:
        return self.kerb(side) + side * self.sidewalk[int(side > 0)]

    def facade(self, side: int) -> float:
        return self.sidewalk_outer(side) + side * self.setback[int(side > 0)]


def sample_camera(rng: np.random.Generator, style: DomainStyle, height: int, width: int) -> Camera:
    g = style.geometry
    return Camera(height, width, horizon=rng.uniform(*g.horizon) * height,
                  cx=width / 2 + rng.normal(0, 0.02 * width), focal=rng.uniform(*g.focal) * width,
                  camera_height=rng.uniform(*g.camera_height))


def sample_street(rng: np.random.Generator) -> Street:
    lanes = int(rng.integers(2, 5))
    lane_width = rng.uniform(3.0, 3.6)
    offset = rng.uniform(0.3, 0.7) * lane_width * (lanes // 2 + 1) * rng.choice((-1, 1)) * 0.6
    left = -lanes * lane_width / 2 + offset
    return Street(road_left=left, road_right=left + lanes * lane_width, lane_width=lane_width,
                  sidewalk=(rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)),
                  setback=tuple(rng.uniform(0.0, 6.0) * (rng.random() < 0.6) for _ in range(2)))


def draw_sky(canvas: Canvas, cam: Camera) -> None:
    rng = canvas.rng
    top = np.asarray(canvas.colour((95, 150, 225), 1.5))
    bottom = np.asarray(canvas.colour((200, 220, 240), 1.0))
    rows = max(int(np.ceil(cam.horizon)) + 1, 1)
    t = np.linspace(0.0, 1.0, rows)[:, None]
    gradient = (top * (1 - t) + bottom * t).astype(np.uint8)
    canvas.rgb[:rows] = gradient[:, None, :]
    canvas.rgb[rows:] = gradient[-1]
    canvas.label[:] = SKY
    if rng.random() < 0.5:  # a few clouds
        for _ in range(int(rng.integers(1, 4))):
            centre = (rng.uniform(0, cam.width), rng.uniform(0, cam.horizon * 0.6))
            axes = (rng.uniform(0.05, 0.15) * cam.width, rng.uniform(0.02, 0.05) * cam.height)
            canvas.ellipse(centre, axes, SKY, canvas.colour((235, 238, 242), 0.5))


def draw_skyline(canvas: Canvas, cam: Camera) -> None:
    """Distant buildings and tree lines standing on the horizon."""
    rng = canvas.rng
    u = -2.0
    while u < cam.width:
        w = rng.uniform(0.04, 0.15) * cam.width
        if rng.random() < 0.7:
            h = rng.uniform(0.03, 0.2) * cam.height
            poly = np.array([(u, cam.horizon + 1), (u + w, cam.horizon + 1), (u + w, cam.horizon - h),
                             (u, cam.horizon - h)])
            canvas.polygons([poly], BUILDING, canvas.colour(BUILDING_COLOURS[rng.integers(5)], 1.0, 0.85))
        else:
            h = rng.uniform(0.02, 0.07) * cam.height
            canvas.ellipse((u + w / 2, cam.horizon), (w / 2, h), VEGETATION, canvas.colour((55, 100, 45)))
        u += w


def draw_ground(canvas: Canvas, cam: Camera, street: Street) -> None:
    rng = canvas.rng
    z0 = cam.near_depth()
    ground = np.array([(-1, cam.horizon), (cam.width + 1, cam.horizon), (cam.width + 1, cam.height + 1),
                       (-1, cam.height + 1)])
    canvas.polygons([ground], TERRAIN, canvas.colour((140, 145, 80)))
    for side in (-1, 1):
        x_in, x_out = street.kerb(side), street.sidewalk_outer(side)
        canvas.polygons([_quad_ground(cam, x_in, x_out, z0, Z_FAR)], SIDEWALK, canvas.colour((165, 155, 145)))
        kerb = _quad_ground(cam, x_in, x_in + side * 0.25, z0, Z_FAR)
        canvas.polygons([kerb], SIDEWALK, canvas.colour((200, 195, 185), 0.5))
    canvas.polygons([_quad_ground(cam, street.road_left, street.road_right, z0, Z_FAR)], ROAD,
                    canvas.colour((95, 92, 100)))
    lanes = int(round((street.road_right - street.road_left) / street.lane_width))
    period, dash = rng.uniform(8.0, 12.0), rng.uniform(2.5, 4.0)
    start = z0 - rng.uniform(0, period)
    marks = []
    for k in range(1, lanes):
        x = street.road_left + k * street.lane_width
        for z in np.arange(start, 60.0, period):
            za = max(z, z0)
            if z + dash > za:
                marks.append(_quad_ground(cam, x - 0.08, x + 0.08, za, z + dash))
    canvas.polygons(marks, ROAD, canvas.colour((225, 225, 220), 0.3))
    if rng.random() < 0.25:  # a zebra crossing
        z = rng.uniform(z0 + 2, 25.0)
        stripes = [_quad_ground(cam, x, x + 0.5, z, z + 3.0)
                   for x in np.arange(street.road_left + 0.3, street.road_right - 0.5, 1.0)]
        canvas.polygons(stripes, ROAD, canvas.colour((225, 225, 220), 0.3))


def _window_grid(cam: Camera, x: float, z0: float, z1: float, height: float) -> list[np.ndarray]:
    floors = np.arange(1.2, height - 1.5, 3.2)
    columns = np.arange(z0 + 1.0, z1 - 1.5, 2.6)
    if len(floors) == 0 or len(columns) == 0:
        return []
    y, z = np.meshgrid(floors, columns, indexing="ij")
    y, z = y.ravel(), z.ravel()
    xs = np.full_like(y, x)
    corners = np.stack([np.stack([xs, y, z], -1), np.stack([xs, y, z + 1.3], -1),
                        np.stack([xs, y + 1.6, z + 1.3], -1), np.stack([xs, y + 1.6, z], -1)], axis=1)
    pixels = cam.points(corners.reshape(-1, 3)).reshape(-1, 4, 2)
    visible = (pixels[:, 2, 1] - pixels[:, 0, 1]) < -1.0  # at least a pixel high
    return list(pixels[visible])


def draw_facades(canvas: Canvas, cam: Camera, street: Street, density: Density) -> None:
    """Building segments (with window grids) and vegetation or open land along both sides."""
    rng = canvas.rng
    for side in (-1, 1):
        x = street.facade(side)
        z, segments = cam.near_depth() * 0.5, []
        while z < Z_FAR:
            length = rng.uniform(8.0, 35.0)
            segments.append((z, z + length, rng.random()))
            z += length + (rng.uniform(2.0, 10.0) if rng.random() < 0.25 else 0.0)
        for z0, z1, draw in reversed(segments):
            if draw < density.building_probability:
                height = rng.uniform(5.0, 28.0)
                base = BUILDING_COLOURS[rng.integers(len(BUILDING_COLOURS))]
                end = _quad_vertical_z(cam, x, x + side * 15.0, 0.0, height, z0)
                canvas.polygons([end], BUILDING, canvas.colour(base, 1.0, 0.75))
                facade = _quad_vertical_x(cam, x, 0.0, height, z0, z1)
                canvas.polygons([facade], BUILDING, canvas.colour(base))
                canvas.polygons(_window_grid(cam, x, z0, z1, height), BUILDING,
                                canvas.colour(GLASS if rng.random() < 0.6 else (220, 210, 180), 0.7))
            elif draw < density.building_probability + 0.15:
                height = rng.uniform(2.0, 6.0)
                canvas.polygons([_quad_vertical_x(cam, x, 0.0, height, z0, z1)], VEGETATION,
                                canvas.colour((50, 105, 40)))


def draw_walls_and_fences(canvas: Canvas, cam: Camera, street: Street, density: Density) -> None:
    rng = canvas.rng
    for side in (-1, 1):
        for label, probability in ((WALL, density.wall_probability), (FENCE, density.fence_probability)):
            if rng.random() >= probability:
                continue
            x = street.sidewalk_outer(side) + side * (0.1 if label == WALL else 0.3)
            z0 = max(cam.near_depth() * 0.5, rng.uniform(-10.0, 25.0))
            z1 = z0 + rng.uniform(10.0, 50.0)
            height = rng.uniform(1.0, 2.5) if label == WALL else rng.uniform(1.0, 2.0)
            base = (175, 170, 150) if label == WALL else (115, 105, 85)
            canvas.polygons([_quad_vertical_x(cam, x, 0.0, height, z0, z1)], label, canvas.colour(base))
            if label == FENCE:  # posts and a top rail, lighter
                posts = [_quad_vertical_x(cam, x, 0.0, height, z, z + 0.15) for z in np.arange(z0, z1, 2.5)]
                posts.append(_quad_vertical_x(cam, x, height - 0.12, height, z0, z1))
                canvas.polygons(posts, FENCE, canvas.colour((160, 150, 130), 0.5))


# --- objects of the street: each returns nothing and draws itself; they are painted sorted by depth ---

def draw_tree(canvas: Canvas, cam: Camera, x: float, z: float, scale: float) -> None:
    trunk_h, radius = canvas.rng.uniform(1.8, 3.0) * scale, canvas.rng.uniform(1.3, 2.8) * scale
    canvas.polygons([_quad_vertical_z(cam, x - 0.15, x + 0.15, 0.0, trunk_h + radius * 0.5, z)], VEGETATION,
                    canvas.colour((90, 65, 40), 0.5))
    (u,), (v,) = cam.project([x], [trunk_h + radius * 0.9], [z])
    s = cam.focal / z
    canvas.ellipse((u, v), (radius * s, radius * 1.1 * s), VEGETATION, canvas.colour((60, 120, 40)))


def draw_pole(canvas: Canvas, cam: Camera, x: float, z: float, side: int, scale: float) -> None:
    """A pole carrying a traffic light (possibly on an arm over the road) and/or a sign."""
    rng = canvas.rng
    height = rng.uniform(4.0, 7.0)
    canvas.polygons([_quad_vertical_z(cam, x - 0.12, x + 0.12, 0.0, height, z)], POLE,
                    canvas.colour((130, 130, 135)))
    kind = rng.random()
    if kind < 0.5:  # traffic light, enlarged so that it stays learnable at 96x192
        box_w, box_h = 0.55 * scale, 1.3 * scale
        if rng.random() < 0.5:
            arm = rng.uniform(2.0, 4.5)
            x_light = x - side * arm
            arm_quad = _quad_vertical_z(cam, min(x, x_light), max(x, x_light), height - 0.2, height, z)
            canvas.polygons([arm_quad], POLE, canvas.colour((130, 130, 135)))
            top = height - 0.1
        else:
            x_light, top = x - side * (0.12 + box_w / 2), height - rng.uniform(0.0, 1.5)
        box = _quad_vertical_z(cam, x_light - box_w / 2, x_light + box_w / 2, top - box_h, top, z - 0.1)
        canvas.polygons([box], LIGHT, canvas.colour((40, 40, 40), 0.3))
        lamp = int(rng.integers(3))
        lamp_colour = ((230, 40, 30), (240, 180, 20), (40, 220, 90))[lamp]
        (u,), (v,) = cam.project([x_light], [top - box_h * (0.2 + 0.3 * lamp)], [z - 0.1])
        r = 0.15 * scale * cam.focal / z
        canvas.ellipse((u, v), (r, r), LIGHT, lamp_colour)
    if kind >= 0.35:  # traffic sign
        size = rng.uniform(0.7, 1.1) * scale
        y = rng.uniform(2.0, height - size - 0.2) if kind >= 0.5 else rng.uniform(2.0, 3.0)
        x_sign = x - side * (0.12 + size / 2)
        shape = rng.integers(3)
        colour = canvas.colour(SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))], 0.5)
        if shape == 0:
            plate = _quad_vertical_z(cam, x_sign - size / 2, x_sign + size / 2, y, y + size, z - 0.1)
            canvas.polygons([plate], SIGN, colour)
        elif shape == 1:
            (u,), (v,) = cam.project([x_sign], [y + size / 2], [z - 0.1])
            r = size / 2 * cam.focal / z
            canvas.ellipse((u, v), (r, r), SIGN, colour)
        else:
            tri = cam.points([(x_sign - size / 2, y + size, z - 0.1), (x_sign + size / 2, y + size, z - 0.1),
                              (x_sign, y, z - 0.1)])
            canvas.polygons([tri], SIGN, colour)


VEHICLES = {  # width, height, length (metres), glass band (fraction of height)
    CAR: (1.8, 1.5, 4.5, (0.55, 0.9)),
    TRUCK: (2.5, 3.3, 8.0, (0.6, 0.85)),
    BUS: (2.6, 3.2, 12.0, (0.45, 0.85)),
    TRAIN: (2.7, 3.6, 40.0, (0.45, 0.85)),
}


def draw_vehicle(canvas: Canvas, cam: Camera, label: int, x: float, z: float, scale: float) -> None:
    """A 3-D box: side face (the one turned to the camera axis), top, and rear/front face, with glass."""
    rng = canvas.rng
    w, h, length, (g0, g1) = VEHICLES[label]
    w, h = w * scale, h * scale
    if label == CAR:
        base = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
    elif label == TRUCK:
        base = (rng.choice((200, 150, 90)),) * 3
    elif label == TRAIN:
        base = (225, 225, 215)
    else:
        base = BUS_COLOURS[rng.integers(len(BUS_COLOURS))]
    colour = np.asarray(canvas.colour(base, 0.8))
    x0, x1, z1 = x - w / 2, x + w / 2, z + length
    faces, shades = [], []
    if x0 > 0:
        faces.append(_quad_vertical_x(cam, x0, 0.0, h, z, z1))
        shades.append(0.8)
    elif x1 < 0:
        faces.append(_quad_vertical_x(cam, x1, 0.0, h, z, z1))
        shades.append(0.8)
    if h < cam.camera_height:
        faces.append(cam.points([(x0, h, z), (x1, h, z), (x1, h, z1), (x0, h, z1)]))
        shades.append(1.1)
    for face, shade in zip(faces, shades):
        canvas.polygons([face], label, tuple(int(c) for c in np.clip(colour * shade, 0, 255)))
    glass = canvas.colour(GLASS, 0.5)
    if x0 > 0 or x1 < 0:
        xs = x0 if x0 > 0 else x1
        canvas.polygons([_quad_vertical_x(cam, xs, g0 * h, g1 * h, z + 0.3, z1 - 0.3)], label, glass)
        wheel_r = 0.35 * scale * (1.4 if label != CAR else 1.0)
        for zw in (z + 0.8, z1 - 0.9):
            (u,), (v,) = cam.project([xs], [wheel_r], [zw])
            s = cam.focal / zw
            canvas.ellipse((u, v), (wheel_r * s * abs(xs) / zw, wheel_r * s), label, TYRE)
    canvas.polygons([_quad_vertical_z(cam, x0, x1, 0.15, h, z)], label, tuple(int(c) for c in colour))
    canvas.polygons([_quad_vertical_z(cam, x0 + 0.1 * w, x1 - 0.1 * w, g0 * h, g1 * h, z)], label, glass)
    if label == CAR:
        lights = [_quad_vertical_z(cam, xa, xa + 0.25, 0.45 * h, 0.55 * h, z) for xa in (x0 + 0.05, x1 - 0.3)]
        canvas.polygons(lights, label, (200, 30, 30))


def _draw_body(canvas: Canvas, cam: Camera, label: int, x: float, z: float, height: float,
               seated: bool) -> None:
    """A person (standing) or a rider (seated, legs forward) of total height ``height`` at (x, z)."""
    rng = canvas.rng
    s = height / 1.75
    top_colour = canvas.colour(CLOTHES[rng.integers(len(CLOTHES))], 0.8)
    leg_colour = canvas.colour(CLOTHES[rng.integers(len(CLOTHES))], 0.8)
    hip = (0.9 if not seated else 1.0) * s
    if seated:
        legs = [cam.points([(x - 0.2 * s, hip, z), (x + 0.2 * s, hip, z), (x + 0.25 * s, hip - 0.55 * s, z),
                            (x - 0.25 * s, hip - 0.55 * s, z)])]
    else:
        legs = [_quad_vertical_z(cam, x + dx - 0.09 * s, x + dx + 0.09 * s, 0.0, hip, z)
                for dx in (-0.1 * s, 0.1 * s)]
    canvas.polygons(legs, label, leg_colour)
    shoulder = hip + 0.55 * s
    canvas.polygons([_quad_vertical_z(cam, x - 0.24 * s, x + 0.24 * s, hip - 0.05, shoulder, z),
                     _quad_vertical_z(cam, x - 0.3 * s, x - 0.22 * s, hip, shoulder, z),
                     _quad_vertical_z(cam, x + 0.22 * s, x + 0.3 * s, hip, shoulder, z)], label, top_colour)
    (u,), (v,) = cam.project([x], [shoulder + 0.13 * s], [z])
    r = 0.13 * s * cam.focal / z
    head = canvas.colour((60, 60, 65), 0.5) if seated and rng.random() < 0.6 else canvas.colour(
        SKIN[rng.integers(len(SKIN))], 0.5)
    canvas.ellipse((u, v), (r, r * 1.15), label, head)


def draw_person(canvas: Canvas, cam: Camera, x: float, z: float, scale: float) -> None:
    _draw_body(canvas, cam, PERSON, x, z, canvas.rng.uniform(1.55, 1.95) * scale, seated=False)


def draw_two_wheeler(canvas: Canvas, cam: Camera, label: int, x: float, z: float, scale: float,
                     ridden: bool) -> None:
    """A bicycle or motorcycle seen from the side or from behind, optionally with its rider."""
    rng = canvas.rng
    s = cam.focal / z
    wheel_r = (0.36 if label == BICYCLE else 0.34) * scale * 1.15
    profile = rng.random() < 0.65
    frame = canvas.colour((30, 30, 30) if label == BICYCLE else (40, 40, 45), 1.0)
    if profile:
        base = 0.55 * (1.1 if label == BICYCLE else 1.4) * scale
        (u0, u1), (v0, _) = cam.project([x - base, x + base], [wheel_r, wheel_r], [z, z])
        r = wheel_r * s
        thickness = max(1, int(round(r * (0.35 if label == BICYCLE else 0.6))))
        for u in (u0, u1):
            canvas.ellipse((u, v0), (r, r), label, TYRE, thickness=thickness)
        if label == BICYCLE:
            saddle = cam.points([(x - 0.2 * base, wheel_r * 2.1, z), (x + 0.8 * base, wheel_r * 2.2, z)])
            pts = np.array([(u0, v0), saddle[0], saddle[1], (u1, v0), ((u0 + u1) / 2, v0)])
            width = max(1, int(round(0.06 * scale * s)))
            for a, b in zip(pts[:-1], pts[1:]):
                for image, value in ((canvas.rgb, frame), (canvas.label, label)):
                    cv2.line(image, tuple(int(t) for t in a), tuple(int(t) for t in b), value, width,
                             cv2.LINE_8)
        else:
            body = cam.points([(x - 0.8 * base, wheel_r, z), (x + 0.9 * base, wheel_r, z),
                               (x + 0.7 * base, wheel_r * 2.6, z), (x - 0.6 * base, wheel_r * 2.4, z)])
            canvas.polygons([body], label, canvas.colour((rng.integers(30, 220),) * 3, 1.5))
        seat_x = x - 0.2 * base
    else:
        half = 0.06 if label == BICYCLE else 0.2
        wheel = _quad_vertical_z(cam, x - half * scale, x + half * scale, 0.0, 2 * wheel_r, z)
        canvas.polygons([wheel], label, TYRE)
        bar = 0.3 if label == BICYCLE else 0.4
        canvas.polygons([_quad_vertical_z(cam, x - bar * scale, x + bar * scale, 2 * wheel_r + 0.1,
                                          2 * wheel_r + 0.25, z + 0.1)], label, frame)
        if label == MOTORCYCLE:
            body = _quad_vertical_z(cam, x - 0.3 * scale, x + 0.3 * scale, wheel_r, wheel_r * 2.4, z)
            canvas.polygons([body], label, canvas.colour((60, 60, 65), 1.0))
        seat_x = x
    if ridden:
        _draw_body(canvas, cam, RIDER, seat_x, z - 0.05, rng.uniform(1.6, 1.85) * scale + 0.1, seated=True)


def place_objects(canvas: Canvas, cam: Camera, street: Street, density: Density, scale: float) -> list:
    """Sample the street's objects; returns (depth, draw) pairs, drawn later far to near."""
    rng = canvas.rng
    z_min = cam.near_depth() + 1.0
    items = []

    def on_sidewalk(side, margin=0.3):
        inner, outer = street.kerb(side) + side * margin, street.sidewalk_outer(side) - side * margin
        return rng.uniform(min(inner, outer), max(inner, outer))

    def add(z, fn, *args):
        if z > z_min:
            items.append((z, fn, args))

    lanes = max(1, int(round((street.road_right - street.road_left) / street.lane_width)))
    lane_x = [street.road_left + (k + 0.5) * street.lane_width for k in range(lanes)]

    def vehicle(label, z_max):
        z = rng.uniform(z_min, z_max)
        if rng.random() < 0.3 and label in (CAR, TRUCK):  # parked at the kerb
            side = rng.choice((-1, 1))
            x = street.kerb(side) - side * 1.2
        else:
            x = lane_x[rng.integers(lanes)] + rng.normal(0, 0.2)
        add(z, draw_vehicle, label, x, z, scale)

    for _ in range(rng.poisson(density.cars)):
        vehicle(CAR, 45.0)
    for _ in range(rng.poisson(density.trucks)):
        vehicle(TRUCK, 45.0)
    for _ in range(rng.poisson(density.buses)):
        vehicle(BUS, 45.0)
    if rng.random() < density.train_probability:
        vehicle(TRAIN, 25.0)
    for _ in range(rng.poisson(density.persons)):
        side = rng.choice((-1, 1))
        x = on_sidewalk(side) if rng.random() < 0.8 else rng.uniform(street.road_left, street.road_right)
        z = rng.uniform(z_min, 35.0)
        add(z, draw_person, x, z, scale)
    for label, mean in ((BICYCLE, density.cyclists), (MOTORCYCLE, density.motorcyclists)):
        for _ in range(rng.poisson(mean)):
            z = rng.uniform(z_min, 28.0)
            side = rng.choice((-1, 1))
            x = street.kerb(side) - side * rng.uniform(0.6, 1.5)
            add(z, draw_two_wheeler, label, x, z, scale, True)
    for _ in range(rng.poisson(density.parked_two_wheelers)):
        z, side = rng.uniform(z_min, 25.0), rng.choice((-1, 1))
        label = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        add(z, draw_two_wheeler, label, on_sidewalk(side), z, scale, False)
    for _ in range(rng.poisson(density.trees)):
        side = rng.choice((-1, 1))
        room = max(street.setback[int(side > 0)] - 1.0, 0.0)
        x = street.sidewalk_outer(side) + side * (0.6 + rng.uniform(0, room))
        z = rng.uniform(z_min, 70.0)
        add(z, draw_tree, x, z, scale)
    for _ in range(rng.poisson(density.poles)):
        side = rng.choice((-1, 1))
        z = rng.uniform(z_min + 2.0, 40.0)
        add(z, draw_pole, street.kerb(side) + side * 0.5, z, side, scale)
    return items


def draw_ego_hood(canvas: Canvas, cam: Camera) -> None:
    """The recording car's bonnet at the bottom of the frame (void, as in Cityscapes)."""
    rng = canvas.rng
    top = cam.height * rng.uniform(0.9, 0.95)
    canvas.ellipse((cam.width / 2, cam.height * 1.25), (cam.width * 0.75, cam.height * 1.25 - top), VOID,
                   canvas.colour((40, 42, 48), 0.5))


def draw_scene(rng: np.random.Generator, style: DomainStyle, height: int, width: int) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """Base-palette RGB (uint8) and labelIds of one street scene of ``style``'s geometry and densities."""
    cam = sample_camera(rng, style, height, width)
    street = sample_street(rng)
    canvas = Canvas(height, width, rng, style.appearance.colour_jitter)
    draw_sky(canvas, cam)
    draw_skyline(canvas, cam)
    draw_ground(canvas, cam, street)
    draw_facades(canvas, cam, street, style.density)
    draw_walls_and_fences(canvas, cam, street, style.density)
    items = place_objects(canvas, cam, street, style.density, style.geometry.object_scale)
    for _, fn, args in sorted(items, key=lambda item: -item[0]):
        fn(canvas, cam, *args)
    if style.geometry.ego_hood:
        draw_ego_hood(canvas, cam)
    return canvas.rgb, canvas.label
