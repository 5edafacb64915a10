"""The self-labeling head f_SL and its momentum copy f'_SL: a cosine classifier without bias (Eq. 4)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cpsl_tf.cpsl.rectify import cosine_scores

SELF_LABELING_PREFIX = "self_labeling_head"


class SelfLabelingHead(keras.layers.Layer):
    """Weights W (C, D), trainable by L_SL (Eq. 5), and their momentum copy W' (non-trainable).

    ``call(z)`` gives the cosine scores f_SL(z) = <z/|z|, W_c/|W_c|> of features (..., D); ``momentum=True``
    scores with W'. Both start from the same initial value: the prototypes of Eq. 7 (``w/o Init``: random
    unit vectors).
    """

    def __init__(self, num_classes: int, dim: int, initial=None, name: str = SELF_LABELING_PREFIX, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        if initial is None:
            initializer = keras.initializers.RandomNormal(stddev=1.0, seed=0)
        else:
            initial = np.asarray(initial, dtype=np.float32)
            if initial.shape != (self.num_classes, self.dim):
                raise ValueError(f"prototypes have shape {initial.shape}; the head needs "
                                 f"({self.num_classes}, {self.dim})")
            initializer = keras.initializers.Constant(initial)
        self.prototypes = self.add_weight(shape=(self.num_classes, self.dim), initializer=initializer,
                                          dtype="float32", trainable=True, name="prototypes")
        self.momentum_prototypes = self.add_weight(
            shape=(self.num_classes, self.dim), initializer="zeros", dtype="float32", trainable=False,
            aggregation="only_first_replica", name="momentum_prototypes")
        self.momentum_prototypes.assign(self.prototypes)
        self.built = True

    def call(self, features, momentum: bool = False):
        weights = self.momentum_prototypes if momentum else self.prototypes
        return cosine_scores(tf.cast(features, tf.float32), tf.convert_to_tensor(weights))

    def update_momentum(self, momentum: float) -> None:
        """W' <- m W' + (1 - m) W, after each optimizer step."""
        self.momentum_prototypes.assign(momentum * tf.convert_to_tensor(self.momentum_prototypes)
                                        + (1.0 - momentum) * tf.convert_to_tensor(self.prototypes))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dim": self.dim}
