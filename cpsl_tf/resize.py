"""The one definition of resizing used by training, evaluation, export and prediction.

Conventions (``docs/official-code.md`` section 15):

* ``resize_bilinear(x, size, align_corners=True)`` maps output pixel ``d`` to input coordinate
  ``d * (in - 1) / (out - 1)`` (PyTorch ``align_corners=True``, used everywhere by the official code and
  its checkpoints); it lowers to ONNX ``Resize`` with ``coordinate_transformation_mode=align_corners``.
  ``align_corners=False`` is the half-pixel rule of ``tf.image.resize`` / Keras.
* ``resize_nearest(x, size)`` is PyTorch's legacy nearest rule ``src = floor(d * in / out)`` (labels).

All functions take channels-last tensors, (H, W, C) or (B, H, W, C).
"""

from __future__ import annotations

import tensorflow as tf


def _batched(x):
    x = tf.convert_to_tensor(x)
    if x.shape.rank == 3:
        return x[tf.newaxis], True
    return x, False


def resize_bilinear(x, size, align_corners: bool = True):
    """Bilinear resize of a (B,)H,W,C float tensor to ``size`` = (height, width)."""
    x, squeeze = _batched(x)
    dtype = x.dtype
    if align_corners:
        # The op behind tf.compat.v1.image.resize_bilinear, called without that wrapper's deprecation warning.
        out = tf.raw_ops.ResizeBilinear(images=tf.cast(x, tf.float32), size=tf.cast(size, tf.int32),
                                        align_corners=True, half_pixel_centers=False)
    else:
        out = tf.image.resize(tf.cast(x, tf.float32), size, method="bilinear")
    out = tf.cast(out, dtype)
    return out[0] if squeeze else out


def nearest_indices(in_size, out_size):
    """Source indices of PyTorch's legacy nearest rule: floor(d * in / out)."""
    in_size = tf.cast(in_size, tf.int64)
    d = tf.range(tf.cast(out_size, tf.int64), dtype=tf.int64)
    return tf.minimum((d * in_size) // tf.cast(out_size, tf.int64), in_size - 1)


def resize_nearest(x, size):
    """Nearest resize of a (B,)H,W,C tensor of any dtype with PyTorch's legacy rule (for labels)."""
    x, squeeze = _batched(x)
    shape = tf.shape(x, out_type=tf.int64)
    rows = nearest_indices(shape[1], size[0])
    cols = nearest_indices(shape[2], size[1])
    out = tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)
    return out[0] if squeeze else out
