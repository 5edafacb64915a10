"""Losses against helpers.npz / consistency.npz (official code) and NumPy."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cpsl_tf.cpsl.losses import (
    distillation_kl,
    masked_kl_consistency,
    official_prototype_consistency,
    reverse_cross_entropy,
    segmentation_cross_entropy,
    self_labeling_loss,
    symmetric_kl_consistency,
)
from tests.conftest import fixture_path


def channels_last(x):
    return np.moveaxis(x, 1, -1)


def log_softmax_np(x, axis=-1):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def helpers():
    data = np.load(fixture_path("helpers.npz"))
    labels = np.where(data["labels"] == 250, 255, data["labels"])
    return data, channels_last(data["logits"]), labels


def test_cross_entropy_matches_official():
    data, logits, labels = helpers()
    np.testing.assert_allclose(segmentation_cross_entropy(logits, labels).numpy(), data["ce"], rtol=1e-6)
    np.testing.assert_allclose(segmentation_cross_entropy(logits, data["labels"], ignore_index=250).numpy(),
                               data["ce"], rtol=1e-6)


def test_reverse_cross_entropy_matches_official():
    data, logits, labels = helpers()
    np.testing.assert_allclose(reverse_cross_entropy(logits, labels).numpy(), data["rce"], rtol=1e-6)


def test_cross_entropy_all_ignored_is_zero():
    logits = np.zeros((1, 2, 2, 3), np.float32)
    assert segmentation_cross_entropy(logits, np.full((1, 2, 2), 255)).numpy() == 0.0
    assert reverse_cross_entropy(logits, np.full((1, 2, 2), 255)).numpy() == 0.0


def test_distillation_kl_is_the_proper_kl():
    data = np.load(fixture_path("helpers.npz"))
    loss = distillation_kl(channels_last(data["kd_student_logits"]), channels_last(data["kd_teacher_logits"]))
    np.testing.assert_allclose(loss.numpy(), data["kd_proper"], rtol=1e-5)


def test_self_labeling_loss_matches_numpy(rng):
    scores = rng.uniform(-1, 1, (32, 19)).astype(np.float32)
    targets = rng.dirichlet(np.ones(19), 32).astype(np.float32)
    expected = -(targets * log_softmax_np(scores / 0.08)).sum(axis=1).mean()
    np.testing.assert_allclose(self_labeling_loss(targets, scores, 0.08).numpy(), expected, rtol=1e-5)


def test_symmetric_kl_matches_numpy_and_respects_mask(rng):
    weak = rng.normal(size=(2, 4, 5, 19)).astype(np.float32)
    strong = rng.normal(size=(2, 4, 5, 19)).astype(np.float32)
    mask = rng.random((2, 4, 5)) > 0.3
    lw, ls = log_softmax_np(weak), log_softmax_np(strong)
    per_pixel = ((np.exp(lw) * (lw - ls)).sum(-1) + (np.exp(ls) * (ls - lw)).sum(-1)) / 19
    np.testing.assert_allclose(symmetric_kl_consistency(weak, strong, mask).numpy(), per_pixel[mask].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(symmetric_kl_consistency(weak, strong).numpy(), per_pixel.mean(), rtol=1e-5)
    assert symmetric_kl_consistency(weak, weak, mask).numpy() < 1e-6


def test_official_consistency_matches_fixture():
    data = np.load(fixture_path("consistency.npz"))
    teacher, mask = channels_last(data["teacher"]), channels_last(data["mask"])
    loss = masked_kl_consistency(teacher, channels_last(data["student_logp"]), mask)
    np.testing.assert_allclose(loss.numpy(), data["loss_consist"], rtol=1e-5)


def test_official_consistency_from_student_features_and_its_gradient():
    data = np.load(fixture_path("consistency.npz"))
    teacher, mask = channels_last(data["teacher"]), channels_last(data["mask"])
    student = tf.Variable(channels_last(data["student_feat"]))
    with tf.GradientTape() as tape:
        loss = official_prototype_consistency(teacher, mask, student, data["prototypes_ema"], 0.08)
    np.testing.assert_allclose(loss.numpy(), data["loss_consist"], rtol=1e-5)
    grad = tape.gradient(loss, student).numpy()
    expected = channels_last(data["grad_student_feat"])
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())
