"""Rectification (Eq. 1), P_SL (Eq. 4) and the production full2weak (``views.full_to_weak``) against
rectify_thr0.00.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpsl_tf.cpsl import rectify
from cpsl_tf.cpsl.rectify import cosine_scores, self_labeling_probabilities
from cpsl_tf.data.views import full_to_weak
from cpsl_tf.resize import resize_nearest
from tests.conftest import fixture_path


def channels_last(x):
    return np.moveaxis(x, 1, -1)


@pytest.fixture(scope="module")
def fixture():
    data = np.load(fixture_path("rectify_thr0.00.npz"))
    params = json.loads(str(data["weak_params"]))
    (h, w), (y1, y2, x1, x2) = params["RandomSized"], params["RandomCrop"]
    # The maps are at full / 4 of the official full image; the crops all have one size.
    full_size = [4 * n for n in data["ema_feat_fullq"].shape[2:]]
    weak_params = {"scaled_size": np.stack([h, w], axis=1), "crop_box": np.stack([y1, x1, y2, x2], axis=1),
                   "flip": np.array(params["RandomHorizontallyFlip"], np.int32)}
    return data, {"weak_params": weak_params, "full_size": full_size,
                  "crop_size": [y2[0] - y1[0], x2[0] - x1[0]], "stride": 4}


def test_full_to_weak_matches_official(fixture):
    data, params = fixture
    weak = full_to_weak(channels_last(data["ema_feat_fullq"]), **params)
    np.testing.assert_allclose(weak.numpy(), channels_last(data["weak_ema_feat"]), rtol=1e-5, atol=1e-5)


def test_self_labeling_probabilities_match_official(fixture):
    data, _ = fixture
    scores = cosine_scores(channels_last(data["weak_ema_feat"]), data["prototypes_ema"])
    p_sl = self_labeling_probabilities(scores, 0.08)
    np.testing.assert_allclose(p_sl.numpy(), channels_last(data["P_SL"]), rtol=1e-4, atol=1e-6)


def test_rectified_labels_match_official(fixture):
    data, params = fixture
    weak = full_to_weak(channels_last(data["ema_feat_fullq"]), **params)
    p_sl = self_labeling_probabilities(cosine_scores(weak, data["prototypes_ema"]), 0.08)
    labels = rectify(p_sl, channels_last(data["lpsoft_cropq"]), threshold=float(data["train_thred"]))
    np.testing.assert_array_equal(labels.numpy(), data["hard_label"][:, 0])
    full_native = resize_nearest(labels[..., None], data["threshold_SL"].shape[2:])
    np.testing.assert_array_equal(full_native.numpy()[..., 0], data["threshold_SL"][:, 0])


def test_threshold_ignores_low_confidence_products():
    p_sl = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]], np.float32)
    p_st = np.array([[0.6, 0.4, 0.0], [0.9, 0.05, 0.05]], np.float32)
    # renormalised products: [0.6, 0.4, 0] and [~0.994, ...]
    np.testing.assert_array_equal(rectify(p_sl, p_st, threshold=0.7).numpy(), [255, 0])
    np.testing.assert_array_equal(rectify(p_sl, p_st, threshold=0.7, ignore_index=250).numpy(), [250, 0])
    np.testing.assert_array_equal(rectify(p_sl, p_st).numpy(), [0, 0])


def test_argmax_of_product_not_of_either_factor():
    p_sl = np.array([[0.1, 0.4, 0.5]], np.float32)
    p_st = np.array([[0.5, 0.4, 0.1]], np.float32)
    assert rectify(p_sl, p_st).numpy().tolist() == [1]


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="same shape"):
        rectify(np.ones((2, 3), np.float32), np.ones((2, 4), np.float32))


def test_tensor_threshold_inside_a_graph():
    import tensorflow as tf

    p_sl = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]], np.float32)
    fn = tf.function(lambda a, b, t: rectify(a, b, threshold=t))
    np.testing.assert_array_equal(fn(p_sl, p_sl, tf.constant(0.6)).numpy(), [255, 0])
