"""The strong view of the target crop, with replayable geometry.

Official ``RandAugmentMC(n=2, m=10, jitter=0.4)`` (``docs/official-code.md`` section 9): hflip p 0.5,
Gaussian blur radius 1 p 0.5, colour jitter 0.4 p 0.5, two ops drawn with replacement from the FixMatch
pool, each with magnitude v in {1..9} and applied with p 0.5, then an always-on Cutout of side
min(H, W) // 3. Magnitudes: Brightness/Color/Contrast/Sharpness factor 0.09 v + 0.05; Posterize
floor(0.4 v) + 4 bits; Solarize threshold 256 - floor(25.6 v); Rotate +-floor(3 v) degrees; Shear +-0.03 v;
Translate +-floor(0.03 v * W or H) pixels. Photometric noise (not in the official code) is an addition
of this port, off when ``noise_prob`` is 0.

Differences from the official code, by design:

* All geometry (flip, shear, translate, rotate) is composed into ONE affine map per sample and the image
  is resampled once (bilinear, gray fill 127). Photometric ops therefore act before the geometry, so the
  gray fill stays 127 where the official code would brighten/jitter it.
* The cutout box is [x0, x1) x [y0, y1) (PIL's rectangle also fills column x1 and row y1); the replay of
  the official code uses the half-open box too.
* Colour jitter applies brightness, contrast, saturation, hue in this fixed order (torchvision permutes).
* Randomness is stateless (one seed per element), so the pipeline is deterministic for a seed. Keras'
  random augmentation layers draw from a stateful SeedGenerator, which is not per-element reproducible
  under a parallel ``map``; only the deterministic Keras layers (AutoContrast, Equalization) and
  ``keras.ops.image.affine_transform`` are used.

Parameters returned with the image (a dict of fixed-size float32 tensors):

* ``matrix`` (6,): the affine map from strong-frame to crop-frame positions, in normalised continuous
  coordinates (u, v) = (x / W, y / H), pixel i covering [i, i + 1): [a0, a1, a2, b0, b1, b2] with
  u_in = a0 u + a1 v + a2, v_in = b0 u + b1 v + b2. Valid at any resolution of the crop.
* ``cutout`` (4,): the cutout box in the strong frame, normalised [v0, u0, v1, u1] (empty when off).
* ``official`` (10,): the official record [Hflip, ShearX, ShearY, TranslateX, TranslateY, Rotate,
  Cutout x0, y0, x1, y1] (pixels of the crop, degrees; 1e4 = op off; a repeated op keeps its last value).
* ``size`` (2,): the crop size [H, W] in pixels.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

OFF = 1e4
GRAY = 127.0
# Indices into the ``official`` record.
HFLIP, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, CUTOUT = 0, 1, 2, 3, 4, 5, 6
OFFICIAL_RECORD_SIZE = 10
POOL = ("autocontrast", "brightness", "color", "contrast", "equalize", "identity", "posterize", "rotate",
        "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y")


@dataclasses.dataclass(frozen=True)
class StrongAugment:
    """Settings of the strong view; the defaults are the official ``RandAugmentMC(2, 10, 0.4)``."""

    num_ops: int = 2
    max_magnitude: int = 9
    op_prob: float = 0.5
    flip_prob: float = 0.5
    blur_prob: float = 0.5
    blur_sigma: float = 1.0
    jitter_prob: float = 0.5
    jitter: float = 0.4
    cutout: bool = True
    noise_prob: float = 0.0
    noise_std: float = 0.02
    # The RandAugment pool (a subset of POOL), e.g. only the geometric ops for ablations and tests.
    pool: tuple[str, ...] = POOL


# --------------------------------------------------------------------------------------------------
# Photometric ops on float images with uint8 values in [0, 255] (PIL semantics, rounded like uint8)


def _to_uint8_values(x):
    return tf.round(tf.clip_by_value(x, 0.0, 255.0))


def _gray(x):
    """PIL's L conversion: 0.299 R + 0.587 G + 0.114 B."""
    return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _blend(degenerate, x, factor):
    return _to_uint8_values(degenerate + factor * (x - degenerate))


def brightness(x, factor):
    return _blend(tf.zeros_like(x), x, factor)


def color(x, factor):
    return _blend(_gray(x), x, factor)


def contrast(x, factor):
    return _blend(tf.fill(tf.shape(x), tf.floor(tf.reduce_mean(_gray(x)) + 0.5)), x, factor)


def _depthwise(x, kernel_2d):
    kernel = tf.tile(kernel_2d[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    return tf.nn.depthwise_conv2d(x[tf.newaxis], kernel, [1, 1, 1, 1], "VALID")[0]


def sharpness(x, factor):
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (borders unchanged)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = _to_uint8_values(_depthwise(x, kernel))
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth[..., :1]), [[1, 1], [1, 1], [0, 0]])
    degenerate = interior * degenerate + (1.0 - interior) * x
    return _blend(degenerate, x, factor)


def posterize(x, bits):
    step = tf.cast(2 ** (8 - bits), tf.float32)
    return tf.floor(x / step) * step


