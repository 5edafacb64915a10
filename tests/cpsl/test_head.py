"""The self-labeling head's start (Algorithm 1 line 2) and its travel, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from cpsl_tf.cpsl.head import SelfLabelingHead, initial_head_weights


def test_head_starts_from_the_normalised_prototypes(rng):
    prototypes = rng.normal(size=(19, 32)) * rng.uniform(0.5, 5, (19, 1))
    head = SelfLabelingHead(19, 32, prototypes.astype(np.float32), seed=0)
    expected = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
    np.testing.assert_allclose(head.prototypes.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(head.momentum_prototypes.numpy(), head.prototypes.numpy())


def test_classes_without_a_prototype_get_distinct_random_unit_vectors(rng):
    prototypes = rng.normal(size=(19, 32)).astype(np.float32)
    prototypes[[3, 7, 11]] = 0.0
    start = initial_head_weights(prototypes, 19, 32, seed=4)
    np.testing.assert_allclose(np.linalg.norm(start, axis=1), 1.0, atol=1e-6)
    missing = start[[3, 7, 11]]
    cosines = missing @ missing.T
    assert np.abs(cosines[~np.eye(3, dtype=bool)]).max() < 0.9
    np.testing.assert_array_equal(start, initial_head_weights(prototypes, 19, 32, seed=4))


def test_without_init_each_seed_draws_its_own_unit_vectors():
    a = SelfLabelingHead(19, 64, None, seed=0).prototypes.numpy()
    b = SelfLabelingHead(19, 64, None, seed=1).prototypes.numpy()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(a, b)


def test_bad_prototypes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        initial_head_weights(np.zeros((18, 8)), 19, 8, 0)
    with pytest.raises(ValueError, match="NaN"):
        initial_head_weights(np.full((19, 8), np.nan), 19, 8, 0)


def test_travel_is_the_angle_from_the_start(rng):
    prototypes = rng.normal(size=(5, 8)).astype(np.float32)
    head = SelfLabelingHead(5, 8, prototypes, seed=0)
    moved = prototypes + rng.normal(size=(5, 8)).astype(np.float32)
    head.momentum_prototypes.assign(3.0 * moved)
    start = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
    unit = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    expected = np.degrees(np.arccos(np.clip((start * unit).sum(axis=1), -1, 1)))
    np.testing.assert_allclose(head.travel_degrees().numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(head.travel_degrees(momentum=False).numpy(), 0.0, atol=1e-4)
