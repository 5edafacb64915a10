"""Pixel sampling for the memory bank: class-balanced (paper Eq. 8-9) and uniform (official, w/o CB).

Both return, per image, M distinct raster indices into the H*W positions, with a fixed output size M so
they run inside a graph. Randomness is stateless: pass a (2,) int seed (the train step folds the image's
index in the global batch into a seed of the run seed and the iteration).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["class_balanced_sample_indices", "uniform_sample_indices", "gather_pixels"]


def class_balanced_sample_indices(labels, num_samples: int, num_classes: int, seed):
    """Class-balanced sampling (Eq. 8-9): every class is sampled with the same proportion M / |labelled
    pixels|, so class c gets M_c = M * delta_n^(c) samples, uniformly at random within the class.

    M * delta_n^(c) is rarely an integer. Floor quotas with a uniform fill-up (the literal reading of Eq. 9)
    starve the thin classes at small M: a class under 1/M of the image gets quota 0 and then fewer samples
    than uniform sampling would give it (on the benchmark's 24x48 maps with M = 64: traffic light 0.26x its
    share). Here the rounding is systematic sampling: the pixels are ordered by class (randomly within a
    class) and M positions are taken at the spacing |labelled| / M from a random offset. Each class then
    gets floor(M_c) or ceil(M_c) samples, M_c on average, and M in total, all distinct.

    Pixels without a class (ignored, or outside [0, K)) are sampled only when fewer than M pixels have one.

    Args:
        labels: (B, P) int rectified labels of each image, flattened (P = H*W >= M).
        num_samples: M.
        num_classes: K.
        seed: (2,) int stateless seed.

    Returns:
        (B, M) int32 distinct indices into the P positions, grouped by class in class order.
    """
    labels = tf.cast(labels, tf.int32)
    shape = tf.shape(labels)
    key_seed, offset_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    keys = tf.random.stateless_uniform(shape, key_seed)  # in [0, 1)
    labelled = (labels >= 0) & (labels < num_classes)
    # Pixels without a class go to an extra bucket K, after every class.
    bucket = tf.where(labelled, labels, num_classes)
    order = tf.argsort(tf.cast(bucket, tf.float32) * 2.0 + keys, axis=1, stable=True)
    # float64: positions at a spacing just above 1 must not round onto one another.
    span = tf.maximum(tf.reduce_sum(tf.cast(labelled, tf.float64), axis=1, keepdims=True),
                      float(num_samples))  # (B, 1)
    offset = tf.random.stateless_uniform([shape[0], 1], offset_seed, dtype=tf.float64)
    grid = tf.range(num_samples, dtype=tf.float64)[tf.newaxis] + offset
    positions = tf.cast(tf.floor(grid * span / float(num_samples)), tf.int32)
    return tf.gather(order, tf.minimum(positions, shape[1] - 1), batch_dims=1)


def uniform_sample_indices(num_pixels, num_samples: int, seed, batch_size: int | None = None):
    """M distinct positions drawn uniformly at random (the official sampling, and the w/o CB ablation).

    With ``batch_size`` None: one draw (M,) to share across the batch, as the official code does; else
    (batch_size, M), an independent draw per image.
    """
    shape = [num_pixels] if batch_size is None else [batch_size, num_pixels]
    keys = tf.random.stateless_uniform(shape, seed)
    return tf.math.top_k(keys, k=num_samples, sorted=False).indices


def gather_pixels(maps, indices):
    """The sampled pixels of channels-last maps: maps (B, H, W, C), indices (B, M) raster -> (B, M, C)."""
    maps = tf.convert_to_tensor(maps)
    flat = tf.reshape(maps, [tf.shape(maps)[0], -1, maps.shape[-1]])
    return tf.gather(flat, tf.cast(indices, tf.int32), axis=1, batch_dims=1)
