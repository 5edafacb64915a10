"""Strong view: photometric ops against PIL, parameter record, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.data import strong

PIL = pytest.importorskip("PIL", reason="Pillow is needed for the reference photometric ops")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402


@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness", "posterize", "solarize"])
def test_photometric_ops_match_pil(rng, name):
    image = rng.integers(0, 256, size=(16, 32, 3), dtype=np.uint8)
    pil = Image.fromarray(image)
    expected = {
        "brightness": lambda: ImageEnhance.Brightness(pil).enhance(0.5),
        "color": lambda: ImageEnhance.Color(pil).enhance(0.32),
        "contrast": lambda: ImageEnhance.Contrast(pil).enhance(0.68),
        "sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(0.23),
        "posterize": lambda: ImageOps.posterize(pil, 5),
        "solarize": lambda: ImageOps.solarize(pil, 154),
    }[name]()
    x = tf.constant(image, tf.float32)
    got = {"brightness": lambda: strong.brightness(x, 0.5), "color": lambda: strong.color(x, 0.32),
           "contrast": lambda: strong.contrast(x, 0.68), "sharpness": lambda: strong.sharpness(x, 0.23),
           "posterize": lambda: strong.posterize(x, 5), "solarize": lambda: strong.solarize(x, 154)}[name]()
    # PIL works in fixed point; allow one grey level.
    assert np.abs(got.numpy() - np.asarray(expected, np.float32)).max() <= 1.0


def test_record_cutout_and_determinism(rng):
    image = tf.constant(rng.random((24, 40, 3)), tf.float32)
    a, pa = strong.strong_view(image, tf.constant([4, 2]))
    b, pb = strong.strong_view(image, tf.constant([4, 2]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    record = pa["official"].numpy()
    x0, y0, x1, y1 = record[strong.CUTOUT:]
    assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 24 and max(x1 - x0, y1 - y0) <= 24 // 3
    np.testing.assert_allclose(a.numpy()[int(y0):int(y1), int(x0):int(x1)], 127 / 255)
    np.testing.assert_allclose(pa["cutout"].numpy(), [y0 / 24, x0 / 40, y1 / 24, x1 / 40])
    assert a.numpy().min() >= 0 and a.numpy().max() <= 1


def test_flip_only_matrix_is_a_mirror(rng):
    options = strong.StrongAugment(flip_prob=1.0, blur_prob=0.0, jitter_prob=0.0, op_prob=0.0, cutout=False)
    image = rng.random((8, 12, 3)).astype(np.float32)
    out, params = strong.strong_view(tf.constant(image), tf.constant([0, 0]), options)
    np.testing.assert_allclose(params["matrix"].numpy(), [-1, 0, 1, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(out.numpy(), np.round(image[:, ::-1] * 255) / 255, atol=1e-6)
