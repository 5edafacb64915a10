"""Sinkhorn-Knopp optimal transport for the online cluster assignment (paper Eq. 6 and Eq. 12).

The official routine (``official-code-notes.md`` section 4) works on Q = exp(S/eps)^T (K x N), normalises
it to sum 1 and then alternates ``iterations`` times a class step (rows of Q scaled to the marginal r) and a
sample step (columns scaled to 1/N), returning N * Q^T so that every row sums to 1.

Rescaling the full matrix at every step costs a read and a write of N x K values per step. Eq. 6 says the
result is ``diag(alpha) exp(S/eps) diag(beta)``, so here only the two scaling vectors are iterated
(one matrix-vector product per step) and the matrix is materialised once at the end:

* class step:  u_k = r_k / sum_b K_bk v_b
* sample step: v_b = 1 / (N * sum_k K_bk u_k)
* result:      Q_bk = K_bk u_k / sum_k' K_bk' u_k'   (the last sample step fused with N * Q^T)

Mathematically this is the official algorithm; in float32 it agrees to rounding. The kernel is
K = exp((S - max S) / eps): subtracting the global maximum cancels in the first normalisation of the
official code, and keeps exp from overflowing for scores above 88 * eps.

``log_domain=True`` runs the same iteration on log u, log v with logsumexp, which stays finite for any
finite scores (e.g. |S| = 1e3 in float16, where exp(S/eps) under- and overflows even in float32).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["sinkhorn"]


def _validate(scores: tf.Tensor, class_marginal: tf.Tensor, iterations: int) -> None:
    if scores.shape.rank is not None and scores.shape.rank != 2:
        raise ValueError(f"sinkhorn: scores must be (N, K), got shape {scores.shape}")
    if class_marginal.shape.rank is not None and class_marginal.shape.rank != 1:
        raise ValueError(f"sinkhorn: class_marginal must be (K,), got shape {class_marginal.shape}")
    k_scores, k_marginal = scores.shape[-1], class_marginal.shape[0]
    if k_scores is not None and k_marginal is not None and k_scores != k_marginal:
        raise ValueError(f"sinkhorn: scores have K={k_scores} classes but class_marginal has {k_marginal}")
    if int(iterations) < 1:
        raise ValueError(f"sinkhorn: iterations must be >= 1, got {iterations}")


@tf.function(jit_compile=True, reduce_retracing=True)
def _sinkhorn_plain(scores, class_marginal, epsilon, iterations: int):
    kernel = tf.exp((scores - tf.reduce_max(scores)) / epsilon)  # (N, K)
    num_samples = tf.cast(tf.shape(kernel)[0], tf.float32)
    u = class_marginal / tf.reduce_sum(kernel, axis=0)
    for _ in range(iterations - 1):
        v = 1.0 / (num_samples * tf.linalg.matvec(kernel, u))
        u = class_marginal / tf.linalg.matvec(kernel, v, transpose_a=True)
    # Row sums through a matrix-vector product: XLA's fused row reduction over K=19 is ~3x slower.
    return kernel * u * (1.0 / tf.linalg.matvec(kernel, u))[:, tf.newaxis]


@tf.function(jit_compile=True, reduce_retracing=True)
def _sinkhorn_log(scores, class_marginal, epsilon, iterations: int):
    log_kernel = scores / epsilon  # (N, K)
    log_num_samples = tf.math.log(tf.cast(tf.shape(log_kernel)[0], tf.float32))
    log_r = tf.math.log(class_marginal)
    log_u = log_r - tf.reduce_logsumexp(log_kernel, axis=0)
    for _ in range(iterations - 1):
        log_v = -log_num_samples - tf.reduce_logsumexp(log_kernel + log_u, axis=1, keepdims=True)
        log_u = log_r - tf.reduce_logsumexp(log_kernel + log_v, axis=0)
    return tf.nn.softmax(log_kernel + log_u, axis=1)


def sinkhorn(scores, class_marginal, epsilon: float = 0.05, iterations: int = 3, log_domain: bool = False):
    """Sinkhorn-Knopp assignment Q* = diag(alpha) exp(S / eps) diag(beta) (Eq. 6) with r = class_marginal
    and h = 1/N (Eq. 12).

    Args:
        scores: (N, K) float scores S, e.g. cosine similarities of N samples to K prototypes.
        class_marginal: (K,) class distribution r (sums to 1; the official code's ``class_distribution``
            or delta_pseudo of Eq. 10/11, uniform for equal partition).
        epsilon: entropic regularisation eps (0.05 in the paper and the official code).
        iterations: number of (class step, sample step) pairs; 3 in the official code.
        log_domain: iterate in the log domain (finite for extreme scores and low-precision inputs).

    Returns:
        Q of shape (N, K) in the dtype of ``scores``, computed in float32; the class step comes first and
        the sample step last, so every row sums to 1 and the class marginals only approach r.
    """
    scores = tf.convert_to_tensor(scores)
    if not scores.dtype.is_floating:
        raise TypeError(f"sinkhorn: scores must be a float tensor, got {scores.dtype}")
    class_marginal = tf.cast(tf.convert_to_tensor(class_marginal), tf.float32)
    _validate(scores, class_marginal, iterations)
    routine = _sinkhorn_log if log_domain else _sinkhorn_plain
    q = routine(tf.cast(scores, tf.float32), class_marginal, tf.cast(epsilon, tf.float32),
                int(iterations))
    return tf.cast(q, scores.dtype)
