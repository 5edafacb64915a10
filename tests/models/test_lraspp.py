"""The real-time student (MobileNetV3-Large + LR-ASPP): size against torchvision's reference design, output
sizes, the head checked against its formula in NumPy, and a Keras save/load round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.models.lraspp import LOW_LEVEL_BLOCK, build_lraspp_student

# torchvision.models.segmentation.lraspp_mobilenet_v3_large, 21 classes: 3,221,538 parameters (its
# documentation). Ours differs only in the last stage's dilation, which adds no parameters.
TORCHVISION_PARAMS_21_CLASSES = 3_221_538


def test_parameter_count_matches_torchvision_reference_design():
    model = build_lraspp_student(21)
    assert abs(model.count_params() - TORCHVISION_PARAMS_21_CLASSES) / TORCHVISION_PARAMS_21_CLASSES < 0.02


@pytest.mark.parametrize("size", [(64, 128), (100, 130)])
def test_logits_at_stride_8_in_float32(size):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_lraspp_student(5, width=0.5, head_channels=16)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = model.predict(np.zeros((1, *size, 3), np.float32), verbose=0)
    # The stem convolution pads "same" (rounds up); Keras' MobileNetV3 pads its later stride-2 depthwise
    # convolutions for even sizes, so those round down.
    expected = [(-(-n // 2)) // 2 // 2 for n in size]
    assert out["logits"].shape == (1, *expected, 5)
    assert out["logits"].dtype == np.float32


def _bilinear_align_corners(x: np.ndarray, size) -> np.ndarray:
    """(H, W, C) -> (h, w, C), output pixel d at input coordinate d * (in - 1) / (out - 1)."""
    def coords(n_in, n_out):
        pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, fr = coords(x.shape[0], size[0])
    c0, c1, fc = coords(x.shape[1], size[1])
    top = x[r0][:, c0] * (1 - fc)[None, :, None] + x[r0][:, c1] * fc[None, :, None]
    bottom = x[r1][:, c0] * (1 - fc)[None, :, None] + x[r1][:, c1] * fc[None, :, None]
    return top * (1 - fr)[:, None, None] + bottom * fr[:, None, None]


def test_head_computes_lraspp_from_the_backbone_features():
    model = build_lraspp_student(7, width=0.5, head_channels=16)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BatchNorm statistics in the head
        if layer.name == "lraspp_cbr_bn":
            layer.moving_mean.assign(rng.normal(size=16).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, size=16).astype(np.float32))
            layer.gamma.assign(rng.uniform(0.5, 2, size=16).astype(np.float32))
            layer.beta.assign(rng.normal(size=16).astype(np.float32))
    image = rng.random((1, 72, 104, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer(LOW_LEVEL_BLOCK).output,
                                      model.get_layer("lraspp_cbr_conv").input, model.output["logits"]])
    low, high, logits = (np.asarray(t)[0] for t in probe.predict(image, verbose=0))

    def weights(name):
        return [np.asarray(w) for w in model.get_layer(name).get_weights()]

    (cbr,), (scale_kernel,) = weights("lraspp_cbr_conv"), weights("lraspp_scale_conv")
    gamma, beta, mean, variance = weights("lraspp_cbr_bn")
    eps = model.get_layer("lraspp_cbr_bn").epsilon
    branch = np.maximum((high @ cbr[0, 0] - mean) / np.sqrt(variance + eps) * gamma + beta, 0)
    scale = 1 / (1 + np.exp(-(high.mean(axis=(0, 1)) @ scale_kernel[0, 0])))
    attended = _bilinear_align_corners(branch * scale, low.shape[:2])
    low_kernel, low_bias = weights("lraspp_low_classifier")
    high_kernel, high_bias = weights("lraspp_high_classifier")
    expected = low @ low_kernel[0, 0] + low_bias + attended @ high_kernel[0, 0] + high_bias
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_save_and_load_give_the_same_logits(tmp_path):
    model = build_lraspp_student(3, width=0.5, head_channels=8)
    path = tmp_path / "student.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    image = np.random.default_rng(1).random((1, 48, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(image, verbose=0)["logits"],
                                  model.predict(image, verbose=0)["logits"])


def test_imagenet_weights_only_for_the_published_widths():
    with pytest.raises(ValueError, match="widths"):
        build_lraspp_student(19, width=0.5, imagenet_weights=True)


def test_every_batch_norm_moves_its_statistics_at_the_given_momentum():
    # Keras' MobileNetV3 alone uses 0.999: a briefly trained student would evaluate with its initial
    # statistics.
    model = build_lraspp_student(3, width=0.5, head_channels=8, bn_momentum=0.75)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 30 and {layer.momentum for layer in norms} == {0.75}
    head_bn = model.get_layer("lraspp_cbr_bn")
    probe = keras.Model(model.input, head_bn.input)
    x = np.random.default_rng(1).random((2, 64, 96, 3)).astype(np.float32)
    batch_mean = np.asarray(probe(x, training=True)).mean(axis=(0, 1, 2))  # batch statistics upstream
    before = np.asarray(head_bn.moving_mean)
    model(x, training=True)
    np.testing.assert_allclose(np.asarray(head_bn.moving_mean), 0.75 * before + 0.25 * batch_mean,
                               rtol=1e-4, atol=1e-5)