def solarize(x, threshold):
    return tf.where(x < tf.cast(threshold, tf.float32), x, 255.0 - x)


_KERAS_LAYERS: dict[str, keras.layers.Layer] = {}


def _keras_layer(name):
    if name not in _KERAS_LAYERS:
        make = {"autocontrast": keras.layers.AutoContrast, "equalize": keras.layers.Equalization}[name]
        _KERAS_LAYERS[name] = make(value_range=(0, 255))
    return _KERAS_LAYERS[name]


def autocontrast(x):
    return _to_uint8_values(_keras_layer("autocontrast")(x))


def equalize(x):
    return _to_uint8_values(_keras_layer("equalize")(x))


def gaussian_blur(x, sigma):
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    g = tf.exp(-0.5 * (taps / sigma) ** 2)
    g = g / tf.reduce_sum(g)
    padded = tf.pad(x, [[radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    out = _depthwise(_depthwise(padded, g[:, tf.newaxis]), g[tf.newaxis, :])
    return _to_uint8_values(out)


def color_jitter(x, seed, strength):
    """torchvision ColorJitter(b=c=s=strength, h=min(0.5, strength)), fixed order b, c, s, h."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    b, c, s = (tf.random.stateless_uniform([], seeds[i], 1 - strength, 1 + strength) for i in range(3))
    hue = min(0.5, strength)
    h = tf.random.stateless_uniform([], seeds[3], -hue, hue)
    x = contrast(brightness(x, b), c)
    x = color(x, s)
    return _to_uint8_values(tf.image.adjust_hue(x / 255.0, h) * 255.0)


# --------------------------------------------------------------------------------------------------
# Geometry: 3x3 output->input maps in continuous pixel coordinates of the crop (PIL conventions)


def _affine(a0, a1, a2, b0, b1, b2):
    return tf.stack([tf.stack([a0, a1, a2]), tf.stack([b0, b1, b2]), tf.constant([0.0, 0.0, 1.0])])


def _identity():
    return tf.eye(3)


def _rotation(degrees, height, width):
    """PIL ``rotate(degrees)``: counter-clockwise about the image centre."""
    a = degrees * math.pi / 180.0
    c, s = tf.cos(a), tf.sin(a)
    cx, cy = width / 2.0, height / 2.0
    return _affine(c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)


def _hflip(width):
    one, zero = tf.constant(1.0), tf.constant(0.0)
    return _affine(-one, zero, tf.constant(float(width)), zero, one, zero)


def matrix_for_size(matrix, height, width):
    """Normalised (B, 6) strong matrices -> (B, 8) transforms in pixel indices of an (height, width) map.

    The result is the ``transform`` of ``keras.ops.image.affine_transform`` (pixel centres at integers).
    """
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    a0, a1, a2, b0, b1, b2 = tf.unstack(matrix, axis=-1)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    # index x = w u - 0.5: conjugate the normalised map by that change of variables.
    c0 = a0
    c1 = a1 * w / h
    c2 = w * (a0 * 0.5 / w + a1 * 0.5 / h + a2) - 0.5
    d0 = b0 * h / w
    d1 = b1
    d2 = h * (b0 * 0.5 / w + b1 * 0.5 / h + b2) - 0.5
    zeros = tf.zeros_like(a0)
    return tf.stack([c0, c1, c2, d0, d1, d2, zeros, zeros], axis=-1)


# --------------------------------------------------------------------------------------------------
# The view


def _random_op(x, seed, height, width, options: StrongAugment):
    """One RandAugment op: returns (image, 3x3 pixel map, record slot or -1, recorded value)."""
    op_seed, v_seed, sign_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    unknown = sorted(set(options.pool) - set(POOL))
    if unknown or not options.pool:
        raise ValueError(f"StrongAugment.pool: unknown op(s) {unknown} or empty pool; known ops: {POOL}")
    op = tf.random.stateless_uniform([], op_seed, 0, len(options.pool), dtype=tf.int32)
    v = tf.cast(tf.random.stateless_uniform([], v_seed, 1, options.max_magnitude + 1, dtype=tf.int32),
                tf.float32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    factor = v * 0.09 + 0.05
    one, zero = tf.constant(1.0), tf.constant(0.0)
    none = tf.constant(-1)

    def photometric(fn):
        return lambda: (fn(x), _identity(), none, zero)

    shear = sign * v * 0.03
    rotate = sign * tf.floor(v * 3.0)
    tx = sign * tf.floor(v * 0.03 * width)
    ty = sign * tf.floor(v * 0.03 * height)
    branches = {
        "autocontrast": photometric(autocontrast),
        "brightness": photometric(lambda im: brightness(im, factor)),
        "color": photometric(lambda im: color(im, factor)),
        "contrast": photometric(lambda im: contrast(im, factor)),
        "equalize": photometric(equalize),
        "identity": photometric(lambda im: im),
        "posterize": photometric(lambda im: posterize(im, tf.cast(tf.floor(v * 0.4), tf.int32) + 4)),
        "rotate": lambda: (x, _rotation(rotate, height, width), tf.constant(ROTATE), rotate),
        "sharpness": photometric(lambda im: sharpness(im, factor)),
        "shear_x": lambda: (x, _affine(one, shear, zero, zero, one, zero), tf.constant(SHEAR_X), shear),
        "shear_y": lambda: (x, _affine(one, zero, zero, shear, one, zero), tf.constant(SHEAR_Y), shear),
        "solarize": photometric(lambda im: solarize(im, 256.0 - tf.floor(v * 25.6))),
        "translate_x": lambda: (x, _affine(one, zero, tx, zero, one, zero), tf.constant(TRANSLATE_X), tx),
        "translate_y": lambda: (x, _affine(one, zero, zero, zero, one, ty), tf.constant(TRANSLATE_Y), ty),
    }
    applied = tf.random.stateless_uniform([], apply_seed) < options.op_prob
    return tf.cond(applied, lambda: tf.switch_case(op, [branches[name] for name in options.pool]),
                   lambda: (x, _identity(), none, zero))


def cutout_box(seed, height, width):
    """Official ``CutoutAbs(min(W, H) // 3)``: pixel box (x0, y0, x1, y1), half-open."""
    side = float(min(height, width) // 3)
    cx = tf.random.stateless_uniform([], seed, 0.0, float(width))
    cy = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), 0.0,
                                     float(height))
    x0 = tf.floor(tf.maximum(0.0, cx - side / 2.0))
    y0 = tf.floor(tf.maximum(0.0, cy - side / 2.0))
    x1 = tf.floor(tf.minimum(float(width), x0 + side))
    y1 = tf.floor(tf.minimum(float(height), y0 + side))
    return tf.stack([x0, y0, x1, y1])


def photometric_noise(x, seed, std):
    """Gaussian sensor noise with a per-sample standard deviation in [0, std] (in [0, 1] units)."""
    std_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    sigma = tf.random.stateless_uniform([], std_seed, 0.0, std) * 255.0
    return _to_uint8_values(x + sigma * tf.random.stateless_normal(tf.shape(x), noise_seed))


def strong_view(image, seed, options: StrongAugment = StrongAugment()):
    """Strong view of a (H, W, 3) float image in [0, 1] with a static size; returns (image, params)."""
    height, width = int(image.shape[0]), int(image.shape[1])
    x = _to_uint8_values(tf.convert_to_tensor(image, tf.float32) * 255.0)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 7 + options.num_ops))
    draw = [tf.random.stateless_uniform([], s) for s in seeds[:4]]
    record = tf.concat([tf.fill([CUTOUT], OFF), tf.fill([4], OFF)], axis=0)

    flip = draw[0] < options.flip_prob
    record = tf.tensor_scatter_nd_update(record, [[HFLIP]], [tf.cast(flip, tf.float32)])
    matrix = tf.where(flip, _hflip(width), _identity())
    x = tf.cond(draw[1] < options.blur_prob, lambda: gaussian_blur(x, options.blur_sigma), lambda: x)
    x = tf.cond(draw[2] < options.jitter_prob, lambda: color_jitter(x, seeds[4], options.jitter), lambda: x)
    for i in range(options.num_ops):
        x, op_matrix, slot, value = _random_op(x, seeds[7 + i], height, width, options)
        matrix = matrix @ op_matrix
        record = tf.where(tf.range(OFFICIAL_RECORD_SIZE) == slot, value, record)  # slot -1: no change

    normalise = tf.constant([[1.0 / width, 0, 0], [0, 1.0 / height, 0], [0, 0, 1]])
    unnormalise = tf.constant([[float(width), 0, 0], [0, float(height), 0], [0, 0, 1]])
    matrix_norm = tf.reshape((normalise @ matrix @ unnormalise)[:2], [6])
    x = keras.ops.image.affine_transform(x, matrix_for_size(matrix_norm[tf.newaxis], height, width)[0],
                                         interpolation="bilinear", fill_mode="constant", fill_value=GRAY)
    x = _to_uint8_values(x)

    if options.cutout:
        box = cutout_box(seeds[5], height, width)
        record = tf.concat([record[:CUTOUT], box], axis=0)
        rows = tf.range(height, dtype=tf.float32)[:, tf.newaxis]
        cols = tf.range(width, dtype=tf.float32)[tf.newaxis, :]
        inside = (cols >= box[0]) & (cols < box[2]) & (rows >= box[1]) & (rows < box[3])
        x = tf.where(inside[..., tf.newaxis], GRAY, x)
        cutout = tf.stack([box[1] / height, box[0] / width, box[3] / height, box[2] / width])
    else:
        cutout = tf.zeros([4])
    if options.noise_prob > 0:
        x = tf.cond(draw[3] < options.noise_prob, lambda: photometric_noise(x, seeds[6], options.noise_std),
                    lambda: x)
    x = tf.reshape(x / 255.0, [height, width, 3])
    params = {"matrix": matrix_norm, "cutout": cutout, "official": record,
              "size": tf.constant([float(height), float(width)])}
    return x, params
