"""Class-balanced (Eq. 8-9) and uniform sampling: per-class counts against a NumPy count, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.cpsl.sampling import class_balanced_sample_indices, uniform_sample_indices


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


def long_tailed_labels():
    """A 24x48 map (the benchmark's target map) with a Cityscapes-like tail: road and building take most
    of it, and light, sign, pole and bicycle are under 1/64 of the pixels each."""
    counts = {0: 500, 2: 350, 8: 200, 10: 40, 5: 17, 7: 14, 6: 9, 18: 12, 255: 10}
    flat = np.concatenate([np.full(n, c) for c, n in counts.items()])
    assert flat.size == 24 * 48
    return np.random.default_rng(3).permutation(flat)[np.newaxis]


def _class_counts(labels, indices, k):
    picked = labels[indices]
    return np.bincount(picked[picked < k], minlength=k), picked


@pytest.mark.parametrize("m", [16, 64])
def test_every_class_gets_its_share_rounded_down_or_up(m):
    labels, k = constructed_labels(), 6
    for seed in ([1, 2], [3, 4], [9, 9]):
        indices = class_balanced_sample_indices(labels, m, k, tf.constant(seed)).numpy()
        assert indices.shape == (2, m)
        for n in range(2):
            assert len(set(indices[n].tolist())) == m
            counts, picked = _class_counts(labels[n], indices[n], k)
            assert (picked < k).all(), "ignored pixels are sampled although enough pixels have a class"
            share = m * np.bincount(labels[n][labels[n] < k], minlength=k) / (labels[n] < k).sum()
            assert (counts >= np.floor(share)).all() and (counts <= np.ceil(share)).all(), (counts, share)


def test_thin_classes_are_never_sampled_below_their_share():
    """Averaged over draws, each class gets M * delta_c samples, including the classes under 1/M of the
    image (floor quotas plus a uniform fill-up gave them a quarter to two thirds of that)."""
    labels, k, m = long_tailed_labels(), 19, 64
    seeds = tf.stack([tf.range(400), tf.fill([400], 5)], axis=1)
    draws = tf.map_fn(lambda s: class_balanced_sample_indices(labels, m, k, s)[0], seeds,
                      fn_output_signature=tf.int32).numpy()
    mean = np.mean([_class_counts(labels[0], d, k)[0] for d in draws], axis=0)
    labelled = labels[0][labels[0] < k]
    share = m * np.bincount(labelled, minlength=k) / labelled.size
    present = share > 0
    np.testing.assert_allclose(mean[present] / share[present], 1.0, atol=0.08)
    assert (mean[~present] == 0).all()


def test_images_with_fewer_labelled_pixels_than_m_are_filled_up():
    labels = np.full((1, 100), 255)
    labels[0, :10] = 3
    indices = class_balanced_sample_indices(labels, 40, 19, tf.constant([0, 1])).numpy()[0]
    assert len(set(indices.tolist())) == 40
    assert set(range(10)) <= set(indices.tolist())


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
