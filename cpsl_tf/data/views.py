"""The weak view: resize to the base size, random scale, random crop, horizontal flip; and ``full_to_weak``,
the official ``full2weak`` that brings a map of the un-augmented full image into the weak crop's frame.

Official code (``docs/official-code.md`` section 9, data/__init__.py:55-58): ``RandomSized`` ->
``RandomCrop`` -> ``RandomHorizontallyFlip``; image bilinear, labels nearest, the soft pseudo-label map
P_ST bilinear with align_corners (section 7.1) through the same geometry.

Geometry. The image of size (H0, W0) is conceptually resized to ``base_size`` and then to the scaled size
(h, w) = floor(s * base_size), s ~ U(scale_range); both resizes are align-corners bilinear, so their
composition is the single align-corners map scaled pixel d <-> original d * (H0 - 1) / (h - 1). Only the
crop of that scaled image is ever computed (``tf.image.crop_and_resize`` samples exactly those
positions), so a 1.5x scaled 2048x1024 image is never materialised. Images, P_ST and the full-image
teacher (``pipeline``) therefore share one align-corners frame, the frame that ``full2weak``
(docs/official-code.md section 7.2) assumes. Labels follow PyTorch's legacy nearest rule (``cpsl_tf.resize.nearest_indices``).

When the scaled image is smaller than the crop it is placed at a uniform position inside the crop; the
rest is padding: image 0, label 255 (ignore), P_ST 0.

Weak parameters (all in pixels of the scaled image, as the official ``weak_params``):
``scaled_size`` int32 [h, w]; ``crop_box`` int32 [y1, x1, y2, x2] (y2 - y1 = crop height; y1 < 0 when the
crop is padded); ``flip`` int32 0/1.

``full_to_weak`` (notes section 7.2) is the official code's own chain, not the single align-corners map of
``weak_soft_map``: the full-image map is resized to full / stride, then per image to floor(scaled / stride),
and the crop is cut at floor(crop_box / stride). It is checked against the official fixture
(tests/fixtures/official/rectify_thr0.00.npz).
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import nearest_indices, resize_bilinear


def sample_weak_params(seed, base_size, crop_size, scale_range, hflip: bool = True) -> dict:
    """Draw scale, crop position and flip from the stateless ``seed`` (shape [2] int)."""
    scale_seed, y_seed, x_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    scale = tf.random.stateless_uniform([], scale_seed, scale_range[0], scale_range[1])
    base = tf.constant(base_size, tf.float32)
    scaled = tf.maximum(tf.cast(tf.floor(scale * base), tf.int32), 2)
    crop = tf.constant(crop_size, tf.int32)

    def offset(length, crop_length, s):
        # Uniform over valid crop positions; when the image is smaller, uniform placement inside the crop.
        low = tf.minimum(0, length - crop_length)
        high = tf.maximum(0, length - crop_length)
        return tf.random.stateless_uniform([], s, low, high + 1, dtype=tf.int32)

    y1 = offset(scaled[0], crop[0], y_seed)
    x1 = offset(scaled[1], crop[1], x_seed)
    if hflip:
        flip = tf.cast(tf.random.stateless_uniform([], flip_seed) < 0.5, tf.int32)
    else:
        flip = tf.constant(0, tf.int32)
    return {
        "scaled_size": scaled,
        "crop_box": tf.stack([y1, x1, y1 + crop[0], x1 + crop[1]]),
        "flip": flip,
    }


def _maybe_flip(x, flip):
    return tf.cond(flip > 0, lambda: tf.reverse(x, axis=[1]), lambda: x)


def _axis_positions(start, crop_length, out_length, scaled_length):
    """Scaled-image positions sampled by ``out_length`` align-corners points over the crop, and inside."""
    step = tf.cast(crop_length - 1, tf.float32) / tf.cast(tf.maximum(out_length - 1, 1), tf.float32)
    first = tf.cast(start, tf.float32)
    last = first + step * tf.cast(out_length - 1, tf.float32)
    positions = first + step * tf.range(tf.cast(out_length, tf.float32))
    inside = (positions > -1e-3) & (positions < tf.cast(scaled_length - 1, tf.float32) + 1e-3)
    return first, last, inside


def _bilinear_crop(x, params, out_size):
    """Align-corners bilinear sample of the crop of the scaled ``x`` (H, W, C) at ``out_size``.

    The source is edge-padded by one pixel so that rounding at the border never falls into
    ``crop_and_resize``'s extrapolation; positions outside the scaled image are set to 0 explicitly.
    """
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    in_h, in_w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scaled, box = params["scaled_size"], params["crop_box"]
    crop_h, crop_w = box[2] - box[0], box[3] - box[1]
    y_first, y_last, rows_inside = _axis_positions(box[0], crop_h, out_size[0], scaled[0])
    x_first, x_last, cols_inside = _axis_positions(box[1], crop_w, out_size[1], scaled[1])
    to_y = (in_h - 1.0) / tf.cast(scaled[0] - 1, tf.float32)
    to_x = (in_w - 1.0) / tf.cast(scaled[1] - 1, tf.float32)
    # Original-image coordinates, shifted by the pad and normalised over the padded size.
    normalised = tf.stack([(y_first * to_y + 1.0) / (in_h + 1.0), (x_first * to_x + 1.0) / (in_w + 1.0),
                           (y_last * to_y + 1.0) / (in_h + 1.0), (x_last * to_x + 1.0) / (in_w + 1.0)])
    padded = tf.pad(x, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    out = tf.image.crop_and_resize(padded[tf.newaxis], normalised[tf.newaxis], [0], out_size,
                                   method="bilinear")[0]
    inside = rows_inside[:, tf.newaxis, tf.newaxis] & cols_inside[tf.newaxis, :, tf.newaxis]
    return _maybe_flip(tf.where(inside, out, 0.0), params["flip"])


def weak_image(image, params, crop_size):
    """Weak crop of an (H, W, 3) uint8 image as float32 in [0, 1]."""
    return _bilinear_crop(image, params, crop_size) / 255.0


def weak_soft_map(soft, params, crop_size, stride: int = 1):
    """P_ST (h, w, C) float, covering the full image, into the crop frame at crop_size / stride.

    Align-corners bilinear, as the official chain full -> 1024x2048 -> RandomSized -> crop (-> x0.25).
    """
    out_size = [crop_size[0] // stride, crop_size[1] // stride]
    return _bilinear_crop(soft, params, out_size)


def _full_to_weak_one(full_map, params, crop_size, stride: int):
    scaled = params["scaled_size"] // stride
    resized = resize_bilinear(full_map, scaled)
    out_h, out_w = crop_size[0] // stride, crop_size[1] // stride
    top = tf.math.floordiv(params["crop_box"][0], stride)
    left = tf.math.floordiv(params["crop_box"][1], stride)
    # A crop that reaches past a scaled image smaller than the crop sees zeros there, as P_ST's padding.
    pad_top, pad_left = tf.maximum(-top, 0), tf.maximum(-left, 0)
    padded = tf.pad(resized, [[pad_top, tf.maximum(top + out_h - scaled[0], 0)],
                              [pad_left, tf.maximum(left + out_w - scaled[1], 0)], [0, 0]])
    crop = tf.slice(padded, [top + pad_top, left + pad_left, 0], [out_h, out_w, -1])
    return _maybe_flip(crop, params["flip"])


def full_to_weak(full_maps, weak_params, full_size, crop_size, stride: int):
    """Maps of the un-augmented full images into the frames of their weak crops at crop / stride (official
    ``full2weak``, notes section 7.2; see the module docstring).

    Args:
        full_maps: (B, h, w, C) float maps of the full images at any resolution (e.g. the network's).
        weak_params: the batch's weak parameters (``scaled_size`` (B, 2), ``crop_box`` (B, 4), ``flip`` (B,)),
            in pixels of the scaled images.
        full_size: (H, W) of the full image the scaled sizes refer to.
        crop_size: (crop_h, crop_w) of the weak crop.
        stride: the output map's stride in crop pixels (4 in the official code).

    Returns:
        (B, crop_h / stride, crop_w / stride, C) maps in the weak crops' frames.
    """
    full_maps = resize_bilinear(full_maps, [full_size[0] // stride, full_size[1] // stride])

    def one(args):
        full_map, scaled, box, flip = args
        return _full_to_weak_one(full_map, {"scaled_size": scaled, "crop_box": box, "flip": flip},
                                 crop_size, stride)

    params = (tf.cast(weak_params["scaled_size"], tf.int32), tf.cast(weak_params["crop_box"], tf.int32),
              tf.cast(weak_params["flip"], tf.int32))
    return tf.map_fn(one, (full_maps, *params), fn_output_signature=tf.TensorSpec(
        [crop_size[0] // stride, crop_size[1] // stride, full_maps.shape[-1]], full_maps.dtype))


def weak_label(label, params, crop_size):
    """Weak crop of an (H, W) uint8 label map; nearest (PyTorch legacy rule), padding 255."""
    label = tf.convert_to_tensor(label)
    shape = tf.shape(label)
    y1, x1 = params["crop_box"][0], params["crop_box"][1]

    def indices(in_size, scaled, start, length):
        table = tf.cast(nearest_indices(in_size, scaled), tf.int32)
        position = start + tf.range(length)
        inside = (position >= 0) & (position < scaled)
        return tf.gather(table, tf.clip_by_value(position, 0, scaled - 1)), inside

    rows, rows_inside = indices(shape[0], params["scaled_size"][0], y1, crop_size[0])
    cols, cols_inside = indices(shape[1], params["scaled_size"][1], x1, crop_size[1])
    out = tf.gather(tf.gather(label, rows, axis=0), cols, axis=1)
    inside = rows_inside[:, tf.newaxis] & cols_inside[tf.newaxis, :]
    out = tf.where(inside, out, tf.constant(IGNORE_INDEX, label.dtype))
    return _maybe_flip(out[..., tf.newaxis], params["flip"])[..., 0]


def weak_view(seed, image, label=None, soft=None, *, base_size, crop_size, scale_range, hflip=True,
              soft_stride: int = 4) -> dict:
    """Weak view of one sample: ``image`` (and ``label``, ``soft`` P_ST) through one random geometry.

    Returns a dict with ``image`` float32 (crop, 3) in [0, 1], ``label`` uint8 (crop) if given,
    ``soft`` float32 (crop / soft_stride, C) if given, and ``params`` (see the module docstring).
    """
    params = sample_weak_params(seed, base_size, crop_size, scale_range, hflip)
    out = {"image": weak_image(image, params, crop_size), "params": params}
    out["image"].set_shape([crop_size[0], crop_size[1], 3])
    if label is not None:
        out["label"] = weak_label(label, params, crop_size)
        out["label"].set_shape(crop_size)
    if soft is not None:
        out["soft"] = weak_soft_map(soft, params, crop_size, soft_stride)
    return out
