"""The segmenter contract: inputs, normalisation, outputs and their sizes, serialisation, LR groups."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.segmenter import build_segmenter, has_bn_pretrain, is_head_variable
from cpsl_tf.resize import resize_bilinear

NARROW = ModelConfig(backbone="resnet18", base_width=8, head_channels=32, aspp_rates=[2, 3])


def _numpy(outputs: dict) -> dict:
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def test_outputs_at_stride_8_for_a_512x896_crop(rng):
    model = build_segmenter(NARROW, num_classes=19)
    out = _numpy(model(rng.random((1, 512, 896, 3), dtype=np.float32)))
    assert set(out) == {"logits", "features"}
    assert out["logits"].shape == (1, 65, 113, 19) and out["features"].shape == (1, 65, 113, 32)
    assert out["logits"].dtype == np.float32 and np.isfinite(out["logits"]).all()
    # Eval-mode logits are the bias-free 1x1 classifier applied to the features.
    kernel = model.get_layer("layer5_head_1").get_weights()[0][0, 0]
    np.testing.assert_allclose(out["logits"], out["features"] @ kernel, atol=1e-5)


def test_full_resnet101_sizes_and_parameter_count():
    model = build_segmenter(ModelConfig(), num_classes=19)
    # 65,063,568 is the parameter count of the official PyTorch network (reference README).
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 65_063_568
    for (height, width), expected in [((512, 896), (65, 113)), ((1024, 2048), (129, 257))]:
        spec = model.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        assert tuple(spec["logits"].shape) == (1, *expected, 19)
        assert tuple(spec["features"].shape) == (1, *expected, 256)


def test_normalisation_inside_the_model_uses_the_config(rng):
    shifted = ModelConfig(**{**NARROW.__dict__, "input_mean": [0.2, 0.4, 0.6], "input_std": [0.5, 0.25, 2.0]})
    plain = build_segmenter(NARROW, 19)
    normalising = build_segmenter(shifted, 19)
    normalising.set_weights(plain.get_weights())
    x = rng.random((1, 64, 96, 3), dtype=np.float32)
    by_hand = (x - np.array([0.2, 0.4, 0.6], "float32")) / np.array([0.5, 0.25, 2.0], "float32")
    np.testing.assert_allclose(_numpy(normalising(x))["logits"], _numpy(plain(by_hand))["logits"], atol=1e-5)


def test_config_round_trip_rebuilds_the_same_function(rng):
    model = build_segmenter(NARROW, 16, bn_pretrain=True)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = rng.random((2, 64, 96, 3), dtype=np.float32)
    np.testing.assert_array_equal(_numpy(clone(x))["logits"], _numpy(model(x))["logits"])
    assert has_bn_pretrain(clone) and not has_bn_pretrain(build_segmenter(NARROW, 16))


def test_spatial_dropout_acts_on_features_in_training_only(rng):
    cfg = ModelConfig(**{**NARROW.__dict__, "dropout": 0.5})
    model = build_segmenter(cfg, 19)
    x = rng.random((1, 64, 96, 3), dtype=np.float32)
    train_features = _numpy(model(x, training=True))["features"]
    zeroed = np.all(train_features == 0, axis=(0, 1, 2))
    assert 0 < zeroed.sum() < 32  # whole channels are dropped
    assert not np.all(_numpy(model(x, training=False))["features"] == 0, axis=(0, 1, 2)).any()


def test_head_variables_are_layer5_and_bn_pretrain():
    model = build_segmenter(NARROW, 19, bn_pretrain=True)
    head = {v.path.split("/")[0] for v in model.trainable_variables if is_head_variable(v)}
    backbone = {v.path.split("/")[0] for v in model.trainable_variables if not is_head_variable(v)}
    assert "bn_pretrain" in head and "layer5_head_1" in head and "layer5_bottleneck_0_se_0" in head
    assert all(name.startswith(("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")) for name in backbone)


def test_logits_are_upsampled_with_align_corners():
    logits = np.arange(2 * 3, dtype=np.float32).reshape(1, 2, 3, 1)
    up = keras.ops.convert_to_numpy(resize_bilinear(logits, (3, 5), align_corners=True))[0, :, :, 0]
    # align_corners: output pixel d samples input coordinate d * (in - 1) / (out - 1).
    np.testing.assert_allclose(up[:, 0], [0.0, 1.5, 3.0])
    np.testing.assert_allclose(up[0], [0.0, 0.5, 1.0, 1.5, 2.0])


def test_rejects_nonsense_class_counts():
    with pytest.raises(ValueError, match="num_classes"):
        build_segmenter(NARROW, 0)
