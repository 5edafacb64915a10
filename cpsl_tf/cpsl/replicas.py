"""The global batch under ``tf.distribute``: what a replica needs so that one step on R replicas equals one
step on one device over the same global batch (on one device both are the identity)."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["gather_global_batch", "global_mean_share"]


def gather_global_batch(x):
    """Every replica's ``x`` concatenated along the batch axis in replica order (``x`` on one device)."""
    context = tf.distribute.get_replica_context()
    gathered = context.all_gather(x, axis=0)
    if x.shape[0] is not None:  # all_gather forgets the static batch size
        gathered = tf.ensure_shape(gathered, [x.shape[0] * context.num_replicas_in_sync, *x.shape[1:]])
    return gathered


def global_mean_share(count):
    """``replicas * count / (sum of count over replicas)``: a replica's mean over its ``count`` pixels times
    this share, averaged over the replicas, is the mean over every pixel of the global batch (1 on one
    device)."""
    context = tf.distribute.get_replica_context()
    count = tf.cast(count, tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(count * context.num_replicas_in_sync, total)
