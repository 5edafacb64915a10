"""The export command end to end on a tiny model: ONNX, parity gate, manifests, INT8, FP16, script."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest

from cpsl_tf.config import ExportConfig
from cpsl_tf.export.parity import ParityError
from cpsl_tf.export.pipeline import ExportOptions, export_model
from cpsl_tf.export.quantize import qdq_summary
from cpsl_tf.export.runners import OnnxRunner
from cpsl_tf.export.samples import folder_samples
from tests.export.conftest import write_image_folder

CFG = ExportConfig(height=32, width=48)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    val = write_image_folder(root / "val", 3, size=(40, 72), seed=1)
    train = write_image_folder(root / "train", 4, size=(40, 72), seed=2)
    return folder_samples(*val), folder_samples(train[0])


@pytest.fixture(scope="module")
def exported(tiny_model, data, tmp_path_factory):
    model, meta = tiny_model
    out = tmp_path_factory.mktemp("export")
    manifests = export_model(model, meta, out, CFG, data[0], data[1],
                             ExportOptions(int8=True, fp16=True, max_int8_miou_drop=1.0,
                                           max_fp16_miou_drop=1.0), log=lambda *_: None,
                             evaluation_data={"folder": "val"})
    return out, manifests


def test_float32_export_passes_the_gate_and_writes_the_manifest(exported, tiny_model, data):
    out, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["passed"], parity["failures"]
    assert parity["max_abs_logit_diff"] <= 1e-4
    assert parity["argmax_agreement"] >= 0.9999
    assert 0.0 <= parity["miou_keras"] <= 1.0 and abs(parity["miou_keras"] - parity["miou_onnx"]) < 1e-3
    assert manifest["input"]["shape"] == ["batch", 32, 48, 3] and manifest["input"]["layout"] == "nhwc"
    assert manifest["opset"] == 17 and manifest["precision"] == "float32"
    assert len(manifest["class_names"]) == len(manifest["palette"]) == 19
    assert manifest["graph"]["problems"] == []
    assert manifest["evaluation_data"] == {"folder": "val", "images": 3}
    # The second runtime (OpenCV DNN, installed with the project) reads the graph as ONNX Runtime does.
    second = parity["second_runtime"]
    assert second["runtime"].startswith("opencv-dnn") and second["passed"]
    assert second["argmax_agreement"] >= 0.999 and second["num_images"] == 3
    # The written ONNX is the argmax artefact and reproduces the Keras class map on a fresh image.
    model, meta = tiny_model
    assert [o.name for o in onnx.load(out / "model.onnx").graph.output] == ["class_map"]
    from cpsl_tf.export.runners import KerasRunner

    x = np.random.default_rng(5).random((2, 32, 48, 3), dtype=np.float32)
    keras_map = KerasRunner(model, meta, (32, 48))(x)["class_map"]
    assert (OnnxRunner(out / "model.onnx")(x)["class_map"] == keras_map).mean() >= 0.9999


def test_int8_is_qdq_symmetric_per_channel_and_its_miou_drop_is_recorded(exported):
    out, manifests = exported
    summary = qdq_summary(onnx.load(out / "model_int8.onnx"))
    assert summary["quantize_nodes"] > 0 and summary["dequantize_nodes"] > 0
    assert summary["zero_points_all_zero"] and summary["zero_point_dtypes"] == ["int8"]
    assert summary["conv_weights_per_channel"] == summary["conv_weights"] > 0
    manifest = json.loads((out / "model_int8.manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["miou_drop"] == pytest.approx(parity["miou_float32_onnx"] - parity["miou_onnx"])
    assert parity["argmax_agreement"] > 0.5  # the quantised model still largely agrees with Keras
    x = np.random.default_rng(3).random((1, 32, 48, 3), dtype=np.float32)
    assert OnnxRunner(out / "model_int8.onnx")(x)["class_map"].shape == (1, 32, 48)


def test_fp16_model_has_float16_weights_and_parity(exported):
    out, _ = exported
    model = onnx.load(out / "model_fp16.onnx")
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    parity = json.loads((out / "model_fp16.manifest.json").read_text())["parity"]
    assert parity.get("argmax_agreement", 0) > 0.99 or parity.get("measured") is False


def test_build_engine_script_has_both_generations(exported):
    out, _ = exported
    text = (out / "build_engine.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "--fp16" in text and "--int8" in text and "--calib=calibration.cache" in text
    assert "--onnx=model_int8.onnx" in text and "--onnx=model_fp16.onnx" in text
    assert "--minShapes=image:1x32x48x3" in text and "--maxShapes=image:4x32x48x3" in text
    eleven = text.split("then", 1)[1].split("else", 1)[0]
    assert "--fp16" not in eleven and "--int8" not in eleven


def test_failed_gate_raises_with_figures_after_writing_the_manifest(tiny_model, data, tmp_path):
    model, meta = tiny_model
    strict = dataclasses.replace(CFG, max_abs_logit_diff=0.0, min_argmax_agreement=1.01)
    with pytest.raises(ParityError, match="argmax agreement"):
        export_model(model, meta, tmp_path, strict, data[0][:1], log=lambda *_: None)
    parity = json.loads((tmp_path / "manifest.json").read_text())["parity"]
    assert parity["passed"] is False and parity["failures"]


def test_int8_calibration_refuses_evaluation_images(tiny_model, data, tmp_path):
    model, meta = tiny_model
    with pytest.raises(ValueError, match="evaluation images"):
        export_model(model, meta, tmp_path, CFG, data[0], data[0], ExportOptions(int8=True),
                     log=lambda *_: None)


def test_int8_ranges_can_be_measured_on_crops(tiny_model, data, tmp_path):
    model, meta = tiny_model
    options = ExportOptions(int8=True, max_int8_miou_drop=1.0, int8_calibration_crop=(16, 24))
    manifests = export_model(model, meta, tmp_path, CFG, data[0], data[1], options, log=lambda *_: None)
    assert manifests["model_int8.onnx"]["quantization"]["calibration_crops"] == "16x24"
    assert sorted(p.name for p in tmp_path.glob(".*")) == []  # the crop-size graph is not left behind
    too_large = ExportOptions(int8=True, int8_calibration_crop=(64, 24))
    with pytest.raises(ValueError, match="do not fit in the 32x48 input"):
        export_model(model, meta, tmp_path / "again", CFG, data[0], data[1], too_large, log=lambda *_: None)
