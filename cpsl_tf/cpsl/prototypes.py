"""Category prototypes that initialise the self-labeling head (paper Eq. 7).

``PrototypeEstimator`` accumulates over a stream of batches of (features, hard labels) and ``result``
returns the prototypes (K, D):

* mode ``paper`` (Eq. 7): pixel-weighted class means of the L2-normalised features,
  z_c = 1/|Gamma_c| sum_{n,i} Y_ST^(c) z_{n,i}, from per-class sums and pixel counts;
* mode ``official`` (docs/official-code.md section 1.2): per image and class with at least ``min_pixels``
  pixels, the mean of the raw features; per class a running mean v <- (v * n + vec) / (n + 1), then
  n <- min(n + 1, cap). Classes never seen stay zero. The official code L2-normalises the result when it
  initialises W.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["PrototypeEstimator"]


class PrototypeEstimator(tf.Module):
    """Streaming Eq. 7 (or the official running mean); state in variables, ``update`` works in a graph."""

    def __init__(self, num_classes: int, dim: int, mode: str = "paper", cap: int = 3000,
                 min_pixels: int = 10, name: str | None = None):
        super().__init__(name=name)
        if mode not in ("paper", "official"):
            raise ValueError(f"PrototypeEstimator: mode must be 'paper' or 'official', got {mode!r}")
        self.num_classes, self.dim, self.mode = int(num_classes), int(dim), mode
        self.cap, self.min_pixels = float(cap), float(min_pixels)
        self.vectors = tf.Variable(tf.zeros((num_classes, dim)), trainable=False, name="vectors")
        self.counts = tf.Variable(tf.zeros((num_classes,)), trainable=False, name="counts")

    def _image_sums(self, features, labels):
        """Per-image class sums (B, K, D) and pixel counts (B, K); labels outside [0, K) are skipped."""
        features = tf.reshape(tf.cast(features, tf.float32), [tf.shape(features)[0], -1, self.dim])
        labels = tf.reshape(tf.cast(labels, tf.int32), [tf.shape(features)[0], -1])
        one_hot = tf.one_hot(labels, self.num_classes, dtype=tf.float32)  # (B, P, K)
        return tf.einsum("bpk,bpd->bkd", one_hot, features), tf.reduce_sum(one_hot, axis=1)

    def update(self, features, labels):
        """Add a batch: features (B, H, W, D) channels-last, hard labels (B, H, W) at the same resolution."""
        features = tf.convert_to_tensor(features)
        if features.shape[-1] is not None and features.shape[-1] != self.dim:
            raise ValueError(f"PrototypeEstimator.update: features have {features.shape[-1]} channels, "
                             f"expected {self.dim}")
        if self.mode == "paper":
            sums, counts = self._image_sums(tf.math.l2_normalize(features, axis=-1, epsilon=1e-24), labels)
            self.vectors.assign_add(tf.reduce_sum(sums, axis=0))
            self.counts.assign_add(tf.reduce_sum(counts, axis=0))
            return
        sums, counts = self._image_sums(features, labels)
        means = tf.math.divide_no_nan(sums, counts[..., tf.newaxis])
        for image in range(features.shape[0]):
            present = counts[image] >= self.min_pixels
            n = tf.convert_to_tensor(self.counts)
            running = (self.vectors * n[:, tf.newaxis] + means[image]) / (n[:, tf.newaxis] + 1.0)
            self.vectors.assign(tf.where(present[:, tf.newaxis], running, self.vectors))
            self.counts.assign(tf.where(present, tf.minimum(n + 1.0, self.cap), n))

    def result(self):
        """Prototypes (K, D): Eq. 7 class means (paper) or the running means (official); zero if unseen."""
        if self.mode == "paper":
            return tf.math.divide_no_nan(tf.convert_to_tensor(self.vectors), self.counts[:, tf.newaxis])
        return tf.convert_to_tensor(self.vectors)
