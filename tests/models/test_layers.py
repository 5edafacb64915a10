"""Custom layers: PyTorch ceil-mode pooling and the native dilated convolution."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.models.layers import CeilModeMaxPool2D, DilatedConv2D, Standardize


@pytest.mark.parametrize("height,width", [(7, 8), (32, 33), (129, 224), (256, 448)])
def test_ceil_mode_pool_equals_pytorch(height, width, rng):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for ceil_mode pooling")
    x = rng.normal(size=(2, height, width, 3)).astype("float32")  # negative values: padding must be -inf
    ours = keras.ops.convert_to_numpy(CeilModeMaxPool2D()(x))
    pool = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    theirs = pool(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def test_ceil_mode_pool_size_from_256x448_is_129x225():
    out = CeilModeMaxPool2D()(np.zeros((1, 256, 448, 1), "float32"))
    assert tuple(out.shape) == (1, 129, 225, 1)


@pytest.mark.parametrize("size,rate", [((33, 65), 2), ((9, 17), 24), ((8, 12), 6)])
def test_dilated_conv_equals_keras_conv(size, rate, rng):
    x = rng.normal(size=(2, *size, 16)).astype("float32")
    ours = DilatedConv2D(8, 3, dilation_rate=rate, padding="same")
    ours.build(x.shape)
    ours.set_weights([rng.normal(size=(3, 3, 16, 8)).astype("float32"), rng.normal(size=8).astype("float32")])
    reference = keras.layers.Conv2D(8, 3, dilation_rate=rate, padding="same")
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    expected = keras.ops.convert_to_numpy(reference(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), expected, atol=1e-4)
    # Rates beyond the map see only zero padding off-centre: the output is then the centre tap alone.
    if rate >= max(size):
        centre = x @ ours.get_weights()[0][1, 1] + ours.get_weights()[1]
        np.testing.assert_allclose(expected, centre, atol=1e-4)


def test_standardize_config_round_trip():
    layer = Standardize([0.1, 0.2, 0.3], [2.0, 4.0, 8.0])
    clone = Standardize.from_config(layer.get_config())
    x = np.ones((1, 2, 2, 3), "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x))[0, 0, 0], [0.45, 0.2, 0.0875], rtol=1e-6)
