"""Eq. 7 and the official running-mean prototypes against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from cpsl_tf.cpsl.prototypes import PrototypeEstimator


def batches(rng, count=3, k=4, d=6):
    for _ in range(count):
        labels = rng.integers(0, k, (2, 5, 5))
        labels[0, 0] = 255
        labels[1][labels[1] == 3] = 0  # class 3 rare in image 1
        yield rng.normal(size=(2, 5, 5, d)).astype(np.float32), labels


def test_paper_prototypes_are_pixel_weighted_means_of_unit_features(rng):
    data = list(batches(rng))
    estimator = PrototypeEstimator(4, 6)
    for features, labels in data:
        estimator.update(features, labels)
    feats = np.concatenate([f.reshape(-1, 6) for f, _ in data])
    labs = np.concatenate([lab.reshape(-1) for _, lab in data])
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    expected = np.stack([unit[labs == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(estimator.result().numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cap", [3000, 2])
def test_official_running_mean_with_cap_and_skip(rng, cap):
    data = list(batches(rng, count=4))
    estimator = PrototypeEstimator(4, 6, mode="official", cap=cap, min_pixels=4)
    vectors, counts = np.zeros((4, 6)), np.zeros(4)
    for features, labels in data:
        estimator.update(features, labels)
        for f, lab in zip(features, labels):
            for c in range(4):
                mask = lab == c
                if mask.sum() < 4:
                    continue
                vectors[c] = (vectors[c] * counts[c] + f[mask].mean(0)) / (counts[c] + 1)
                counts[c] = min(counts[c] + 1, cap)
    np.testing.assert_allclose(estimator.result().numpy(), vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(estimator.counts.numpy(), counts)
