"""cpsl_tf.cpsl.sinkhorn against the official fixtures and an independent NumPy version of the routine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cpsl_tf.cpsl import sinkhorn
from tests.conftest import fixture_path

# Written by tests/fixtures/make_sinkhorn_normal_fixture.py: the official routine in PyTorch, float32 (Q)
# and float64 (Q64), on N(0, 1) scores.
NORMAL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sinkhorn_normal600_rOfficial_f32.npz"


def official_sinkhorn_numpy(scores, r, eps, iterations):
    """The official routine (docs/official-code.md section 4), rescaling the whole matrix at every step, in
    float64."""
    q = np.exp(scores.astype(np.float64) / eps).T
    q /= q.sum()
    n = q.shape[1]
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q *= r[:, None]
        q /= q.sum(axis=0, keepdims=True)
        q /= n
    return (q * n).T


def _logsumexp(x, axis):
    peak = x.max(axis=axis, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(axis=axis, keepdims=True))


def log_domain_sinkhorn_numpy(scores, r, eps, iterations):
    """The same routine on log Q in float64 (finite where the plain one overflows)."""
    log_q = scores.astype(np.float64).T / eps
    log_q -= _logsumexp(log_q.reshape(-1), 0)
    n = log_q.shape[1]
    for _ in range(iterations):
        log_q += np.log(r)[:, None] - _logsumexp(log_q, 1)
        log_q -= _logsumexp(log_q, 0) + np.log(n)
    return np.exp(log_q + np.log(n)).T


@pytest.mark.parametrize("marginal", ["rOfficial", "rUniform"])
def test_matches_official_fixture(marginal):
    data = np.load(fixture_path(f"sinkhorn_uniform600_{marginal}_f32.npz"))
    q = sinkhorn(data["logits"], data["r"], float(data["eps"]), int(data["iters"]))
    assert q.dtype.name == "float32" and q.shape == (600, 19)
    np.testing.assert_allclose(q.numpy(), data["Q"], rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(q.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_reference_values_of_readme():
    data = np.load(fixture_path("sinkhorn_uniform600_rOfficial_f32.npz"))
    q = sinkhorn(data["logits"], data["r"]).numpy()
    np.testing.assert_allclose(q[0, :5], [0.00197136, 0.71653146, 4.1295e-11, 3.1534e-13, 6.6354e-10],
                               rtol=1e-4)
    assert (q * np.arange(19)).sum() == pytest.approx(3329.956, abs=5e-3)


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_matches_numpy_routine_for_other_iteration_counts(rng, iterations):
    scores = rng.uniform(-1, 1, (300, 7)).astype(np.float32)
    r = rng.dirichlet(np.ones(7)).astype(np.float32)
    expected = official_sinkhorn_numpy(scores, r, 0.05, iterations)
    np.testing.assert_allclose(sinkhorn(scores, r, 0.05, iterations).numpy(), expected, rtol=1e-4, atol=1e-6)


def test_normal_fixture_float64_answer_is_the_numpy_routine():
    data = np.load(NORMAL_FIXTURE)
    expected = official_sinkhorn_numpy(data["logits"], data["r"].astype(np.float64), float(data["eps"]),
                                       int(data["iters"]))
    np.testing.assert_allclose(data["Q64"], expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("answer", ["Q", "Q64"])
def test_matches_official_on_normal_scores(answer):
    # N(0, 1) scores with eps 0.05: exp(S/eps) spans ~1e-70 .. 1e70. A kernel shifted by the global maximum
    # loses the rows far below it to the subnormal range (1.5e-4 off here); the official float32 code is
    # 1.1e-6 from float64.
    data = np.load(NORMAL_FIXTURE)
    q = sinkhorn(data["logits"], data["r"], float(data["eps"]), int(data["iters"])).numpy()
    np.testing.assert_allclose(q, data[answer], rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)


def test_fallback_matches_official_on_normal_scores():
    # The folded fallback (taken when the fast path's sums come too close to float32's flushed range) on
    # scores where the fast path is valid: it must be as exact.
    import tensorflow as tf

    from cpsl_tf.cpsl.sinkhorn import _sinkhorn_folded

    data = np.load(NORMAL_FIXTURE)
    folded = tf.function(_sinkhorn_folded, jit_compile=True)
    q = folded(tf.constant(data["logits"]), tf.constant(data["r"]), tf.constant(0.05), int(data["iters"]))
    for answer in ("Q", "Q64"):
        np.testing.assert_allclose(q.numpy(), data[answer], rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize(("seed", "iterations"), [(1, 3), (13, 3), (18, 3), (25, 3), (19, 1), (19, 10)])
def test_matches_numpy_routine_on_normal_scores(seed, iterations):
    scores = np.random.default_rng(seed).standard_normal((600, 19)).astype(np.float32)
    r = np.random.default_rng(100 + seed).dirichlet(np.ones(19))
    expected = official_sinkhorn_numpy(scores, r, 0.05, iterations)
    q = sinkhorn(scores, r.astype(np.float32), 0.05, iterations).numpy()
    np.testing.assert_allclose(q, expected, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_finite_on_wide_normal_scores(seed):
    # N(0, 3) / eps: exp overflows float32 (the official code returns NaN) and for seeds 0 and 3 the per-class
    # scales u span more than float32's range (the fallback path); seed 4 stays on the fast path. The answer
    # in float64 comes from the log-domain routine.
    scores = np.random.default_rng(seed).normal(0.0, 3.0, (600, 19)).astype(np.float32)
    r = np.random.default_rng(100 + seed).dirichlet(np.ones(19))
    q = sinkhorn(scores, r.astype(np.float32)).numpy()
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q, log_domain_sinkhorn_numpy(scores, r, 0.05, 3), rtol=1e-4, atol=1e-5)


def test_log_domain_agrees_with_plain_in_float32(rng):
    scores = rng.uniform(-1, 1, (500, 19)).astype(np.float32)
    r = rng.dirichlet(np.ones(19)).astype(np.float32)
    plain = sinkhorn(scores, r).numpy()
    logd = sinkhorn(scores, r, log_domain=True).numpy()
    np.testing.assert_allclose(logd, plain, rtol=1e-4, atol=1e-6)


def test_log_domain_stays_finite_in_float16_for_extreme_scores(rng):
    scores = rng.uniform(-1e3, 1e3, (256, 19)).astype(np.float16)
    r = np.full(19, 1 / 19, np.float32)
    q = sinkhorn(scores, r, log_domain=True)
    assert q.dtype.name == "float16"
    q = q.numpy().astype(np.float32)
    assert np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(q, log_domain_sinkhorn_numpy(scores, r, 0.05, 3), atol=2e-3)


def test_bfloat16_input_keeps_dtype(rng):
    import tensorflow as tf

    scores = tf.constant(rng.uniform(-1, 1, (64, 19)), tf.bfloat16)
    q = sinkhorn(scores, np.full(19, 1 / 19))
    assert q.dtype == tf.bfloat16 and q.shape == (64, 19)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="class_marginal has 5"):
        sinkhorn(np.zeros((4, 3), np.float32), np.full(5, 0.2))
    with pytest.raises(ValueError, match="scores must be"):
        sinkhorn(np.zeros((4,), np.float32), np.full(4, 0.25))


def test_inside_tf_function_with_tensor_epsilon(rng):
    import tensorflow as tf

    scores = rng.uniform(-1, 1, (40, 6)).astype(np.float32)
    r = np.full(6, 1 / 6, np.float32)
    fn = tf.function(lambda s, e: sinkhorn(s, r, e))
    expected = official_sinkhorn_numpy(scores, r, 0.05, 3)
    np.testing.assert_allclose(fn(scores, tf.constant(0.05)).numpy(), expected, rtol=1e-4, atol=1e-6)
