"""``manifest.json`` written beside every exported artefact (ONNX, INT8/FP16 ONNX, TensorRT engine).

The manifest says how to feed the model (input shape, layout, normalisation), what comes out (classes,
palette, output kind), how it was made (opset, precision, source checkpoint with its SHA-256, ``tools`` with
their versions, ``created``, ``command``) and how well it matches Keras (``parity`` with
``max_abs_logit_diff``, ``argmax_agreement``, ``miou_keras``, ``miou_onnx``) on which images
(``evaluation_data``), and which network it is (``network``: name, sizing settings and parameters; for a
distilled network ``distilled_from``, its teacher's stage, network and weights' SHA-256, recursively).
Checks outside the project read these keys; keep their names.
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from cpsl_tf.io_utils import atomic_write_json, sha256_file
from cpsl_tf.labels import palette

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def input_shape(layout: str, height: int, width: int) -> list:
    """The exported input shape with a dynamic batch written as ``"batch"``."""
    return ["batch", 3, height, width] if layout == "nchw" else ["batch", height, width, 3]


def tool_versions(kind: str, precision: str) -> dict[str, str]:
    """Versions of the libraries that made an artefact of ``kind`` and ``precision``: TensorFlow and Keras
    (the source model), tf2onnx and ONNX (conversion), ONNX Runtime (parity, INT8 quantisation), the FP16
    converter for FP16 models and TensorRT for engines."""
    modules = ["tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"]
    if precision.startswith("float16"):
        modules.append("onnxconverter_common")
    if kind == "tensorrt":
        modules.append("tensorrt")
    return {name: importlib.import_module(name).__version__ for name in modules}


def make_manifest(*, artefact: str | Path, kind: str, precision: str, height: int, width: int,
                  layout: str, output: str, argmax_dtype: str, class_names, input_mean, input_std,
                  opset: int | None, checkpoint: str | Path | None, align_corners: bool,
                  evaluation_data: dict | None = None, parity: dict | None = None,
                  network: dict | None = None, distilled_from: dict | None = None,
                  extra: dict | None = None) -> dict:
    """Everything a consumer needs to run ``artefact`` and trust its outputs: how it was made (tools, time,
    command) and on which images (``evaluation_data``: dataset, root and split, or folders, and the number of
    images) its gates were measured."""
    artefact = Path(artefact)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "artefact": artefact.name,
        "artefact_sha256": sha256_file(artefact) if artefact.is_file() else None,
        "kind": kind,
        "precision": precision,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "tools": tool_versions(kind, precision),
        "evaluation_data": evaluation_data,
        "input": {
            "name": "image",
            "shape": input_shape(layout, height, width),
            "layout": layout,
            "dtype": "float32",
            "color": "RGB",
            "value_range": [0.0, 1.0],
            "resize": "bilinear, align_corners",
        },
        "normalisation": {
            "inside_graph": True,
            "mean": [float(v) for v in input_mean],
            "std": [float(v) for v in input_std],
            "formula": "(x - mean) / std applied by the model to RGB in [0, 1]",
        },
        "output": {
            "kind": output,
            "name": "class_map" if output == "argmax" else "logits",
            "dtype": argmax_dtype if output == "argmax" else "float32",
            "shape": (["batch", height, width] if output == "argmax" else
                      ["batch", len(class_names), height, width] if layout == "nchw" else
                      ["batch", height, width, len(class_names)]),
            "values": "train ids" if output == "argmax" else "logits before softmax",
            "upsampling": "bilinear, align_corners" if align_corners else "bilinear, half-pixel",
        },
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "palette": palette(len(class_names)).tolist(),
        "opset": opset,
        "source_checkpoint": str(checkpoint) if checkpoint else None,
        "source_checkpoint_sha256": (sha256_file(checkpoint) if checkpoint and Path(checkpoint).is_file()
                                     else None),
        "network": network,
        "distilled_from": distilled_from,
        "parity": parity,
    }
    if extra:
        manifest.update(extra)
    return manifest


def manifest_path(artefact: str | Path) -> Path:
    """``model.onnx`` -> ``manifest.json``; other artefacts -> ``<stem>.manifest.json`` in the same folder."""
    artefact = Path(artefact)
    if artefact.name == "model.onnx":
        return artefact.with_name(MANIFEST_NAME)
    return artefact.with_name(artefact.name.rsplit(".", 1)[0] + "." + MANIFEST_NAME)


def write_manifest(path: str | Path, manifest: dict) -> None:
    atomic_write_json(path, manifest)


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (it is written beside every exported model)")
    return json.loads(path.read_text())


def find_manifest(artefact: str | Path) -> dict:
    """The manifest describing ``artefact`` (its own, else the folder's ``manifest.json``)."""
    own = manifest_path(artefact)
    return read_manifest(own if own.is_file() else Path(artefact).with_name(MANIFEST_NAME))
