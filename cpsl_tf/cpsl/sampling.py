"""Pixel sampling for the memory bank: class-balanced (paper Eq. 8-9) and uniform (official, w/o CB).

Both return, per image, M distinct raster indices into the H*W positions, with a fixed output size M so
they run inside a graph. Randomness is stateless: pass a (2,) int seed, e.g. from
``tf.random.Generator.make_seeds(1)[:, 0]`` in the train step.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["class_quotas", "class_balanced_sample_indices", "uniform_sample_indices", "gather_pixels"]


def class_quotas(labels, num_samples: int, num_classes: int):
    """M_c = floor(M * delta_n^(c)) with delta_n^(c) = count_c / (H*W) (Eq. 8-9); labels (B, P) -> (B, K).

    Labels outside [0, K) (ignored pixels) count in H*W but have no quota.
    """
    labels = tf.cast(labels, tf.int32)
    counts = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.int32), axis=1)
    num_pixels = tf.shape(labels)[1]
    return (num_samples * counts) // num_pixels


def class_balanced_sample_indices(labels, num_samples: int, num_classes: int, seed):
    """Class-balanced sampling (Eq. 8-9): M_c pixels of each class c uniformly at random within the class,
    the remaining M - sum_c M_c drawn uniformly from the pixels not chosen yet.

    Args:
        labels: (B, P) int rectified labels of each image, flattened (P = H*W >= M).
        num_samples: M.
        num_classes: K.
        seed: (2,) int stateless seed.

    Returns:
        (B, M) int32 distinct indices into the P positions; the quota pixels come first.
    """
    labels = tf.cast(labels, tf.int32)
    shape = tf.shape(labels)
    keys = tf.random.stateless_uniform(shape, seed)  # in [0, 1)
    # Pixels without a class go to an extra bucket K that has no quota.
    bucket = tf.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    order = tf.argsort(tf.cast(bucket, tf.float32) * 2.0 + keys, axis=1, stable=True)
    sorted_bucket = tf.gather(bucket, order, batch_dims=1)
    counts = tf.reduce_sum(tf.one_hot(bucket, num_classes + 1, dtype=tf.int32), axis=1)
    bucket_start = tf.cumsum(counts, axis=1, exclusive=True)
    rank_in_bucket = tf.range(shape[1])[tf.newaxis] - tf.gather(bucket_start, sorted_bucket, batch_dims=1)
    quotas = tf.pad(class_quotas(labels, num_samples, num_classes), [[0, 0], [0, 1]])
    chosen_sorted = rank_in_bucket < tf.gather(quotas, sorted_bucket, batch_dims=1)
    # Back to raster order; quota pixels get priority above every other pixel, the rest are random.
    chosen = tf.scatter_nd(tf.stack([tf.repeat(tf.range(shape[0]), shape[1]), tf.reshape(order, [-1])], 1),
                           tf.reshape(chosen_sorted, [-1]), shape)
    priority = tf.where(chosen, 2.0 - keys, keys)
    return tf.math.top_k(priority, k=num_samples, sorted=True).indices


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
