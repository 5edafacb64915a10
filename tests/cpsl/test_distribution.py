"""Eq. 8 and 11 against NumPy (Eq. 10 is tested with the pseudo-label store)."""

from __future__ import annotations

import numpy as np

from cpsl_tf.cpsl.distribution import (
    image_class_distribution,
    momentum_update,
)


def labels_with_ignore(rng, shape, k=5):
    labels = rng.integers(0, k, shape)
    labels[rng.random(shape) < 0.2] = 255
    return labels


def test_image_distribution_matches_numpy(rng):
    labels = labels_with_ignore(rng, (3, 6, 7))
    labels[2] = 255  # an image without labelled pixels
    got = image_class_distribution(labels, 5).numpy()
    for n in range(2):
        valid = labels[n][labels[n] != 255]
        np.testing.assert_allclose(got[n], np.bincount(valid, minlength=5) / valid.size, rtol=1e-6)
    np.testing.assert_array_equal(got[2], 0.0)


def test_momentum_update_matches_sequential_numpy(rng):
    delta = rng.dirichlet(np.ones(5))
    images = rng.dirichlet(np.ones(5), 4)
    images[1] = 0.0  # no labelled pixels: skipped
    expected = delta.copy()
    for d in images:
        if d.sum() > 0:
            expected = 0.9 * expected + 0.1 * d
    np.testing.assert_allclose(momentum_update(delta, images, 0.9).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(momentum_update(delta, images, 1.0).numpy(), delta, rtol=1e-6)
