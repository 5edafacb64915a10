"""FP16 ONNX: float32 graph converted with onnxconverter-common, float32 inputs/outputs kept.

TensorRT 11 builds FP16 engines from such a graph (strongly typed); TensorRT 8.6/10 can also take the
float32 ONNX with the FP16 builder flag. ONNX Runtime's CPU provider lacks FP16 kernels for some ops;
``try_session`` says whether it can run the model so parity is measured where possible.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx

from cpsl_tf.io_utils import atomic_write_bytes

# Kept in float32: the final Resize (the converter turns its ``scales`` input into float16, which the
# ONNX spec forbids) and the argmax (no FP16 kernel in ORT's CPU provider).
FP32_OPS = ("Resize", "ArgMax")
# How onnxconverter-common's warning about a value beyond float16's range begins.
CLIPPED = "the float32 number "
log = logging.getLogger(__name__)


def convert_fp16(float_model: str | Path, output: str | Path) -> onnx.ModelProto:
    try:
        from onnxconverter_common import float16
    except ImportError as err:
        raise RuntimeError("FP16 export needs onnxconverter-common "
                           "(pip install onnxconverter-common)") from err
    model = onnx.load(str(float_model))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_OPS))
    # The converter warns once per bound of every tensor it clips: summarised in one line.
    clipped = [w for w in caught if str(w.message).startswith(CLIPPED)]
    for w in caught:
        if w not in clipped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if clipped:
        log.info("FP16: weights clipped to float16's range in %d places (e.g. %s)", len(clipped),
                 str(clipped[0].message).removeprefix(CLIPPED))
    onnx.checker.check_model(converted)
    atomic_write_bytes(output, converted.SerializeToString())
    return converted


def try_session(path: str | Path) -> tuple[bool, str]:
    """(True, "") when ONNX Runtime on the CPU can load and run ``path``; else (False, reason)."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in spec.shape]
        session.run(None, {spec.name: np.zeros(shape, np.float32)})
    except Exception as err:  # ORT raises several exception types for missing kernels
        return False, f"ONNX Runtime (CPU) cannot run the FP16 model: {str(err).splitlines()[0]}"
    return True, ""
