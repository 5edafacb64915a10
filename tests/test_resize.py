import numpy as np

from cpsl_tf.resize import resize_bilinear, resize_nearest


def _align_corners_reference(x, out_h, out_w):
    """Independent NumPy bilinear with src = d * (in - 1) / (out - 1)."""
    in_h, in_w = x.shape[:2]
    ys = np.arange(out_h) * (in_h - 1) / max(out_h - 1, 1)
    xs = np.arange(out_w) * (in_w - 1) / max(out_w - 1, 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    top = x[y0][:, x0] * (1 - wx) + x[y0][:, x1] * wx
    bottom = x[y1][:, x0] * (1 - wx) + x[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def test_bilinear_align_corners_matches_formula(rng):
    x = rng.random((5, 7, 3)).astype(np.float32)
    out = resize_bilinear(x, (9, 13), align_corners=True).numpy()
    np.testing.assert_allclose(out, _align_corners_reference(x, 9, 13), atol=1e-6)
    # Corners are preserved exactly, unlike the half-pixel rule.
    np.testing.assert_allclose(out[[0, -1]][:, [0, -1]], x[[0, -1]][:, [0, -1]], atol=1e-6)
    batch = resize_bilinear(x[None], (9, 13)).numpy()
    np.testing.assert_allclose(batch[0], out)


def test_nearest_uses_pytorch_legacy_rule():
    x = np.arange(8 * 8, dtype=np.uint8).reshape(8, 8, 1)
    out = resize_nearest(x, (2, 2)).numpy()
    # floor(d * 8 / 2) = 0, 4: the top-left pixel of every 4x4 cell.
    np.testing.assert_array_equal(out[..., 0], [[0, 4], [32, 36]])
    up = resize_nearest(np.array([[[1], [2]]], np.int32), (1, 4)).numpy()
    np.testing.assert_array_equal(up[0, :, 0], [1, 1, 2, 2])
