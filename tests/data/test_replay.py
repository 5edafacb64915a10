"""Replay of the strong geometry: against the image transform itself, and against the official fixture."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view

from cpsl_tf.data.replay import official_replay, replay_to_strong
from cpsl_tf.data.strong import OFF, StrongAugment, strong_view
from tests.conftest import fixture_path

GEOMETRIC = StrongAugment(blur_prob=0.0, jitter_prob=0.0, op_prob=1.0,
                          pool=("rotate", "shear_x", "shear_y", "translate_x", "translate_y"))
# Saturated colours far from each other and from the gray fill (127).
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
                    [0, 0, 0], [255, 255, 255]], np.float32)


def _blocky_labels(rng, height, width, block):
    small = rng.integers(0, len(PALETTE), size=(height // block, width // block))
    return np.kron(small, np.ones((block, block), np.int64)).astype(np.uint8)


def _decode(image):
    distance = ((image[..., None, :] * 255.0 - PALETTE) ** 2).sum(-1)
    return distance.argmin(-1)


def _interior(labels, radius):
    """Pixels whose (2r+1)^2 neighbourhood holds a single label (away from class edges)."""
    padded = np.pad(labels, radius, mode="edge")
    windows = sliding_window_view(padded, (2 * radius + 1, 2 * radius + 1))
    return (windows == labels[..., None, None]).all(axis=(-1, -2))


@pytest.mark.parametrize("scale", [1, 4])
def test_replayed_labels_match_the_transformed_image(rng, scale):
    height, width = 96, 192
    agreements, counted = [], 0
    for sample in range(6):
        labels = _blocky_labels(rng, height, width, 24)
        image = PALETTE[labels] / 255.0
        strong, params = strong_view(tf.constant(image, tf.float32), tf.constant([sample, 7]), GEOMETRIC)
        assert params["official"].numpy()[1:6].min() < OFF, "the geometric pool must have fired"
        decoded = _decode(strong.numpy())
        small = labels[scale // 2::scale, scale // 2::scale]  # exact: blocks are multiples of 4
        batch = {k: v[tf.newaxis] for k, v in params.items()}
        replayed, valid = replay_to_strong(small[None, ..., None], batch)
        replayed = np.kron(replayed.numpy()[0, ..., 0], np.ones((scale, scale), np.int64))
        valid = np.kron(valid.numpy()[0], np.ones((scale, scale), bool))
        keep = valid & _interior(decoded, 1 + scale) & _interior(valid.astype(int), 1 + scale)
        counted += keep.sum()
        agreements.append((replayed[keep] == decoded[keep]).mean())
        # Invalid positions carry the ignore label.
        assert (replayed[~valid] == 255).all()
    assert counted > 0.2 * 6 * height * width
    assert min(agreements) > 0.99, (agreements, counted)


def test_probability_maps_follow_the_labels(rng):
    labels = _blocky_labels(rng, 64, 128, 16)
    image = PALETTE[labels] / 255.0
    _, params = strong_view(tf.constant(image, tf.float32), tf.constant([3, 1]), GEOMETRIC)
    batch = {k: v[tf.newaxis] for k, v in params.items()}
    one_hot = np.eye(len(PALETTE), dtype=np.float32)[labels][None]
    probs, valid_p = replay_to_strong(one_hot, batch)
    hard, valid_l = replay_to_strong(labels[None, ..., None], batch)
    assert np.array_equal(valid_p.numpy(), valid_l.numpy())
    keep = valid_l.numpy()[0] & _interior(hard.numpy()[0, ..., 0], 2)
    assert (probs.numpy()[0].argmax(-1)[keep] == hard.numpy()[0, ..., 0][keep]).mean() > 0.99
    assert (probs.numpy()[0][~valid_p.numpy()[0]] == 0).all()


def test_official_replay_matches_label_strong_T():
    data = np.load(fixture_path("consistency.npz"))
    labels = data["label_in"][:, 0].astype(np.int32)[..., None]
    expected = data["label_strongT"][:, 0]
    # Strong params of the fixture (README): crop 24x40, map 6x10 (scale 4).
    record = np.array([[1, OFF, 0.1, OFF, OFF, OFF, 4, 0, 16, 8],
                       [0, OFF, OFF, 12, OFF, 10, 20, 8, 36, 20]], np.float32)
    params = {"official": record, "size": np.array([[24, 40], [24, 40]], np.float32)}
    out, valid = official_replay(labels, params, padding=250)
    np.testing.assert_array_equal(out.numpy()[..., 0], expected)
    np.testing.assert_array_equal(valid.numpy(), expected != 250)
    via_option, _ = replay_to_strong(labels, params, fill=250, official=True)
    np.testing.assert_array_equal(via_option.numpy()[..., 0], expected)


def test_official_replay_of_float_maps_pads_all_channels():
    maps = np.random.default_rng(1).normal(size=(1, 6, 10, 3)).astype(np.float32)
    record = np.array([[0, OFF, OFF, OFF, OFF, OFF, 0, 0, 8, 8]], np.float32)
    out, valid = official_replay(maps, {"official": record, "size": np.array([[24, 40]], np.float32)},
                                 padding=250)
    assert (out.numpy()[0, :2, :2] == 250).all()
    np.testing.assert_allclose(out.numpy()[0][valid.numpy()[0]], maps[0][valid.numpy()[0]])
