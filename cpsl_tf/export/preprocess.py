"""The one preprocessing definition shared by every prediction backend (Keras, ONNX Runtime, TensorRT).

An image is read as RGB uint8, scaled to float32 in [0, 1] and resized to the model's input size with the
project's align-corners bilinear resize (``cpsl_tf.resize``), the resize of the training views: the input
resize is the data's protocol, whatever ``model.align_corners`` says of the model's own upsampling.
Mean/std normalisation is *inside* the model and the exported graphs, so callers never apply it.
Class maps are brought back to the input's size with the PyTorch-legacy nearest rule.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cpsl_tf.resize import resize_bilinear, resize_nearest


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB; a missing or unreadable file is an error naming it."""
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: not a readable image file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width, 3) float32 in [0, 1] at the model's ``size``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    scaled = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    if tuple(rgb.shape[:2]) == tuple(size):
        return scaled
    return np.asarray(resize_bilinear(scaled, tuple(size), align_corners=True))


def batch_inputs(rgbs, size: tuple[int, int]) -> np.ndarray:
    """A list of RGB images -> (B, height, width, 3) float32 model input."""
    return np.stack([to_model_input(rgb, size) for rgb in rgbs])


def class_map_to_size(class_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (h, w) class map to ``size`` = (H, W) with the nearest rule (no new classes appear)."""
    class_map = np.asarray(class_map)
    if tuple(class_map.shape[:2]) == tuple(size):
        return class_map
    return np.asarray(resize_nearest(class_map[..., np.newaxis], tuple(size)))[..., 0]
