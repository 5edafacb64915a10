"""Wide ReduceMean nodes split for portability: the same numbers in NumPy, ONNX Runtime and OpenCV's DNN
module, on single nodes over every wide subset of axes and on an exported segmenter with GroupNorm."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cpsl_tf.export.portable import MAX_AXES_PER_REDUCTION, split_wide_reductions

SHAPE = (1, 6, 10, 12, 8)
WIDE_AXES = [axes for k in (3, 4) for axes in itertools.combinations(range(5), k)]


def _reduce_mean_model(axes, keepdims: int, opset: int) -> onnx.ModelProto:
    out = [1 if i in axes else d for i, d in enumerate(SHAPE)] if keepdims else \
        [d for i, d in enumerate(SHAPE) if i not in axes]
    inputs, initializers, attributes = ["x"], [], {"keepdims": keepdims}
    if opset >= 18:
        initializers.append(numpy_helper.from_array(np.asarray(axes, np.int64), "axes"))
        inputs.append("axes")
    else:
        attributes["axes"] = list(axes)
    graph = helper.make_graph([helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attributes)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _widest_reduction(model: onnx.ModelProto) -> int:
    constants = {t.name: t for t in model.graph.initializer}
    widths = [0]
    for node in model.graph.node:
        if node.op_type != "ReduceMean":
            continue
        attribute = [helper.get_attribute_value(a) for a in node.attribute if a.name == "axes"]
        widths.append(len(attribute[0]) if attribute else constants[node.input[1]].dims[0])
    return max(widths)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_split_reductions_give_the_mean_in_every_runtime(opset, keepdims, tmp_path):
    x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    for axes in WIDE_AXES:
        model = _reduce_mean_model(axes, keepdims, opset)
        assert split_wide_reductions(model) == 1
        onnx.checker.check_model(model, full_check=True)
        assert _widest_reduction(model) <= MAX_AXES_PER_REDUCTION
        expected = x.mean(axis=axes, keepdims=bool(keepdims))
        path = tmp_path / "split.onnx"
        onnx.save(model, path)
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"ONNX Runtime, axes {axes}")
        net = cv2.dnn.readNetFromONNX(str(path))
        net.setInput(x)
        np.testing.assert_allclose(net.forward().reshape(expected.shape), expected, atol=1e-6,
                                   err_msg=f"OpenCV DNN, axes {axes}")


def test_narrow_reductions_are_left_alone():
    model = _reduce_mean_model((1, 2), 1, 17)
    before = model.SerializeToString()
    assert split_wide_reductions(model) == 0
    assert model.SerializeToString() == before


def test_exported_segmenter_reads_the_same_in_opencv_and_onnx_runtime(tiny_model, tmp_path):
    from cpsl_tf.export.onnx_export import export_onnx

    model, _ = tiny_model
    path = tmp_path / "model.onnx"
    proto = export_onnx(model, path, height=64, width=96, output="logits")
    assert any(n.op_type == "ReduceMean" for n in proto.graph.node)  # the GroupNorm moments are in it
    assert _widest_reduction(proto) <= MAX_AXES_PER_REDUCTION
    images = np.random.default_rng(2).random((2, 64, 96, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: images})[0]
    net = cv2.dnn.readNetFromONNX(str(path))
    for image, want in zip(images, expected):
        net.setInput(image[None])
        got = net.forward().reshape(want.shape)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.999
