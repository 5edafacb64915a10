"""Prediction outputs: class-map PNGs (train ids or Cityscapes label ids), colour overlays, legend."""

from __future__ import annotations

import cv2
import numpy as np

from cpsl_tf.labels import colorize, palette, train_ids_to_label_ids


def class_map_png(class_map: np.ndarray, num_classes: int, label_ids: bool = False) -> np.ndarray:
    """uint8 PNG content: train ids, or Cityscapes label ids for submission."""
    class_map = np.asarray(class_map)
    return (train_ids_to_label_ids(class_map, num_classes) if label_ids else class_map).astype(np.uint8)


def overlay(rgb: np.ndarray, class_map: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised class map over the image (``alpha`` = weight of the colours)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    colours = colorize(class_map, num_classes).astype(np.float32)
    return np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * colours, 0, 255).astype(np.uint8)


def legend(class_names, height: int, present=None) -> np.ndarray:
    """A (height, 180, 3) RGB strip naming the classes (only ``present`` ones when given)."""
    colours = palette(len(class_names))
    indices = [i for i in range(len(class_names)) if present is None or i in present]
    strip = np.full((height, 180, 3), 255, np.uint8)
    row = max(12, min(22, height // max(1, len(indices))))
    for slot, index in enumerate(indices):
        top = slot * row
        if top + row > height:
            break
        strip[top + 2:top + row - 2, 4:24] = colours[index]
        cv2.putText(strip, class_names[index], (30, top + row - 5), cv2.FONT_HERSHEY_SIMPLEX,
                    row / 40, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def compose(rgb, class_map, class_names, alpha: float = 0.5, side_by_side: bool = False,
            with_legend: bool = True) -> np.ndarray:
    """The visualisation written per frame: overlay (optionally beside the input) plus the legend."""
    num_classes = len(class_names)
    panels = [rgb] if side_by_side else []
    panels.append(overlay(rgb, class_map, num_classes, alpha))
    if with_legend:
        panels.append(legend(class_names, rgb.shape[0], set(np.unique(class_map).tolist())))
    return np.concatenate(panels, axis=1)
