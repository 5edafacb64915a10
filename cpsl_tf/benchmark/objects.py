"""The objects of a generated street: trees, poles with lights and signs, vehicles, people, two-wheelers.

Each ``draw_*`` function paints one object at a depth into the :class:`~cpsl_tf.benchmark.canvas.Canvas`
in the neutral base palette; ``cpsl_tf.benchmark.scene`` places them along the street and paints them far
to near.
"""

from __future__ import annotations

import cv2
import numpy as np

from cpsl_tf.benchmark.canvas import (
    BICYCLE,
    BUS,
    CAR,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    SIGN,
    TRAIN,
    TRUCK,
    VEGETATION,
    Camera,
    Canvas,
    quad_vertical_x,
    quad_vertical_z,
)

CAR_COLOURS = ((190, 30, 30), (30, 60, 150), (225, 225, 225), (35, 35, 38), (160, 160, 165),
               (40, 110, 60), (210, 170, 40), (110, 70, 40))
BUS_COLOURS = ((200, 60, 40), (235, 195, 40), (60, 120, 200), (230, 230, 230))
CLOTHES = ((40, 40, 60), (150, 30, 30), (30, 60, 130), (200, 200, 190), (90, 70, 50), (60, 100, 60),
           (30, 30, 30), (190, 150, 40))
SKIN = ((230, 190, 160), (180, 130, 100), (110, 75, 55))
SIGN_COLOURS = ((30, 80, 190), (200, 35, 35), (230, 190, 30), (240, 240, 240))
GLASS = (45, 60, 75)
TYRE = (25, 25, 25)


def draw_tree(canvas: Canvas, cam: Camera, x: float, z: float, scale: float) -> None:
    trunk_h, radius = canvas.rng.uniform(1.8, 3.0) * scale, canvas.rng.uniform(1.3, 2.8) * scale
    canvas.polygons([quad_vertical_z(cam, x - 0.15, x + 0.15, 0.0, trunk_h + radius * 0.5, z)], VEGETATION,
                    canvas.colour((90, 65, 40), 0.5))
    (u,), (v,) = cam.project([x], [trunk_h + radius * 0.9], [z])
    s = cam.focal / z
    canvas.ellipse((u, v), (radius * s, radius * 1.1 * s), VEGETATION, canvas.colour((60, 120, 40)))


def draw_pole(canvas: Canvas, cam: Camera, x: float, z: float, side: int, scale: float) -> None:
    """A pole carrying a traffic light (possibly on an arm over the road) and/or a sign."""
    rng = canvas.rng
    height = rng.uniform(4.0, 7.0)
    canvas.polygons([quad_vertical_z(cam, x - 0.12, x + 0.12, 0.0, height, z)], POLE,
                    canvas.colour((130, 130, 135)))
    kind = rng.random()
    if kind < 0.5:  # traffic light, enlarged so that it stays learnable at 96x192
        box_w, box_h = 0.55 * scale, 1.3 * scale
        if rng.random() < 0.5:
            arm = rng.uniform(2.0, 4.5)
            x_light = x - side * arm
            arm_quad = quad_vertical_z(cam, min(x, x_light), max(x, x_light), height - 0.2, height, z)
            canvas.polygons([arm_quad], POLE, canvas.colour((130, 130, 135)))
            top = height - 0.1
        else:
            x_light, top = x - side * (0.12 + box_w / 2), height - rng.uniform(0.0, 1.5)
        box = quad_vertical_z(cam, x_light - box_w / 2, x_light + box_w / 2, top - box_h, top, z - 0.1)
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
            plate = quad_vertical_z(cam, x_sign - size / 2, x_sign + size / 2, y, y + size, z - 0.1)
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
        faces.append(quad_vertical_x(cam, x0, 0.0, h, z, z1))
        shades.append(0.8)
    elif x1 < 0:
        faces.append(quad_vertical_x(cam, x1, 0.0, h, z, z1))
        shades.append(0.8)
    if h < cam.camera_height:
        faces.append(cam.points([(x0, h, z), (x1, h, z), (x1, h, z1), (x0, h, z1)]))
        shades.append(1.1)
    for face, shade in zip(faces, shades):
        canvas.polygons([face], label, tuple(int(c) for c in np.clip(colour * shade, 0, 255)))
    glass = canvas.colour(GLASS, 0.5)
    if x0 > 0 or x1 < 0:
        xs = x0 if x0 > 0 else x1
        canvas.polygons([quad_vertical_x(cam, xs, g0 * h, g1 * h, z + 0.3, z1 - 0.3)], label, glass)
        wheel_r = 0.35 * scale * (1.4 if label != CAR else 1.0)
        for zw in (z + 0.8, z1 - 0.9):
            (u,), (v,) = cam.project([xs], [wheel_r], [zw])
            s = cam.focal / zw
            canvas.ellipse((u, v), (wheel_r * s * abs(xs) / zw, wheel_r * s), label, TYRE)
    canvas.polygons([quad_vertical_z(cam, x0, x1, 0.15, h, z)], label, tuple(int(c) for c in colour))
    canvas.polygons([quad_vertical_z(cam, x0 + 0.1 * w, x1 - 0.1 * w, g0 * h, g1 * h, z)], label, glass)
    if label == CAR:
        lights = [quad_vertical_z(cam, xa, xa + 0.25, 0.45 * h, 0.55 * h, z) for xa in (x0 + 0.05, x1 - 0.3)]
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
        legs = [quad_vertical_z(cam, x + dx - 0.09 * s, x + dx + 0.09 * s, 0.0, hip, z)
                for dx in (-0.1 * s, 0.1 * s)]
    canvas.polygons(legs, label, leg_colour)
    shoulder = hip + 0.55 * s
    canvas.polygons([quad_vertical_z(cam, x - 0.24 * s, x + 0.24 * s, hip - 0.05, shoulder, z),
                     quad_vertical_z(cam, x - 0.3 * s, x - 0.22 * s, hip, shoulder, z),
                     quad_vertical_z(cam, x + 0.22 * s, x + 0.3 * s, hip, shoulder, z)], label, top_colour)
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
        wheel = quad_vertical_z(cam, x - half * scale, x + half * scale, 0.0, 2 * wheel_r, z)
        canvas.polygons([wheel], label, TYRE)
        bar = 0.3 if label == BICYCLE else 0.4
        canvas.polygons([quad_vertical_z(cam, x - bar * scale, x + bar * scale, 2 * wheel_r + 0.1,
                                          2 * wheel_r + 0.25, z + 0.1)], label, frame)
        if label == MOTORCYCLE:
            body = quad_vertical_z(cam, x - 0.3 * scale, x + 0.3 * scale, wheel_r, wheel_r * 2.4, z)
            canvas.polygons([body], label, canvas.colour((60, 60, 65), 1.0))
        seat_x = x
    if ridden:
        _draw_body(canvas, cam, RIDER, seat_x, z - 0.05, rng.uniform(1.6, 1.85) * scale + 0.1, seated=True)

