"""Class distributions for class-balanced sampling and distribution alignment (paper Eq. 8, 11).

Eq. 10, the starting distribution over the whole target set, is counted once, while the pseudo labels are
written: ``cpsl_tf.data.pseudo_store.class_distribution``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["class_counts", "image_class_distribution", "momentum_update"]


def class_counts(labels, num_classes: int):
    """Pixel counts per class over the trailing axes: labels (B, ...) -> (B, K) float32.

    Labels outside [0, K) (the ignore index 255, the official 250) are not counted.
    """
    labels = tf.cast(labels, tf.int32)
    flat = tf.reshape(labels, [tf.shape(labels)[0], -1])
    one_hot = tf.one_hot(flat, num_classes, dtype=tf.float32)  # out-of-range labels give all-zero rows
    return tf.reduce_sum(one_hot, axis=1)


def image_class_distribution(labels, num_classes: int):
    """delta_n^(c): the share of each class among an image's labelled pixels (Eq. 8), (B, ...) -> (B, K).

    The paper divides by H x W; ignored pixels have no class, so here the shares are over the pixels that
    have one and sum to 1 (all zeros for an image without any).
    """
    counts = class_counts(labels, num_classes)
    return tf.math.divide_no_nan(counts, tf.reduce_sum(counts, axis=1, keepdims=True))


def momentum_update(delta_pseudo, image_distributions, alpha: float):
    """delta_pseudo|_k = alpha * delta_pseudo|_{k-1} + (1 - alpha) * delta_n (Eq. 11), once per image.

    image_distributions: (B, K) from Eq. 8, applied in order n = 0..B-1 (closed form of B updates).
    Images without labelled pixels (all-zero rows) are skipped.
    """
    delta_pseudo = tf.cast(delta_pseudo, tf.float32)
    image_distributions = tf.cast(image_distributions, tf.float32)
    has_labels = tf.reduce_sum(image_distributions, axis=1) > 0
    steps = tf.cast(has_labels, tf.float32)
    # weight of image n: (1 - alpha) * alpha^(number of labelled images after n)
    later = tf.reduce_sum(steps) - tf.cumsum(steps)
    weights = steps * (1.0 - alpha) * tf.pow(tf.cast(alpha, tf.float32), later)
    decay = tf.pow(tf.cast(alpha, tf.float32), tf.reduce_sum(steps))
    return decay * delta_pseudo + tf.reduce_sum(weights[:, tf.newaxis] * image_distributions, axis=0)
