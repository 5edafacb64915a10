"""Dilated ResNet: PyTorch ceil-mode pooling, output sizes, and the exact keras.applications ImageNet copy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.resnet import (
    backbone_channels,
    build_resnet,
    load_imagenet_backbone,
)
from tests.conftest import REFERENCE

NARROW = ModelConfig(backbone="resnet18", base_width=8)


@pytest.mark.parametrize("height,width,expected", [(512, 896, (65, 113)), (1024, 2048, (129, 257)),
                                                   (760, 1280, (96, 161)), (129, 257, (17, 33)),
                                                   (100, 150, (13, 19))])
def test_output_stride_8_sizes_of_official_network(height, width, expected):
    backbone = build_resnet(NARROW)
    out = backbone.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
    assert tuple(out.shape) == (1, *expected, backbone_channels(NARROW))


def test_sizes_agree_with_reference_arithmetic():
    torch = pytest.importorskip("torch", reason="the reference module imports torch")
    del torch
    import sys

    sys.path.insert(0, str(REFERENCE))
    try:
        import official_dlv2_torch as reference
    finally:
        sys.path.pop(0)
    backbone = build_resnet(NARROW)
    for height, width in [(64, 96), (65, 97), (66, 98), (67, 99), (250, 333)]:
        out = backbone.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        assert tuple(out.shape[1:3]) == reference.output_hw(height, width), (height, width)


@pytest.mark.parametrize("backbone,blocks", [("resnet34", (3, 4, 6, 3)), ("resnet50", (3, 4, 6, 3))])
def test_block_counts_and_projection_shortcuts(backbone, blocks):
    model = build_resnet(ModelConfig(backbone=backbone, base_width=8))
    names = {layer.name for layer in model.layers}
    for stage, count in enumerate(blocks, start=1):
        assert f"layer{stage}_{count - 1}_conv1" in names and f"layer{stage}_{count}_conv1" not in names
        assert f"layer{stage}_0_downsample_0" in names and f"layer{stage}_1_downsample_0" not in names
    assert ("layer1_0_conv3" in names) == (backbone == "resnet50")


def _randomise_batch_norm_and_biases(model: keras.Model, rng: np.random.Generator) -> None:
    """keras.applications with weights=None has zero biases and identity BN statistics; make them count."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
        elif isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape
            small = layer.name.endswith(("_3_bn", "_0_bn"))
            layer.set_weights([rng.uniform(0.1, 0.4, n) if small else rng.uniform(0.5, 1.5, n),
                               rng.normal(0, 0.1, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])


@pytest.fixture(scope="module")
def random_resnet50() -> keras.Model:
    keras.utils.set_random_seed(0)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(None, None, 3))
    _randomise_batch_norm_and_biases(reference, np.random.default_rng(1))
    return reference


def _taps(model: keras.Model, names: list[str]) -> keras.Model:
    return keras.Model(model.input, [model.get_layer(n).output for n in names])


def test_imagenet_copy_reproduces_keras_applications_without_dilation(random_resnet50, rng):
    ours = build_resnet(ModelConfig(backbone="resnet50"), dilated=False)
    load_imagenet_backbone(ours, "resnet50", random_resnet50)
    ours = _taps(ours, ["layer1_2_out", "layer4_2_out"])
    reference = _taps(random_resnet50, ["conv2_block3_out", "conv5_block3_out"])
    # Caffe-range input (0..255 minus the mean) as keras.applications expects. 66x98 gives an odd stem map
    # (33x49), where ceil- and floor-mode pooling agree in size and windows.
    rgb = rng.uniform(-128, 128, (2, 66, 98, 3)).astype("float32")
    expected = [keras.ops.convert_to_numpy(t) for t in reference(rgb[..., ::-1], training=False)]  # BGR
    actual = [keras.ops.convert_to_numpy(t) for t in ours(rgb, training=False)]
    assert actual[1].shape == expected[1].shape == (2, 3, 4, 2048)
    for a, e in zip(actual, expected):
        assert e.std() > 0.1
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_imagenet_copy_fits_the_dilated_backbone_and_rejects_narrow_widths(random_resnet50):
    reference = random_resnet50
    dilated = build_resnet(ModelConfig(backbone="resnet50"))
    load_imagenet_backbone(dilated, "resnet50", reference)
    np.testing.assert_array_equal(dilated.get_layer("layer4_2_conv2").get_weights()[0],
                                  reference.get_layer("conv5_block3_2_conv").get_weights()[0])
    with pytest.raises(ValueError, match="base_width 64"):
        load_imagenet_backbone(build_resnet(ModelConfig(backbone="resnet50", base_width=8)), "resnet50",
                               reference)
    with pytest.raises(ValueError, match="resnet50/resnet101"):
        load_imagenet_backbone(build_resnet(NARROW), "resnet18", reference)
