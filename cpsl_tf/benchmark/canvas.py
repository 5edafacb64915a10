"""Drawing primitives of the generated benchmark: the pinhole camera and the canvas.

A pinhole camera looks along a straight street from ``camera_height`` metres above the ground plane:
a world point (x right, y up, z forward) lands at ``u = cx + f x / z``, ``v = horizon + f (h - y) / z``,
so an object's size falls as 1 / depth. Every element is a polygon (or ellipse) drawn with the same
rasteriser into the colour canvas and the label map, so the labels are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Cityscapes labelIds (see cpsl_tf.labels.CITYSCAPES_IDS_19); 0 is void.
VOID, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 0, 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, RIDER = 19, 20, 21, 22, 23, 24, 25
CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 26, 27, 28, 31, 32, 33

_SHIFT = 4  # fixed-point bits of the polygon coordinates handed to OpenCV
_ONE = 1 << _SHIFT


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


def quad_ground(cam: Camera, x0, x1, z0, z1) -> np.ndarray:
    return cam.points([(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)])


def quad_vertical_x(cam: Camera, x, y0, y1, z0, z1) -> np.ndarray:
    """A vertical rectangle in the plane x = const (a facade, a vehicle side)."""
    return cam.points([(x, y0, z0), (x, y0, z1), (x, y1, z1), (x, y1, z0)])


def quad_vertical_z(cam: Camera, x0, x1, y0, y1, z) -> np.ndarray:
    """A vertical rectangle facing the camera (plane z = const)."""
    return cam.points([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)])


