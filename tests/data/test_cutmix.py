"""CutMix boxes (official rand_bbox preset) and pasting."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cpsl_tf.data.cutmix import box_mask, cutmix, cutmix_box, paste_box


def test_boxes_have_half_the_area_and_stay_inside():
    heights = []
    for seed in range(50):
        y1, x1, y2, x2 = cutmix_box(tf.constant([seed, 3]), 512, 896).numpy()
        assert 0 <= y1 < y2 <= 512 and 0 <= x1 < x2 <= 896
        assert abs((y2 - y1) * (x2 - x1) / (512 * 896) - 0.5) < 0.01
        heights.append((y2 - y1) / 512)
    assert min(heights) >= 0.5 - 1e-3 and max(heights) <= 1.0 and np.std(heights) > 0.05


def test_paste_labels_at_quarter_scale_matches_paste_then_nearest_downsample(rng):
    target = rng.integers(0, 19, size=(2, 16, 24), dtype=np.uint8)
    source = rng.integers(0, 19, size=(2, 16, 24), dtype=np.uint8)
    boxes = np.array([[1, 3, 11, 17], [4, 0, 16, 9]], np.int32)
    full = paste_box(target, source, boxes).numpy()
    expected = full[:, ::4, ::4]  # legacy nearest x0.25 takes the top-left pixel of each cell
    got = paste_box(target[:, ::4, ::4], source[:, ::4, ::4], boxes, scale=4).numpy()
    np.testing.assert_array_equal(got, expected)
    assert box_mask(boxes[0], 16, 24).numpy().sum() == 10 * 14


def test_cutmix_pastes_the_box_or_nothing(rng):
    target = tf.zeros((8, 12, 3))
    source = tf.ones((8, 12, 3))
    outcomes = set()
    for seed in range(10):
        mixed, box, applied = cutmix(tf.constant([seed, 0]), target, source, probability=0.5)
        y1, x1, y2, x2 = box.numpy()
        assert mixed.numpy().sum() == 3 * (y2 - y1) * (x2 - x1)
        outcomes.add(bool(applied))
    assert outcomes == {True, False}
