"""Weak view: against resize-then-crop computed with the project's resize functions."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cpsl_tf.data.views import weak_view
from cpsl_tf.resize import resize_bilinear, resize_nearest


def _reference(x, params, crop, fill, resize):
    """Resize the whole map to the scaled size, pad, crop, flip (the official order)."""
    h, w = params["scaled_size"].numpy()
    y1, x1, y2, x2 = params["crop_box"].numpy()
    scaled = resize(x, (int(h), int(w))).numpy()
    pad = max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w)
    widths = [(pad[0], pad[1]), (pad[2], pad[3])] + [(0, 0)] * (scaled.ndim - 2)
    padded = np.pad(scaled, widths, constant_values=fill)
    out = padded[y1 + pad[0]:y2 + pad[0], x1 + pad[2]:x2 + pad[2]]
    return out[:, ::-1] if params["flip"].numpy() else out


def test_weak_view_equals_resize_then_crop(rng):
    image = rng.integers(0, 256, size=(16, 32, 3), dtype=np.uint8)
    label = rng.integers(0, 19, size=(16, 32), dtype=np.uint8)
    soft = rng.random((4, 8, 5)).astype(np.float32)
    crop = (8, 12)
    flips, padded = set(), False
    for seed in range(12):
        out = weak_view(tf.constant([seed, 0]), image, label, soft, base_size=(16, 32), crop_size=crop,
                        scale_range=(0.4, 1.5), soft_stride=1)
        p = out["params"]
        flips.add(int(p["flip"]))
        padded |= bool(p["crop_box"][0] < 0 or p["crop_box"][1] < 0)
        np.testing.assert_allclose(out["image"].numpy() * 255.0,
                                   _reference(image.astype(np.float32), p, crop, 0, resize_bilinear),
                                   atol=1e-3)
        np.testing.assert_array_equal(out["label"].numpy(), _reference(label[..., None], p, crop, 255,
                                                                       resize_nearest)[..., 0])
        np.testing.assert_allclose(out["soft"].numpy(), _reference(soft, p, crop, 0, resize_bilinear),
                                   atol=1e-5)
    assert flips == {0, 1} and padded


def test_soft_map_at_quarter_resolution_follows_the_image(rng):
    soft = rng.random((4, 8, 3)).astype(np.float32)
    image = np.zeros((16, 32, 3), np.uint8)
    out = weak_view(tf.constant([5, 5]), image, None, soft, base_size=(32, 64), crop_size=(16, 24),
                    scale_range=(1.0, 1.0), soft_stride=4)
    assert out["soft"].shape == (4, 6, 3)
    full = weak_view(tf.constant([5, 5]), image, None, soft, base_size=(32, 64), crop_size=(16, 24),
                     scale_range=(1.0, 1.0), soft_stride=1)["soft"]
    # Official chain: crop at full resolution, then align-corners x0.25.
    np.testing.assert_allclose(out["soft"].numpy(), resize_bilinear(full, (4, 6)).numpy(), atol=1e-5)


def test_same_seed_same_view_and_scale_range(rng):
    image = rng.integers(0, 256, size=(16, 32, 3), dtype=np.uint8)
    a = weak_view(tf.constant([1, 2]), image, base_size=(64, 128), crop_size=(8, 8), scale_range=(0.5, 1.5))
    b = weak_view(tf.constant([1, 2]), image, base_size=(64, 128), crop_size=(8, 8), scale_range=(0.5, 1.5))
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    sizes = [weak_view(tf.constant([s, 0]), image, base_size=(64, 128), crop_size=(8, 8),
                       scale_range=(0.5, 1.5))["params"]["scaled_size"].numpy() for s in range(20)]
    sizes = np.array(sizes)
    assert sizes[:, 0].min() >= 32 and sizes[:, 0].max() <= 96 and sizes[:, 0].std() > 0


def test_full_to_weak_pads_a_scaled_image_smaller_than_the_crop(rng):
    """full2weak where the weak crop reaches past the scaled image: the map there is zero (P_ST's padding);
    inside, the official chain (tests/cpsl/test_rectify.py checks it against the official fixture)."""
    from cpsl_tf.data.views import full_to_weak

    full = rng.random((1, 4, 8, 3)).astype(np.float32)  # a network map of a 16x32 image
    params = {"scaled_size": np.array([[12, 24]]), "crop_box": np.array([[-4, -8, 12, 16]]),
              "flip": np.array([1])}
    out = full_to_weak(full, params, (16, 32), (16, 24), 4).numpy()[0]
    assert out.shape == (4, 6, 3)
    inside = resize_bilinear(resize_bilinear(full, (4, 8)), (3, 6)).numpy()[0]
    expected = np.zeros((4, 6, 3), np.float32)
    expected[1:, 2:] = inside[:, :4]
    np.testing.assert_array_equal(out, expected[:, ::-1])
