"""The deploy graph: fixed size, dynamic batch, dilated Convs, align-corners Resize, I/O transposes only."""

from __future__ import annotations

import os

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from cpsl_tf.export.onnx_export import (
    CATCH_ERRORS,
    convert,
    deploy_function,
    expected_dilated_convs,
    export_onnx,
    float32_model,
    graph_problems,
    graph_report,
    inner_transposes,
    with_logits_output,
)
from tests.export.conftest import standin_segmenter

H, W = 32, 48


def run(model_proto, x):
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_graph_has_dilated_convs_align_corners_resize_and_io_transposes_only(tiny_model, layout, rng):
    model, meta = tiny_model
    fn = deploy_function(model, H, W, layout=layout, outputs=("logits", "class_map"))
    proto = convert(fn, opset=17)
    report = graph_report(proto)
    assert report["opset"] == 17
    assert report["space_to_batch_nodes"] == 0
    assert report["dilated_convs"] == expected_dilated_convs(model) > 0
    assert report["resize_modes"] == [("linear", "align_corners")]
    assert graph_problems(report, align_corners=True, expected_dilated=expected_dilated_convs(model)) == []
    # Dynamic batch, fixed size.
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param
    assert [d.dim_value for d in dims[1:]] == ([3, H, W] if layout == "nchw" else [H, W, 3])
    x = rng.random((3, H, W, 3), dtype=np.float32)
    feed = x.transpose(0, 3, 1, 2) if layout == "nchw" else x
    got = run(proto, feed)
    ref = fn(tf.constant(feed))
    np.testing.assert_allclose(got["logits"], ref["logits"].numpy(), atol=1e-4)
    assert got["class_map"].dtype == np.uint8 and got["class_map"].shape == (3, H, W)
    # Independent reference for the class map: argmax of Keras logits resized in NumPy-free TF.
    logits = model(x, training=False)["logits"]
    up = tf.compat.v1.image.resize_bilinear(logits, (H, W), align_corners=True).numpy()
    expected_map = up.argmax(-1)
    assert (got["class_map"] == expected_map).mean() > 0.999


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_an_argmax_graph_exposes_the_logits_its_argmax_reads(layout, rng):
    """The parity twin of an argmax artefact: its class map is the artefact's, and its logits are those of
    a graph converted with a logits output, in the layout's convention."""
    model = standin_segmenter()
    argmax_only = convert(deploy_function(model, H, W, layout=layout), opset=17)
    with_logits = convert(deploy_function(model, H, W, layout=layout, outputs=("logits",)), opset=17)
    x = rng.random((2, H, W, 3), dtype=np.float32)
    feed = x.transpose(0, 3, 1, 2) if layout == "nchw" else x
    twin = run(with_logits_output(argmax_only, layout), feed)
    np.testing.assert_array_equal(twin["class_map"], run(argmax_only, feed)["class_map"])
    expected = run(with_logits, feed)["logits"]
    assert twin["logits"].shape == expected.shape == ((2, 19, H, W) if layout == "nchw" else (2, H, W, 19))
    np.testing.assert_allclose(twin["logits"], expected, atol=1e-5)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_only_io_transposes_remain_in_a_plain_conv_net(layout):
    # The real head's GroupNormalization leaves layout transposes around its reshapes (reported in the
    # manifest as graph.inner_transposes); a conv/BN/ReLU net must keep only the I/O transposes.
    proto = convert(deploy_function(standin_segmenter(), H, W, layout=layout,
                                    outputs=("logits", "class_map")), opset=17)
    report = graph_report(proto)
    assert inner_transposes(report) == []
    assert len(report["transposes"]) <= 2


def test_graph_check_catches_half_pixel_resize_and_missing_dilation(tiny_model):
    model, _ = tiny_model
    proto = convert(deploy_function(model, H, W, align_corners=False), opset=17)
    report = graph_report(proto)
    problems = graph_problems(report, align_corners=True, expected_dilated=expected_dilated_convs(model) + 1)
    assert any("half_pixel" in p for p in problems)
    assert any("dilations" in p for p in problems)


