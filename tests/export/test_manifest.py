"""The manifest records how an artefact was made: tool versions, time, command, and the gate's images."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import keras
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

from cpsl_tf.export.manifest import make_manifest
from cpsl_tf.labels import class_names


def manifest_of(tmp_path, kind="onnx", precision="float32", evaluation_data=None, align_corners=True) -> dict:
    artefact = tmp_path / "model.onnx"
    artefact.write_bytes(b"onnx")
    return make_manifest(artefact=artefact, kind=kind, precision=precision, height=32, width=48,
                         layout="nhwc", output="argmax", argmax_dtype="uint8", class_names=class_names(19),
                         input_mean=[0.5] * 3, input_std=[0.25] * 3, opset=17, checkpoint=None,
                         align_corners=align_corners, evaluation_data=evaluation_data)


def test_tools_time_command_and_evaluation_data(tmp_path):
    data = {"dataset": "cityscapes", "root": "/data/cityscapes", "split": "val", "images": 500}
    manifest = manifest_of(tmp_path, evaluation_data=data)
    assert manifest["tools"] == {"tensorflow": tf.__version__, "keras": keras.__version__,
                                 "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                                 "onnxruntime": onnxruntime.__version__}
    created = datetime.fromisoformat(manifest["created"])
    assert created.tzinfo is not None and abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)
    assert manifest["command"].startswith("python ") and sys.argv[0] in manifest["command"]
    assert manifest["evaluation_data"] == data


def test_input_resize_is_the_training_one_and_the_output_upsampling_the_models(tmp_path):
    """Frames are resized as the training views are (align-corners) whatever the model's own upsampling,
    which the manifest records apart."""
    manifest = manifest_of(tmp_path, align_corners=False)
    assert manifest["input"]["resize"] == "bilinear, align_corners"
    assert manifest["output"]["upsampling"] == "bilinear, half-pixel"
    assert manifest_of(tmp_path)["output"]["upsampling"] == "bilinear, align_corners"


def test_fp16_records_its_converter(tmp_path):
    tools = manifest_of(tmp_path, precision="float16 (float32 I/O)")["tools"]
    assert "onnxconverter_common" in tools and "tensorrt" not in tools
