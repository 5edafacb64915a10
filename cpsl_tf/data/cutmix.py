"""CutMix of a source box into the target crop (official preset, ``docs/official-code.md`` section 8.2).

``rand_bbox`` of the official code (models/utils.py:95-130): area fraction 0.5, height fraction
exp(U ln 0.5) in [0.5, 1], width fraction 0.5 / height fraction, sizes rounded, uniform position inside the
image. Boxes are int32 [y1, x1, y2, x2] in pixels of the crop (half-open). The official code pastes source
labels (void included) into the pseudo-label map at crop resolution and then downsamples with the legacy
nearest rule (section 7.6); ``paste_box`` with ``scale`` does the same on a map at crop / scale.
"""

from __future__ import annotations

import math

import tensorflow as tf

from cpsl_tf.resize import nearest_indices


def cutmix_box(seed, height: int, width: int, area: float = 0.5):
    """Official ``rand_bbox((height, width))`` from a stateless seed: int32 [y1, x1, y2, x2]."""
    shape_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    y_prop = tf.exp(tf.random.stateless_uniform([], shape_seed) * math.log(area))
    x_prop = area / y_prop
    box_h = tf.round(y_prop * height)
    box_w = tf.round(x_prop * width)
    y1 = tf.round((height - box_h) * tf.random.stateless_uniform([], y_seed))
    x1 = tf.round((width - box_w) * tf.random.stateless_uniform([], x_seed))
    return tf.cast(tf.stack([y1, x1, y1 + box_h, x1 + box_w]), tf.int32)


def box_mask(box, height, width, scale: int = 1):
    """(..., height, width) bool mask of ``box`` (..., 4) on a map at crop / ``scale``.

    With ``scale`` > 1 a map position is inside when the crop pixel the legacy nearest rule samples for it
    (floor(d * crop / map) = d * scale) is inside, as the official paste-then-downsample.
    """
    box = tf.convert_to_tensor(box, tf.int32)
    rows = tf.cast(nearest_indices(height * scale, height), tf.int32)
    cols = tf.cast(nearest_indices(width * scale, width), tf.int32)
    y1, x1, y2, x2 = (box[..., i, tf.newaxis, tf.newaxis] for i in range(4))
    inside_rows = (rows[:, tf.newaxis] >= y1) & (rows[:, tf.newaxis] < y2)
    inside_cols = (cols[tf.newaxis, :] >= x1) & (cols[tf.newaxis, :] < x2)
    return inside_rows & inside_cols


def paste_box(target, source, box, scale: int = 1):
    """Paste ``source`` into ``target`` inside ``box``; (H, W[, C]) or batched (B, H, W[, C]) with (B, 4).

    Works for images and label maps of any dtype; ``scale`` as in ``box_mask``.
    """
    target = tf.convert_to_tensor(target)
    batched = tf.convert_to_tensor(box).shape.rank == 2
    spatial_axis = 1 if batched else 0
    shape = tf.shape(target)
    mask = box_mask(box, shape[spatial_axis], shape[spatial_axis + 1], scale)
    if target.shape.rank == mask.shape.rank + 1:
        mask = mask[..., tf.newaxis]
    return tf.where(mask, tf.cast(source, target.dtype), target)


def cutmix(seed, target, source, probability: float = 0.5):
    """With ``probability``, paste a ``cutmix_box`` of ``source`` into ``target`` (H, W, C).

    Returns (mixed, box, applied); ``box`` is all zeros (empty) when not applied.
    """
    box_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    height, width = int(target.shape[0]), int(target.shape[1])
    applied = tf.random.stateless_uniform([], apply_seed) < probability
    box = tf.where(applied, cutmix_box(box_seed, height, width), tf.zeros([4], tf.int32))
    return paste_box(target, source, box), box, applied
