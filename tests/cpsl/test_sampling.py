"""Class-balanced (Eq. 8-9) and uniform sampling: quotas against a NumPy count, no duplicates."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cpsl_tf.cpsl.sampling import class_balanced_sample_indices, class_quotas, uniform_sample_indices


def constructed_labels():
    """Two 20x30 label maps with very unequal classes, a missing class and ignored pixels."""
    a = np.zeros((20, 30), np.int64)
    a[:, 20:] = 1
    a[15:, :5] = 2
    a[0, 0:3] = 3
    a[10:12, 10:12] = 255
    b = np.full((20, 30), 4)
    b[:4] = 0
    b[5:7, 5:9] = 255
    return np.stack([a, b]).reshape(2, -1)


def test_quotas_and_sampling(rng):
    labels = constructed_labels()
    m, k = 64, 6
    expected_quotas = np.stack([(m * np.bincount(row[row < k], minlength=k)) // row.size for row in labels])
    np.testing.assert_array_equal(class_quotas(labels, m, k).numpy(), expected_quotas)
    for seed in ([1, 2], [3, 4]):
        indices = class_balanced_sample_indices(labels, m, k, tf.constant(seed)).numpy()
        assert indices.shape == (2, m)
        for n in range(2):
            assert len(set(indices[n].tolist())) == m
            picked = labels[n][indices[n]]
            got = np.bincount(picked[picked < k], minlength=k)
            assert (got >= expected_quotas[n]).all(), (got, expected_quotas[n])
            quota_part = picked[: expected_quotas[n].sum()]
            np.testing.assert_array_equal(np.bincount(quota_part[quota_part < k], minlength=k),
                                          expected_quotas[n])


def test_sampling_is_random_within_class_and_seeded():
    labels = constructed_labels()
    first = class_balanced_sample_indices(labels, 64, 6, tf.constant([1, 2])).numpy()
    again = class_balanced_sample_indices(labels, 64, 6, tf.constant([1, 2])).numpy()
    other = class_balanced_sample_indices(labels, 64, 6, tf.constant([5, 6])).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(np.sort(first, 1), np.sort(other, 1))


def test_sampling_works_in_a_graph():
    labels = constructed_labels()
    fn = tf.function(lambda x, s: class_balanced_sample_indices(x, 32, 6, s))
    assert fn(labels, tf.constant([0, 1])).shape == (2, 32)


def test_uniform_sampling_has_no_duplicates():
    shared = uniform_sample_indices(600, 100, tf.constant([0, 1])).numpy()
    per_image = uniform_sample_indices(600, 100, tf.constant([0, 1]), batch_size=3).numpy()
    assert shared.shape == (100,) and len(set(shared.tolist())) == 100 and shared.max() < 600
    assert per_image.shape == (3, 100) and all(len(set(row.tolist())) == 100 for row in per_image)


def test_gather_pixels_picks_raster_positions(rng):
    from cpsl_tf.cpsl.sampling import gather_pixels

    maps = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    indices = np.array([[0, 7, 19], [3, 12, 5]])
    got = gather_pixels(maps, indices).numpy()
    for n in range(2):
        np.testing.assert_array_equal(got[n], maps[n].reshape(-1, 3)[indices[n]])
