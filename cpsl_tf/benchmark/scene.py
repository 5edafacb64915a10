"""Street-scene layout and drawing for the generated benchmark.

A scene is a street seen by the pinhole camera of ``cpsl_tf.benchmark.canvas``. Elements are painted back
to front: sky, skyline, ground bands, facades, setback vegetation, walls and fences, then the objects of
the street (``cpsl_tf.benchmark.objects``) sorted by depth.

Colours here are the neutral base palette; the domain's per-class appearance and camera are applied
afterwards (``cpsl_tf.benchmark.style``), keyed by the label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpsl_tf.benchmark.canvas import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    FENCE,
    MOTORCYCLE,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    TRAIN,
    TRUCK,
    VEGETATION,
    VOID,
    WALL,
    Camera,
    Canvas,
    quad_ground,
    quad_vertical_x,
    quad_vertical_z,
)
from cpsl_tf.benchmark.objects import GLASS, draw_person, draw_pole, draw_tree, draw_two_wheeler, draw_vehicle
from cpsl_tf.benchmark.style import Density, DomainStyle

Z_FAR = 160.0

BUILDING_COLOURS = ((150, 105, 85), (170, 165, 155), (200, 185, 150), (115, 112, 120), (185, 150, 120))


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
        canvas.polygons([quad_ground(cam, x_in, x_out, z0, Z_FAR)], SIDEWALK, canvas.colour((165, 155, 145)))
        kerb = quad_ground(cam, x_in, x_in + side * 0.25, z0, Z_FAR)
        canvas.polygons([kerb], SIDEWALK, canvas.colour((200, 195, 185), 0.5))
    canvas.polygons([quad_ground(cam, street.road_left, street.road_right, z0, Z_FAR)], ROAD,
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
                marks.append(quad_ground(cam, x - 0.08, x + 0.08, za, z + dash))
    canvas.polygons(marks, ROAD, canvas.colour((225, 225, 220), 0.3))
    if rng.random() < 0.25:  # a zebra crossing
        z = rng.uniform(z0 + 2, 25.0)
        stripes = [quad_ground(cam, x, x + 0.5, z, z + 3.0)
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
                end = quad_vertical_z(cam, x, x + side * 15.0, 0.0, height, z0)
                canvas.polygons([end], BUILDING, canvas.colour(base, 1.0, 0.75))
                facade = quad_vertical_x(cam, x, 0.0, height, z0, z1)
                canvas.polygons([facade], BUILDING, canvas.colour(base))
                canvas.polygons(_window_grid(cam, x, z0, z1, height), BUILDING,
                                canvas.colour(GLASS if rng.random() < 0.6 else (220, 210, 180), 0.7))
            elif draw < density.building_probability + 0.15:
                height = rng.uniform(2.0, 6.0)
                canvas.polygons([quad_vertical_x(cam, x, 0.0, height, z0, z1)], VEGETATION,
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
            canvas.polygons([quad_vertical_x(cam, x, 0.0, height, z0, z1)], label, canvas.colour(base))
            if label == FENCE:  # posts and a top rail, lighter
                posts = [quad_vertical_x(cam, x, 0.0, height, z, z + 0.15) for z in np.arange(z0, z1, 2.5)]
                posts.append(quad_vertical_x(cam, x, height - 0.12, height, z0, z1))
                canvas.polygons(posts, FENCE, canvas.colour((160, 150, 130), 0.5))



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
