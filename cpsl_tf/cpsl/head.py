"""The self-labeling head f_SL and its momentum copy f'_SL: a cosine classifier without bias (Eq. 4)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cpsl_tf.cpsl.rectify import cosine_scores

SELF_LABELING_PREFIX = "self_labeling_head"


def random_unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """``count`` directions drawn uniformly on the unit sphere of R^dim, reproducible from ``seed``."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def initial_head_weights(prototypes, num_classes: int, dim: int, seed: int) -> np.ndarray:
    """W = W' = the L2-normalised prototypes of Eq. 7 (Algorithm 1 line 2; the official code normalises too).

    A class without a prototype (a zero row: the warm-up model never predicted it) gets a random unit vector
    instead. At the origin the cosine classifier has no direction and an unbounded gradient: a zero row
    jumps to a huge norm in the first step, and every such row takes the same direction. ``prototypes``
    None (the ``w/o Init`` ablation) gives random unit vectors for every class. The random rows come from
    ``seed`` (the run's seed), so the ablation's seeds draw different heads.
    """
    fallback = random_unit_vectors(num_classes, dim, seed)
    if prototypes is None:
        return fallback
    prototypes = np.asarray(prototypes, np.float64)
    if prototypes.shape != (num_classes, dim):
        raise ValueError(f"prototypes have shape {prototypes.shape}; the head needs ({num_classes}, {dim})")
    if not np.isfinite(prototypes).all():
        raise ValueError("prototypes contain NaN or Inf")
    norms = np.linalg.norm(prototypes, axis=1, keepdims=True)
    present = norms[:, 0] > 0
    unit = np.divide(prototypes, norms, out=np.zeros_like(prototypes), where=norms > 0)
    return np.where(present[:, None], unit, fallback).astype(np.float32)


class SelfLabelingHead(keras.layers.Layer):
    """Weights W (C, D), trainable by L_SL (Eq. 5), and their momentum copy W' (non-trainable).

    ``call(z)`` gives the cosine scores f_SL(z) = <z/|z|, W_c/|W_c|> of features (..., D); ``momentum=True``
    scores with W'. Both start from :func:`initial_head_weights`; :attr:`initial` keeps that start, so that
    the travel of W and W' can be measured.
    """

    def __init__(self, num_classes: int, dim: int, prototypes=None, seed: int = 0,
                 name: str = SELF_LABELING_PREFIX, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.seed = int(seed)
        start = initial_head_weights(prototypes, self.num_classes, self.dim, self.seed)
        self.initial = tf.constant(start)
        self.prototypes = self.add_weight(shape=(self.num_classes, self.dim),
                                          initializer=keras.initializers.Constant(start),
                                          dtype="float32", trainable=True, name="prototypes")
        self.momentum_prototypes = self.add_weight(
            shape=(self.num_classes, self.dim), initializer=keras.initializers.Constant(start),
            dtype="float32", trainable=False, aggregation="only_first_replica", name="momentum_prototypes")
        self.built = True

    def call(self, features, momentum: bool = False):
        weights = self.momentum_prototypes if momentum else self.prototypes
        return cosine_scores(tf.cast(features, tf.float32), tf.convert_to_tensor(weights))

    def travel_degrees(self, momentum: bool = True):
        """(K,) angle in degrees between each class's W' (or W) and its initial direction."""
        unit = tf.math.l2_normalize(tf.convert_to_tensor(self.momentum_prototypes if momentum
                                                         else self.prototypes), axis=-1)
        cosine = tf.reduce_sum(unit * self.initial, axis=-1)
        # atan2 of sine and cosine: acos loses small angles to rounding in float32.
        sine = tf.norm(unit - cosine[:, tf.newaxis] * self.initial, axis=-1)
        return tf.atan2(sine, cosine) * (180.0 / np.pi)

    def update_momentum(self, momentum: float) -> None:
        """W' <- m W' + (1 - m) W, after each optimizer step."""
        self.momentum_prototypes.assign(momentum * tf.convert_to_tensor(self.momentum_prototypes)
                                        + (1.0 - momentum) * tf.convert_to_tensor(self.prototypes))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim, "seed": self.seed}
