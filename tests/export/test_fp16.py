"""FP16 conversion: weights beyond float16's range are clipped with one log line, not a warning each."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cpsl_tf.export.fp16 import convert_fp16


def test_clipped_weights_give_one_log_line_and_no_warnings(tmp_path, caplog):
    weights = np.array([1e-9, -1e-9, 1e6, -1e6, 0.5], dtype=np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "clip",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
                              [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "model.onnx")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, "cpsl_tf.export.fp16"):
        warnings.simplefilter("always")
        converted = convert_fp16(tmp_path / "model.onnx", tmp_path / "model_fp16.onnx")
    assert not [w for w in caught if "truncated" in str(w.message)]
    lines = [r.getMessage() for r in caplog.records if r.name == "cpsl_tf.export.fp16"]
    assert len(lines) == 1 and "clipped to float16's range in 4 places" in lines[0]
    stored = numpy_helper.to_array(converted.graph.initializer[0])
    assert stored.dtype == np.float16 and np.isfinite(stored).all()
