#!/usr/bin/env bash
# Template of the build_engine.sh that scripts/export.py writes beside each export (with the real sizes).
# Run it inside an export folder on the target GPU; engines are specific to the GPU and TensorRT version.
set -euo pipefail
cd "${1:-.}"
H="${H:-1024}"; W="${W:-2048}"; MAXB="${MAXB:-4}"
SHAPES="--minShapes=image:1x${H}x${W}x3 --optShapes=image:1x${H}x${W}x3 --maxShapes=image:${MAXB}x${H}x${W}x3"
COMMON="--memPoolSize=workspace:4096M --timingCacheFile=timing.cache"
TRT_MAJOR="${TRT_MAJOR:-$(trtexec 2>&1 | sed -n 's/.*TensorRT version: *\([0-9]*\).*/\1/p' | head -n1)}"
if [ "${TRT_MAJOR:-10}" -ge 11 ]; then
  # TensorRT 11: strongly typed only; precision comes from the ONNX.
  trtexec --onnx=model_fp16.onnx --saveEngine=model_fp16_typed.engine $SHAPES $COMMON
  trtexec --onnx=model_int8.onnx --saveEngine=model_int8_qdq.engine $SHAPES $COMMON
else
  # TensorRT 8.6 / 10: precision flags; INT8 reads the calibration cache written by the Python build.
  trtexec --onnx=model.onnx --saveEngine=model_fp16.engine $SHAPES $COMMON --fp16
  if [ -f calibration.cache ]; then
    trtexec --onnx=model.onnx --saveEngine=model_int8.engine $SHAPES $COMMON --int8 --fp16 --calib=calibration.cache
  fi
  if [ -f model_int8.onnx ]; then
    trtexec --onnx=model_int8.onnx --saveEngine=model_int8_qdq.engine $SHAPES $COMMON --int8 --fp16
  fi
fi
# Benchmark: trtexec --loadEngine=model_fp16.engine --shapes=image:1x${H}x${W}x3 \
#   --useCudaGraph --noDataTransfers --separateProfileRun --iterations=200 --percentile=50,99