def test_dynamic_spatial_size_lowers_dilation_through_space_to_batch():
    # Why the deploy graph has a fixed size: with unknown H/W TF emits SpaceToBatchND for dilated convs.
    model = standin_segmenter()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="image")])
    def dynamic(image):
        return {"logits": model(image, training=False)["logits"]}

    report = graph_report(convert(dynamic, opset=17))
    assert report["space_to_batch_nodes"] > 0
    assert graph_problems(report, align_corners=True)


def test_export_writes_argmax_int32_model_and_opset_is_configurable(tiny_model, tmp_path, rng):
    model, _ = tiny_model
    path = tmp_path / "m.onnx"
    export_onnx(model, path, height=H, width=W, output="argmax", argmax_dtype="int32", opset=13)
    proto = onnx.load(path)
    assert graph_report(proto)["opset"] == 13
    assert [o.name for o in proto.graph.output] == ["class_map"]
    out = run(proto, rng.random((1, H, W, 3), dtype=np.float32))
    assert out["class_map"].dtype == np.int32


def test_mixed_precision_model_is_rebuilt_in_float32_with_the_same_weights(rng):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = standin_segmenter(dtype="mixed_float16")
    finally:
        keras.config.set_dtype_policy("float32")
    assert mixed.layers[1].dtype_policy.name == "mixed_float16"
    clean = float32_model(mixed)
    assert all(layer.dtype_policy.name == "float32" for layer in clean.layers)
    for a, b in zip(mixed.get_weights(), clean.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = rng.random((1, H, W, 3), dtype=np.float32)
    out = clean(x)["logits"]
    assert out.dtype == "float32"
    np.testing.assert_allclose(out, mixed(x)["logits"].numpy().astype(np.float32), atol=0.05)


def test_bad_arguments_are_named():
    model = standin_segmenter()
    with pytest.raises(ValueError, match="layout"):
        deploy_function(model, H, W, layout="chw")
    with pytest.raises(ValueError, match="argmax_dtype"):
        deploy_function(model, H, W, argmax_dtype="int64")


@pytest.fixture
def optimizer_calls(monkeypatch) -> list:
    """The ``catch_errors`` argument of every tf2onnx ``optimize_graph`` call, with the variable unset."""
    from tf2onnx import optimizer

    calls = []
    original = optimizer.optimize_graph

    def recording(graph, catch_errors=True, optimizers=None):
        calls.append(catch_errors)
        return original(graph, catch_errors, optimizers)

    monkeypatch.setattr(optimizer, "optimize_graph", recording)
    monkeypatch.delenv(CATCH_ERRORS, raising=False)
    return calls


def test_conversion_does_not_deep_copy_the_graph_for_each_optimizer(tiny_model, optimizer_calls):
    """tf2onnx's error recovery copies the whole graph, weights included, before every optimizer: 15 GiB of
    host memory for R101. The conversion turns it off, and leaves the environment as it was."""
    convert(deploy_function(tiny_model[0], H, W))
    assert optimizer_calls == [False]
    assert CATCH_ERRORS not in os.environ


def test_a_failing_optimizer_is_rolled_back_and_the_graph_still_matches_keras(optimizer_calls):
    """A freshly initialised MobileNetV3 student: BatchNorm folds to a zero offset, and tf2onnx's transpose
    optimizer then fails on a bias-free Conv followed by a scalar Add. The conversion runs again with the
    optimizers' rollback (and only then) and the graph computes what Keras does."""
    from cpsl_tf.models.lraspp import build_lraspp_student

    student = build_lraspp_student(3, width=0.35, head_channels=8)
    function = deploy_function(student, 32, 64, outputs=("logits",))
    proto = convert(function)
    assert optimizer_calls == [False, True]
    assert CATCH_ERRORS not in os.environ
    image = np.random.default_rng(0).random((1, 32, 64, 3)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: image})[0]
    np.testing.assert_allclose(onnx_logits, function(tf.constant(image))["logits"].numpy(), atol=1e-4)
