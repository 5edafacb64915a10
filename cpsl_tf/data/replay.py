"""Replay of the strong-view geometry on label or probability maps at any scale of the crop.

``replay_to_strong(maps, params)`` maps (B, h, w, C) maps that cover the weak crop (at crop size or any
fraction of it, e.g. 1/4) into the strong frame with the composed affine map of ``cpsl_tf.data.strong``:
nearest for integer maps (labels), bilinear for float maps (probabilities, logits, features). Positions
whose source falls outside the map, or that lie inside the cutout box, are invalid: the returned mask is
False there and the map holds ``fill`` (255 for labels, 0 for float maps).

Maps are taken to cover the crop in the pixel-area convention (pixel i of an h-row map covers rows
[i, i + 1) * H / h of the crop). Maps made with the align-corners or legacy-nearest resizes of
``cpsl_tf.resize`` differ from that by less than one map pixel at the borders.

``official_replay`` reproduces the official ``label_strong_T`` (``docs/official-code.md`` section 9)
instead, quirks included: a fixed op order (Hflip, ShearX, ShearY, TranslateX, TranslateY, Rotate, Cutout),
one nearest ``grid_sample`` per op, translations floor-divided by the scale, and the TranslateX offset
2 v / H instead of 2 v / W.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cpsl_tf.data.strong import (
    CUTOUT,
    HFLIP,
    OFF,
    ROTATE,
    SHEAR_X,
    SHEAR_Y,
    TRANSLATE_X,
    TRANSLATE_Y,
    matrix_for_size,
)
from cpsl_tf.labels import IGNORE_INDEX


def _cutout_mask(cutout, height, width):
    """(B, h, w) True inside the normalised cutout boxes [v0, u0, v1, u1] (pixel centres)."""
    v = (tf.range(height, dtype=tf.float32) + 0.5) / tf.cast(height, tf.float32)
    u = (tf.range(width, dtype=tf.float32) + 0.5) / tf.cast(width, tf.float32)
    v0, u0, v1, u1 = (cutout[:, i, tf.newaxis, tf.newaxis] for i in range(4))
    rows = (v[tf.newaxis, :, tf.newaxis] >= v0) & (v[tf.newaxis, :, tf.newaxis] < v1)
    cols = (u[tf.newaxis, tf.newaxis, :] >= u0) & (u[tf.newaxis, tf.newaxis, :] < u1)
    return rows & cols


def replay_to_strong(maps, params, fill=None, interpolation=None, official=False):
    """Replay the strong geometry of ``params`` on (B, h, w, C) ``maps``; returns (maps, valid (B, h, w)).

    ``interpolation`` defaults to "nearest" for integer maps and "bilinear" for float maps; ``fill`` to
    255 for integer maps and 0 otherwise. ``official=True`` uses ``official_replay``.
    """
    maps = tf.convert_to_tensor(maps)
    is_label = maps.dtype.is_integer or maps.dtype.is_bool
    if fill is None:
        fill = IGNORE_INDEX if is_label else 0.0
    if official:
        return official_replay(maps, params, padding=fill)
    interpolation = interpolation or ("nearest" if is_label else "bilinear")
    shape = tf.shape(maps)
    transform = matrix_for_size(params["matrix"], shape[1], shape[2])
    values = tf.cast(maps, tf.float32)
    # Edge replication for the values; validity from an all-ones map with zero fill under nearest rule.
    moved = keras.ops.image.affine_transform(values, transform, interpolation=interpolation,
                                             fill_mode="nearest")
    inside = keras.ops.image.affine_transform(tf.ones_like(values[..., :1]), transform,
                                              interpolation="nearest", fill_mode="constant", fill_value=0.0)
    valid = (inside[..., 0] > 0.5) & ~_cutout_mask(params["cutout"], shape[1], shape[2])
    moved = tf.where(valid[..., tf.newaxis], moved, tf.cast(fill, tf.float32))
    if is_label:
        moved = tf.round(moved)
    return tf.cast(moved, maps.dtype), valid


# --------------------------------------------------------------------------------------------------
# The official label_strong_T


def _torch_nearest_affine(values, inside, theta):
    """``grid_sample(affine_grid(theta), mode='nearest')`` (align_corners=False, zero padding).

    ``values`` (B, h, w, C) float, ``inside`` (B, h, w) float validity carried like the +1 trick of the
    official code; ``theta`` (B, 2, 3) in normalised [-1, 1] coordinates.
    """
    shape = tf.shape(values)
    h, w = shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    xs = (2.0 * tf.range(wf) + 1.0) / wf - 1.0
    ys = (2.0 * tf.range(hf) + 1.0) / hf - 1.0
    gy, gx = tf.meshgrid(ys, xs, indexing="ij")
    base = tf.stack([gx, gy, tf.ones_like(gx)], axis=-1)  # (h, w, 3)
    grid = tf.einsum("hwk,bjk->bhwj", base, theta)  # (B, h, w, 2): x, y
    ix = tf.round(((grid[..., 0] + 1.0) * wf - 1.0) / 2.0)  # round half to even, like nearbyint
    iy = tf.round(((grid[..., 1] + 1.0) * hf - 1.0) / 2.0)
    ok = (ix >= 0) & (ix <= wf - 1) & (iy >= 0) & (iy <= hf - 1)
    ixc = tf.cast(tf.clip_by_value(ix, 0, wf - 1), tf.int32)
    iyc = tf.cast(tf.clip_by_value(iy, 0, hf - 1), tf.int32)
    batch = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis, tf.newaxis], tf.shape(ixc))
    index = tf.stack([batch, iyc, ixc], axis=-1)
    okf = tf.cast(ok, tf.float32)
    return tf.gather_nd(values, index) * okf[..., tf.newaxis], tf.gather_nd(inside, index) * okf


def _official_theta(op, v, h, w):
    """``affine_sample``'s theta for one op, (B,) values -> (B, 2, 3)."""
    one, zero = tf.ones_like(v), tf.zeros_like(v)
    if op == ROTATE:
        a = v / 180.0 * 3.141592653589793
        rows = [[tf.cos(a), -tf.sin(a) * h / w, zero], [tf.sin(a) * w / h, tf.cos(a), zero]]
    elif op == SHEAR_X:
        rows = [[one, v * h / w, v * h / w], [zero, one, zero]]
    elif op == SHEAR_Y:
        rows = [[one, zero, zero], [v * w / h, one, v * w / h]]
    elif op == TRANSLATE_X:
        rows = [[one, zero, 2.0 * v / h], [zero, one, zero]]  # sic: / H (official bug)
    else:
        rows = [[one, zero, zero], [zero, one, 2.0 * v / h]]
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=1)


