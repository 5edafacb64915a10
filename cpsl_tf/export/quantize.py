"""INT8 as explicit Q/DQ ONNX that TensorRT accepts (and ONNX Runtime runs on the CPU).

``onnxruntime.quantization.quantize_static`` with QuantFormat.QDQ, entropy calibration, QInt8 activations
and weights, symmetric ranges (zero points 0: TensorRT only takes symmetric int8) and per-channel weights.
Calibration reads target-domain *training* images, never the evaluation images (``quantize_int8``
refuses overlapping sets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from cpsl_tf.command import UserError
from cpsl_tf.export.samples import eval_dataset, sample_paths

# Ops given Q/DQ inputs: TensorRT fuses Q/DQ into convolutions, matmuls and residual additions; the rest
# stay in float, as NVIDIA's placement recommendations suggest. MaxPool is left out on purpose: its
# input is padded with -inf (PyTorch padding semantics), which has no finite calibration range.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add")


class CalibrationError(UserError, ValueError):
    """The calibration images cannot be used: none, or some of them are evaluation images."""


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed target training images to the calibrator, ``batch_size`` at a time (their
    labels, if any, are not read). ``set_range`` restricts it to a range of batches (ONNX Runtime's
    strided calibration)."""

    def __init__(self, samples: Sequence, input_name: str, size: tuple[int, int], layout: str = "nhwc",
                 batch_size: int = 1):
        self.samples = [dataclasses.replace(sample, label=None) for sample in samples]
        self.input_name = input_name
        self.size = tuple(size)
        self.layout = layout
        self.batch_size = batch_size
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        first, last = start_index * self.batch_size, end_index * self.batch_size
        self._batches = iter(eval_dataset(self.samples[first:last], self.size, self.batch_size))

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        images = batch.numpy()
        if self.layout == "nchw":
            images = images.transpose(0, 3, 1, 2)
        return {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}


def quantize_int8(float_model: str | Path, output: str | Path, calibration_samples: Sequence, *,
                  size: tuple[int, int], layout: str = "nhwc",
                  evaluation_samples: Sequence = (), batch_size: int = 1,
                  method: str = "entropy") -> dict:
    """Write the Q/DQ INT8 model to ``output``; return what was done (for the manifest)."""
    overlap = sample_paths(calibration_samples) & sample_paths(evaluation_samples)
    if overlap:
        raise CalibrationError(f"INT8 calibration must use target training images, not evaluation images; "
                               f"{len(overlap)} images are in both sets, e.g. {sorted(overlap)[0]} (a folder "
                               "dataset has no splits: give other frames with --calib-images DIR)")
    if not calibration_samples:
        raise CalibrationError("INT8 calibration needs at least one target training image")
    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    input_name = onnx.load(str(float_model), load_external_data=False).graph.input[0].name
    reader = ImageCalibrationReader(calibration_samples, input_name, size, layout, batch_size)
    quantize_static(
        str(float_model), str(output), reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=methods[method],
        op_types_to_quantize=list(QUANTIZED_OPS),
        # Biases stay float: TensorRT folds them into the convolution and takes no int32 bias Q/DQ.
        # CalibStridedMinMax (any method, despite its name) collects batch by batch: at once, the
        # calibrator holds every calibrated tensor of every image (R101 at 1024x2048: about 7 GB per image).
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "CalibStridedMinMax": 1},
    )
    return {"method": f"onnxruntime quantize_static QDQ, {method} calibration",
            "activations": "int8 symmetric",
            "weights": "int8 symmetric per-channel", "calibration_images": len(calibration_samples),
            "quantized_ops": list(QUANTIZED_OPS)}


def qdq_summary(model_proto: onnx.ModelProto) -> dict:
    """Q/DQ facts TensorRT cares about: counts, zero points, per-channel weight scales."""
    graph = model_proto.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    quant = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dequant = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    zero_points = [inits[n.input[2]] for n in quant + dequant if len(n.input) > 2 and n.input[2] in inits]
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    weight_dq = [n for n in dequant if n.output[0] in conv_weights]
    return {
        "quantize_nodes": len(quant),
        "dequantize_nodes": len(dequant),
        "zero_points_all_zero": bool(zero_points) and all(not np.any(z) for z in zero_points),
        "zero_point_dtypes": sorted({str(z.dtype) for z in zero_points}),
        "conv_weights": len(conv_weights),
        "conv_weights_per_channel": sum(1 for n in weight_dq if inits[n.input[1]].ndim == 1
                                        and inits[n.input[1]].size > 1),
        "conv_weights_quantized": len(weight_dq),
    }
