"""Prediction backends with one interface: Keras checkpoint, ONNX Runtime, TensorRT engine, and OpenCV's DNN
module (a second runtime for the same ONNX graph, checked against ONNX Runtime by the parity gate).

Every runner takes a (B, H, W, 3) float32 NHWC batch in [0, 1] at ``runner.input_size`` (a batch of
``samples.eval_dataset``, or of ``preprocess.batch_inputs`` for frames) and returns
``{"class_map": (B, H, W) int, "logits": (B, H, W, C) float32}`` (``logits`` only when the backend
produces them). Layout transposes and argmax of logits-only models are done here, so callers never see the
exported layout. Runners are scored through the one evaluation loop, ``cpsl_tf.evaluation.evaluate.evaluate``
(see ``parity.measure``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpsl_tf.export.manifest import find_manifest
from cpsl_tf.export.onnx_export import CLASS_MAP_NAME, LOGITS_NAME
from cpsl_tf.labels import class_names as default_class_names
from cpsl_tf.user_paths import require_file


class Runner:
    """Common attributes: ``input_size`` (H, W), ``num_classes``, ``class_names``."""

    input_size: tuple[int, int]
    num_classes: int
    class_names: list[str]

    def __call__(self, batch: np.ndarray) -> dict:
        raise NotImplementedError

    def _read_manifest(self, path: str | Path, manifest: dict | None) -> None:
        """Input layout and size, and classes of an exported artefact's manifest."""
        self.path = Path(path)
        self.manifest = manifest if manifest is not None else find_manifest(self.path)
        spec = self.manifest["input"]
        self.layout = spec["layout"]
        shape = spec["shape"]
        self.input_size = (shape[2], shape[3]) if self.layout == "nchw" else (shape[1], shape[2])
        self.num_classes = int(self.manifest["num_classes"])
        self.class_names = list(self.manifest["class_names"])

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        expected = tuple(self.input_size) + (3,)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"{type(self).__name__}: expected a (B, {expected[0]}, {expected[1]}, 3) NHWC "
                             f"batch, got {batch.shape}")
        return batch


class KerasRunner(Runner):
    """The Keras segmenter behind the same deploy function that is exported (resize + argmax in TF)."""

    def __init__(self, model, meta: dict, input_size: tuple[int, int]):
        from cpsl_tf.export.onnx_export import deploy_function

        self.meta = meta
        self.input_size = tuple(int(v) for v in input_size)
        self.num_classes = int(meta["num_classes"])
        self.class_names = list(meta.get("class_names") or default_class_names(self.num_classes))
        self.input_mean = meta.get("model", {}).get("input_mean", [0.0, 0.0, 0.0])
        self.input_std = meta.get("model", {}).get("input_std", [1.0, 1.0, 1.0])
        self.function = deploy_function(model, *self.input_size, outputs=(LOGITS_NAME, CLASS_MAP_NAME),
                                        argmax_dtype="int32",
                                        align_corners=bool(meta.get("model", {}).get("align_corners", True)))
        self.model = model

    @classmethod
    def from_checkpoint(cls, path: str | Path, input_size: tuple[int, int]) -> KerasRunner:
        from cpsl_tf.models.checkpoint import load_segmenter

        model, meta = load_segmenter(path)
        return cls(model, meta, input_size)

    def __call__(self, batch: np.ndarray) -> dict:
        out = self.function(self.check_batch(batch))
        return {name: value.numpy() for name, value in out.items()}


class OnnxRunner(Runner):
    """An exported ONNX model (float32, FP16 or INT8 Q/DQ) run with ONNX Runtime on the CPU."""

    def __init__(self, path: str | Path, manifest: dict | None = None, threads: int | None = None):
        import onnxruntime as ort

        self._read_manifest(path, manifest)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: np.ndarray) -> dict:
        batch = self.check_batch(batch)
        if self.layout == "nchw":
            batch = batch.transpose(0, 3, 1, 2)
        values = dict(zip(self.output_names, self.session.run(None, {self.input_name: batch})))
        return normalise_outputs(values, self.layout)


class OpenCvDnnRunner(Runner):
    """An exported ONNX model run with OpenCV's DNN module (``cv2.dnn``) on the CPU."""

    def __init__(self, path: str | Path, manifest: dict | None = None):
        import cv2

        self._read_manifest(path, manifest)
        self.net = cv2.dnn.readNetFromONNX(str(self.path))
        self.output_names = list(self.net.getUnconnectedOutLayersNames())

    def __call__(self, batch: np.ndarray) -> dict:
        batch = self.check_batch(batch)
        if self.layout == "nchw":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        self.net.setInput(batch)
        (value,) = self.net.forward(self.output_names)  # the deploy graph has one output
        return normalise_outputs({self.manifest["output"]["name"]: value}, self.layout)


def normalise_outputs(values: dict, layout: str) -> dict:
    """Backend outputs -> NHWC float32 logits and an integer class map."""
    out = {}
    if LOGITS_NAME in values:
        logits = np.asarray(values[LOGITS_NAME], dtype=np.float32)
        out[LOGITS_NAME] = logits.transpose(0, 2, 3, 1) if layout == "nchw" else logits
    if CLASS_MAP_NAME in values:
        out[CLASS_MAP_NAME] = np.asarray(values[CLASS_MAP_NAME]).astype(np.int32)
    else:
        out[CLASS_MAP_NAME] = out[LOGITS_NAME].argmax(axis=-1).astype(np.int32)
    return out


class TensorRTRunner(Runner):
    """A serialized TensorRT engine run with the TensorRT runtime (see ``tensorrt_build.EngineSession``)."""

    def __init__(self, path: str | Path, manifest: dict | None = None):
        from cpsl_tf.export.tensorrt_build import EngineSession

        self._read_manifest(path, manifest)
        self.session = EngineSession(self.path)

    def __call__(self, batch: np.ndarray) -> dict:
        batch = self.check_batch(batch)
        if self.layout == "nchw":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return normalise_outputs(self.session.run(batch), self.layout)


def load_runner(path: str | Path, input_size: tuple[int, int] | None = None) -> Runner:
    """Pick the backend from the file: ``*.weights.h5`` checkpoint, ``*.onnx`` or ``*.engine``/``*.plan``.
    ``input_size`` (H, W) feeds a checkpoint; exported models carry their own."""
    path = require_file(path, "a model: a *.weights.h5 checkpoint, an *.onnx model or an *.engine")
    name = path.name
    if name.endswith(".weights.h5"):
        if input_size is None:
            raise ValueError(f"{path}: a checkpoint needs its input size")
        return KerasRunner.from_checkpoint(path, input_size)
    if name.endswith(".onnx"):
        return OnnxRunner(path)
    if name.endswith((".engine", ".plan")):
        return TensorRTRunner(path)
    raise ValueError(f"{path}: unknown model type; expected a checkpoint (*.weights.h5), an ONNX model "
                     "(*.onnx) or a TensorRT engine (*.engine, *.plan)")