def official_replay(maps, params, padding=IGNORE_INDEX):
    """The official ``label_strong_T(maps, params, padding, scale)``; scale = crop height / map height.

    Returns (maps, valid); invalid positions (outside or in the cutout) hold ``padding`` in all channels.
    """
    maps = tf.convert_to_tensor(maps)
    record = tf.convert_to_tensor(params["official"], tf.float32)
    shape = tf.shape(maps)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    scale = tf.round(params["size"][:, 0] / h)
    values = tf.cast(maps, tf.float32)
    inside = tf.ones(shape[:3], tf.float32)

    flip = record[:, HFLIP] == 1.0
    values = tf.where(flip[:, None, None, None], tf.reverse(values, [2]), values)
    identity = tf.constant([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for op in (SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE):
        v = record[:, op]
        active = v != OFF
        if op in (TRANSLATE_X, TRANSLATE_Y):
            v = tf.math.floordiv(v, scale)
        theta = tf.where(active[:, None, None], _official_theta(op, tf.where(active, v, 0.0), h, w), identity)
        values, inside = _torch_nearest_affine(values, inside, theta)

    box = tf.math.floordiv(record[:, CUTOUT:CUTOUT + 4], scale[:, tf.newaxis])  # x0, y0, x1, y1
    rows = tf.range(h)[tf.newaxis, :, tf.newaxis]
    cols = tf.range(w)[tf.newaxis, tf.newaxis, :]
    cut = ((cols >= box[:, 0, None, None]) & (cols < box[:, 2, None, None])
           & (rows >= box[:, 1, None, None]) & (rows < box[:, 3, None, None])
           & (record[:, CUTOUT, None, None] != OFF))
    valid = (inside > 0.5) & ~cut
    values = tf.where(valid[..., tf.newaxis], values, tf.cast(padding, tf.float32))
    return tf.cast(values, maps.dtype), valid
