"""Sinkhorn-Knopp optimal transport for the online cluster assignment (paper Eq. 6 and Eq. 12).

The official routine (``docs/official-code.md`` section 4) works on Q = exp(S/eps)^T (K x N), normalises
it to sum 1 and then alternates ``iterations`` times a class step (rows of Q scaled to the marginal r) and a
sample step (columns scaled to 1/N), returning N * Q^T so that every row sums to 1.

Rescaling the full matrix at every step costs a read and a write of N x K values per step. Eq. 6 says the
result is ``diag(alpha) exp(S/eps) diag(beta)``, so here only the scaling vectors are iterated (one
matrix-vector product per half-step) and the matrix is materialised once at the end. With E = exp(S/eps),
the official class step scales the columns of E by u and the sample step the rows by v. The iteration runs
on a kernel K = diag(c) E diag(s), for any positive row factors c and column factors s, with w = u / s:

* first class step: u1_k = r_k / sum_b E_bk (the true column sums of E: the official first step is a class
  step, taken before any sample step), w = u1 / s
* then ``iterations - 1`` times:
  sample step v_b = 1 / (N * sum_k K_bk w_k), class step w_k = r_k / sum_b K_bk v_b
* result: Q_bk = K_bk w_k / sum_k' K_bk' w_k'   (the last sample step fused with N * Q^T)

This is the official algorithm exactly, not an approximation: a row factor c_b cancels in every sample step
(v_b scales by 1/c_b, so K_bk v_b does not change) and in the final row normalisation, s cancels against
w = u / s, and a global factor of w is absorbed by the next sample step (w is rescaled to maximum 1 after
every class step).

Why the kernel is not exp((S - max S)/eps): exp(S/eps) spans far more than float32's range once the scores
are not cosines (N(0, 1) scores with eps 0.05 give exp(+-80) and beyond). Subtracting the global maximum
only prevents overflow: rows far below the maximum become subnormal or 0, and the result was up to 1 off (or
NaN) on N(0, 1) scores, e.g. 1.5e-4 on tests/fixtures/sinkhorn_normal600_rOfficial_f32.npz where the
official float32 code is within 1.1e-6 of float64. So each row is shifted by its own maximum m_b:

* fast path (c_b = exp(-m_b/eps), s = 1): K = exp((S - m_b)/eps), every row with maximum 1. The column sums
  of E for the first class step are one more matrix-vector product, K^T exp((m - max m)/eps), up to the
  global factor exp(max S / eps);
* the fast path can lose precision where a sum is so small that flushed (subnormal) terms matter: a column
  whose maximum lies far below max S (beyond ~87 eps), or u spanning more than float32's range. Every sum it
  forms is checked against that (``_TINY``) at the cost of a few length-N minima; if one fails, the result
  comes from ``_sinkhorn_folded`` instead (an XLA conditional: cosines with eps 0.05 never take it). It takes
  the column sums in the log domain, C_k/eps + log sum_b exp((S_bk - C_k)/eps) with the column maximum
  C_k, and folds u1 into the kernel (s = u1 up to a constant, c_b scaling each row to maximum 1), so w
  starts at 1 and only carries the correction of the later steps. It is finite and within a few 1e-6 of
  float64 on N(0, 3) and N(0, 5) scores, where the official code overflows, but costs one more exp of N x K
  values.

In float32 the result agrees with the official float32 code and with float64 to rounding (5e-7 from float64
on the N(0, 1) fixture; on 66,048 cosine rows the float32 matrix-vector sums give about 3e-6).

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


# float32 values below 2^-126 may be flushed to 0 (an entry of the kernel, or a product in a sum). In a sum of
# n products a * x with 0 <= a <= 1 and 0 <= x <= scale, each term flushed that way is below
# 2^-126 * max(1, scale): a sum of at least n * max(1, scale) * 2^-102 loses at most 2^-24 of itself to them,
# i.e. it is exact to float32 rounding.
_TINY = 2.0**-102


def _iterate(kernel, class_marginal, w, iterations: int, check: bool):
    """The (sample step, class step) pairs after the first class step and the final fused sample step.

    Returns Q and, if ``check``, whether every matrix-vector product stayed clear of the flushed range.
    w (the column scaling of ``kernel``) is rescaled to maximum 1 after every class step (a global factor is
    absorbed by the next sample step), so that the bounds above apply with the known scales 1 and max(v).
    """
    num_samples = tf.cast(tf.shape(kernel)[0], tf.float32)
    num_classes = tf.cast(tf.shape(kernel)[1], tf.float32)
    ok = tf.constant(True)
    for _ in range(iterations - 1):
        row_sums = tf.linalg.matvec(kernel, w)
        v = 1.0 / (num_samples * row_sums)
        column_sums = tf.linalg.matvec(kernel, v, transpose_a=True)
        w = class_marginal / column_sums
        w = w / tf.reduce_max(w)
        if check:
            ok = (ok & (tf.reduce_min(row_sums) >= num_classes * _TINY)
                  & (tf.reduce_min(column_sums) >= num_samples * tf.maximum(1.0, tf.reduce_max(v)) * _TINY))
    # Row sums through a matrix-vector product: XLA's fused row reduction over K=19 is ~3x slower.
    row_sums = tf.linalg.matvec(kernel, w)
    if check:
        ok = ok & (tf.reduce_min(row_sums) >= num_classes * _TINY)
    return kernel * w * (1.0 / row_sums)[:, tf.newaxis], ok


def _sinkhorn_folded(scores, class_marginal, epsilon, iterations: int):
    """The fallback for scores whose range exceeds float32's after the division by eps (see module doc)."""
    # First class step in logs, up to a global constant: log u1_k = log r_k - log sum_b exp(S_bk / eps),
    # each column shifted by its own maximum (differences of scores before the division by eps, for rounding).
    column_max = tf.reduce_max(scores, axis=0)  # (K,)
    column_sums = tf.reduce_sum(tf.exp((scores - column_max) / epsilon), axis=0)  # (K,) in [1, N]
    log_u = (tf.math.log(class_marginal) - tf.math.log(column_sums)
             - (column_max - tf.reduce_max(column_max)) / epsilon)
    # exp(S/eps) diag(u1) with each row scaled to maximum 1; the iteration goes on with w = u / u1 from 1.
    log_kernel = (scores - tf.reduce_max(scores, axis=1, keepdims=True)) / epsilon + log_u  # (N, K)
    kernel = tf.exp(log_kernel - tf.reduce_max(log_kernel, axis=1, keepdims=True))
    q, _ = _iterate(kernel, class_marginal, tf.ones_like(class_marginal), iterations, check=False)
    return q


@tf.function(jit_compile=True, reduce_retracing=True)
def _sinkhorn_plain(scores, class_marginal, epsilon, iterations: int):
    num_samples = tf.cast(tf.shape(scores)[0], tf.float32)
    row_max = tf.reduce_max(scores, axis=1)  # (N,)
    kernel = tf.exp((scores - row_max[:, tf.newaxis]) / epsilon)  # each row has maximum 1
    # First class step on the column sums of exp(S/eps), up to the global factor exp(max S / eps).
    row_scale = tf.exp((row_max - tf.reduce_max(row_max)) / epsilon)  # (N,) maximum 1
    column_sums = tf.linalg.matvec(kernel, row_scale, transpose_a=True)
    u = class_marginal / column_sums
    q, ok = _iterate(kernel, class_marginal, u / tf.reduce_max(u), iterations, check=True)
    ok = ok & (tf.reduce_min(column_sums) >= num_samples * _TINY)
    return tf.cond(ok, lambda: q, lambda: _sinkhorn_folded(scores, class_marginal, epsilon, iterations))


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
