"""INT8 as explicit Q/DQ ONNX that TensorRT accepts (and ONNX Runtime runs on the CPU).

``onnxruntime.quantization.quantize_static`` with QuantFormat.QDQ, entropy calibration, QInt8 activations
and weights, symmetric ranges (zero points 0: TensorRT only takes symmetric int8) and per-channel weights.
Calibration reads target-domain *training* images, never the evaluation images (``quantize_int8``
refuses overlapping sets), one batch at a time, whole or as crops measured with a smaller export of the
same graph.
"""

from __future__ import annotations

import tempfile
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
from onnxruntime.quantization.calibrate import TensorsData, load_tensors_data, save_tensors_data

from cpsl_tf.command import UserError
from cpsl_tf.data import datasets
from cpsl_tf.export.preprocess import to_model_input
from cpsl_tf.export.samples import sample_paths

# Ops given Q/DQ inputs: TensorRT fuses Q/DQ into convolutions, matmuls and residual additions; the rest
# stay in float, as NVIDIA's placement recommendations suggest. MaxPool is left out on purpose: its
# input is padded with -inf (PyTorch padding semantics), which has no finite calibration range.
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add")


class CalibrationError(UserError, ValueError):
    """The calibration images cannot be used: none, or some of them are evaluation images."""


def crop_origins(size: tuple[int, int], crop: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of the fewest ``crop``-sized windows, evenly spread, that cover an image of
    ``size`` (the whole image when ``crop`` is ``size``)."""
    if crop[0] > size[0] or crop[1] > size[1]:
        raise CalibrationError(f"INT8 calibration crops of {crop[0]}x{crop[1]} do not fit in the "
                               f"{size[0]}x{size[1]} input; give a smaller --calib-crop")
    axes = []
    for full, part in zip(size, crop):
        count = -(-full // part)
        axes.append(sorted({round(i * (full - part) / max(count - 1, 1)) for i in range(count)}))
    return [(y, x) for y in axes[0] for x in axes[1]]


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds target training images, preprocessed as for the model (``preprocess.to_model_input`` at
    ``size``), to the calibrator ``batch_size`` crops at a time; ``crop`` (default: ``size``) cuts each
    image into the windows of :func:`crop_origins`. Their labels, if any, are not read. ``set_range``
    restricts it to a range of batches (ONNX Runtime's strided calibration)."""

    def __init__(self, samples: Sequence, input_name: str, size: tuple[int, int], layout: str = "nhwc",
                 batch_size: int = 1, crop: tuple[int, int] | None = None):
        self.samples = list(samples)
        self.input_name = input_name
        self.size = tuple(size)
        self.crop = tuple(crop or size)
        self.layout = layout
        self.batch_size = batch_size
        self.items = [(index, origin) for index in range(len(self.samples))
                      for origin in crop_origins(self.size, self.crop)]
        self._image = (None, None)
        self.set_range(0, len(self))

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = self.items[start_index * self.batch_size:end_index * self.batch_size]

    def _model_input(self, index: int) -> np.ndarray:
        if self._image[0] != index:
            self._image = (index, to_model_input(datasets.load_image(self.samples[index].image), self.size))
        return self._image[1]

    def get_next(self) -> dict | None:
        if not self._pending:
            return None
        chunk, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
        h, w = self.crop
        images = np.stack([self._model_input(index)[y:y + h, x:x + w] for index, (y, x) in chunk])
        if self.layout == "nchw":
            images = images.transpose(0, 3, 1, 2)
        return {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}


def tensor_name_map(calibrated: onnx.ModelProto, target: onnx.ModelProto) -> dict[str, str]:
    """Names of ``calibrated``'s tensors -> the names of the same tensors in ``target``, node by node.

    Two conversions of one deploy function at different input sizes give the same nodes in the same order,
    while tf2onnx's generated names (constants, counters) differ; a node sequence that differs is an error.
    """
    ops = [[n.op_type for n in m.graph.node] for m in (calibrated, target)]
    if ops[0] != ops[1]:
        raise CalibrationError("the calibration model's graph is not the exported graph at another size "
                               f"({len(ops[0])} and {len(ops[1])} nodes)")
    names = {i.name: j.name for i, j in zip(calibrated.graph.input, target.graph.input)}
    for small, big in zip(calibrated.graph.node, target.graph.node):
        for a, b in zip([*small.input, *small.output], [*big.input, *big.output]):
            if names.setdefault(a, b) != b:
                raise CalibrationError(f"tensor {a!r} of the calibration model matches both {names[a]!r} and "
                                       f"{b!r} of the exported graph")
    return names


def _carried_over(cache: Path, names: dict[str, str], out: Path) -> None:
    data = load_tensors_data(cache)
    save_tensors_data(TensorsData(data.calibration_method, {names[k]: v for k, v in data.items()}), out)


def quantize_int8(float_model: str | Path, output: str | Path, calibration_samples: Sequence, *,
                  size: tuple[int, int], layout: str = "nhwc",
                  evaluation_samples: Sequence = (), batch_size: int = 1,
                  method: str = "entropy", calibration_model: str | Path | None = None) -> dict:
    """Write the Q/DQ INT8 model to ``output``; return what was done (for the manifest).

    ``calibration_model``, the same deploy graph exported at a smaller input size, measures the activation
    ranges on crops of that size cut from the images at ``size`` (objects keep their scale), and
    :func:`tensor_name_map` carries the ranges over to ``float_model``. ONNX Runtime's calibration session
    runs the graph unoptimised with a reduction on every calibrated tensor: DeepLab-v2 R101 at 1024x2048
    needs more than 21 GiB for one image, at 512x1024 crops a quarter of that.
    """
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
    target = onnx.load(str(float_model), load_external_data=False)
    measured = onnx.load(str(calibration_model), load_external_data=False) if calibration_model else target
    input_name = measured.graph.input[0].name
    dims = [d.dim_value for d in measured.graph.input[0].type.tensor_type.shape.dim]
    crop = tuple(dims[2:4] if layout == "nchw" else dims[1:3])
    reader = ImageCalibrationReader(calibration_samples, input_name, size, layout, batch_size, crop)
    settings = dict(
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=methods[method],
        op_types_to_quantize=list(QUANTIZED_OPS),
        # Biases stay float: TensorRT folds them into the convolution and takes no int32 bias Q/DQ.
        # CalibStridedMinMax (any method, despite its name) collects batch by batch; without it the
        # calibrator holds every calibrated tensor of every image until the end.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "CalibStridedMinMax": 1},
    )
    if calibration_model is None:
        quantize_static(str(float_model), str(output), reader, **settings)
    else:
        with tempfile.TemporaryDirectory(prefix="cpsl-calibration-") as folder:
            folder = Path(folder)
            quantize_static(str(calibration_model), str(folder / "calibrated.onnx"), reader,
                            calibration_cache_path=folder / "ranges.json", **settings)
            _carried_over(folder / "ranges.json", tensor_name_map(measured, target), folder / "carried.json")
            quantize_static(str(float_model), str(output), None,
                            calibration_cache_path=folder / "carried.json", **settings)
    return {"method": f"onnxruntime quantize_static QDQ, {method} calibration",
            "calibration_crops": f"{crop[0]}x{crop[1]}",
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
