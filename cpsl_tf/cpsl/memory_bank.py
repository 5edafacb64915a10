"""The memory bank M of paper section 3.2: the last N sampled pixel features, a ring buffer of variables.

Everything lives in variables (no Python state), so ``enqueue`` can run inside a ``tf.function`` train
step, the bank is carried by checkpoints (it is a Keras layer with non-trainable weights), and an
enqueue costs O(M) (a scatter of the M new rows and two scalar updates), never a copy of the N x D buffer.

Distribution: the variables use aggregation ``only_first_replica``. Under ``tf.distribute`` every replica
must enqueue the same rows (the all-gathered samples of the global batch, as issue 5 asks); the update of
the first replica is then written to every copy, so all copies stay identical. Each replica reads its local
copy, so reads need no communication.

Row order: Sinkhorn is equivariant to a permutation of its rows, so the training step uses ``features``
in ring order (the official code keeps a shift-down queue, newest block at row 0; the tests compare the two
orders).
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["MemoryBank"]


class MemoryBank(keras.layers.Layer):
    """Ring buffer of the last ``size`` rows of width ``dim`` (float32 by default, even under mixed precision)
    in non-trainable variables.

    Variables: ``features`` (size, dim), ``pointer`` (next row to write), ``filled`` (rows written so far,
    saturating at ``size``).
    """

    def __init__(self, size: int, dim: int, bank_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryBank: size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.bank_dtype = bank_dtype
        self.features = self.add_weight(shape=(self.size, self.dim), initializer="zeros", dtype=bank_dtype,
                                        trainable=False, aggregation="only_first_replica", name="features")
        self.pointer = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                       aggregation="only_first_replica", name="pointer")
        self.filled = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                      aggregation="only_first_replica", name="filled")
        self.built = True

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim, "bank_dtype": self.bank_dtype}

    def _tf_variable(self, variable):
        # The backing tf.Variable (a MirroredVariable under a strategy) exposes scatter updates.
        return variable.value if isinstance(variable, keras.Variable) else variable

    def enqueue(self, rows):
        """Write ``rows`` (M, dim), M <= size, after the newest rows, overwriting the oldest ones."""
        rows = tf.cast(tf.convert_to_tensor(rows), self.bank_dtype)
        if rows.shape.rank != 2 or (rows.shape[1] is not None and rows.shape[1] != self.dim):
            raise ValueError(f"MemoryBank.enqueue: rows must be (M, {self.dim}), got {rows.shape}")
        if rows.shape[0] is not None and rows.shape[0] > self.size:
            raise ValueError(f"MemoryBank.enqueue: {rows.shape[0]} rows do not fit a bank of {self.size}")
        count = tf.shape(rows)[0]
        pointer = tf.convert_to_tensor(self.pointer)
        indices = (pointer + tf.range(count)) % self.size
        self._tf_variable(self.features).scatter_update(tf.IndexedSlices(rows, indices))
        self.pointer.assign((pointer + count) % self.size)
        self.filled.assign(tf.minimum(tf.convert_to_tensor(self.filled) + count, self.size))

    def is_full(self):
        """True once ``size`` rows have been written (the official "last row is non-zero" test)."""
        return tf.equal(tf.convert_to_tensor(self.filled), self.size)

    def valid_rows(self):
        """The rows written so far, in ring order (all ``size`` rows once full)."""
        return tf.convert_to_tensor(self.features)[: tf.convert_to_tensor(self.filled)]

    def call(self, inputs=None):
        """The bank's contents (size, dim) in ring order."""
        return tf.convert_to_tensor(self.features)
