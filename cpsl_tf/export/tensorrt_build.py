"""TensorRT engines from the exported ONNX, for TensorRT 8.6 / 10 and TensorRT 11.

* TensorRT 8.6 / 10 (weakly typed): FP16 with ``BuilderFlag.FP16``; INT8 with ``BuilderFlag.INT8`` and an
  ``IInt8EntropyCalibrator2`` fed by target training images, with a calibration cache. TensorRT 8.6 still
  needs ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (ignored, then removed, from 10 on).
* TensorRT 11 (always strongly typed): the precision flags and implicit calibration are gone; FP16 comes
  from the FP16 ONNX and INT8 from the Q/DQ ONNX. On TensorRT 10 the same path is available with
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.

Both: one optimisation profile for the dynamic batch (fixed height/width), a timing cache, a memory-pool
limit, ``build_serialized_network``, and an engine manifest with TensorRT version, GPU and precision.
``EngineSession`` runs an engine with the TensorRT 10+ tensor-address API (``set_tensor_address``,
``execute_async_v3``) and cuda-python; ``trtexec_*`` give the equivalent command lines.

``tensorrt`` is imported lazily: its wheels come from NVIDIA's index and need an NVIDIA GPU.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TENSORRT_UNAVAILABLE = "TensorRT needs an NVIDIA GPU and NVIDIA's wheel; not available here"
INSTALL_HINT = ("install it on the GPU host from NVIDIA's index: pip install --extra-index-url "
                "https://pypi.nvidia.com tensorrt-cu12 (see export/README.md)")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as err:
        raise RuntimeError(f"{TENSORRT_UNAVAILABLE}: `import tensorrt` failed ({err}); "
                           f"{INSTALL_HINT}") from err
    return tensorrt


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` in 12.x+, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise RuntimeError("running or calibrating TensorRT engines needs cuda-python "
                               "(pip install cuda-python)") from err
    return cudart


def major_version(version: str) -> int:
    return int(str(version).split(".")[0])


@dataclass
class EngineSpec:
    """What to build: ONNX in, engine out, precision, shapes and caches."""

    onnx: str
    engine: str
    precision: str = "fp16"  # fp32 | fp16 | int8
    input_name: str = "image"
    layout: str = "nhwc"
    height: int = 1024
    width: int = 2048
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 4
    workspace_mib: int = 4096
    timing_cache: str = "timing.cache"
    calibration_cache: str = "calibration.cache"
    # The ONNX already carries the precision (FP16 graph or Q/DQ INT8): build strongly typed.
    strongly_typed: bool = False
    notes: list[str] = field(default_factory=list)

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.layout == "nchw":
            return (batch, 3, self.height, self.width)
        return (batch, self.height, self.width, 3)


def build_plan(spec: EngineSpec, trt_major: int) -> dict:
    """Which network flags, builder flags and calibrator a build uses for this TensorRT generation."""
    if spec.precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {spec.precision!r}")
    if trt_major < 8:
        raise ValueError(f"TensorRT {trt_major} is not supported (8.6, 10 and 11 are)")
    strongly_typed = spec.strongly_typed or trt_major >= 11
    network_flags = []
    if trt_major < 10:
        network_flags.append("EXPLICIT_BATCH")
    if strongly_typed and trt_major in (9, 10):
        network_flags.append("STRONGLY_TYPED")
    builder_flags: list[str] = []
    calibrator = False
    if not strongly_typed:
        if spec.precision == "fp16":
            builder_flags.append("FP16")
        elif spec.precision == "int8":
            builder_flags += ["INT8", "FP16"]
            calibrator = True
    elif trt_major < 9 and spec.precision != "fp32":
        raise ValueError("TensorRT 8.6 has no strongly typed networks; build FP16/INT8 with the flags "
                         "(strongly_typed=False) from the float32 ONNX")
    return {"network_flags": network_flags, "builder_flags": builder_flags, "calibrator": calibrator,
            "strongly_typed": strongly_typed}


class CalibrationBatcher:
    """Fixed-size float32 batches for the INT8 calibrator (TensorRT wants every batch the same size).

    ``load_batch(samples)`` returns the preprocessed (N, H, W, 3) batch; a final partial batch is dropped
    unless it is the only one, in which case it is padded by repeating its images.
    """

    def __init__(self, samples: Sequence, batch_size: int, load_batch, layout: str = "nhwc"):
        if batch_size < 1:
            raise ValueError(f"calibration batch size must be at least 1, got {batch_size}")
        if not samples:
            raise ValueError("INT8 calibration needs at least one target training image")
        self.samples = list(samples)
        self.batch_size = batch_size
        self.load_batch = load_batch
        self.layout = layout

    def __len__(self) -> int:
        return max(1, len(self.samples) // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            chunk = self.samples[index * self.batch_size:(index + 1) * self.batch_size]
            while len(chunk) < self.batch_size:
                chunk = chunk + chunk[: self.batch_size - len(chunk)]
            batch = np.asarray(self.load_batch(chunk), dtype=np.float32)
            if self.layout == "nchw":
                batch = batch.transpose(0, 3, 1, 2)
            yield np.ascontiguousarray(batch)


def read_cache(path: str | Path) -> bytes | None:
    path = Path(path)
    return path.read_bytes() if path.is_file() else None


def write_cache(path: str | Path, data) -> None:
    from cpsl_tf.io_utils import atomic_write_bytes

    atomic_write_bytes(path, bytes(data))


def make_entropy_calibrator(trt, batcher: CalibrationBatcher | None, cache_path: str | Path):
    """An ``IInt8EntropyCalibrator2`` (TensorRT 8.6 / 10) over ``batcher`` with a calibration cache.

    TensorRT asks ``read_calibration_cache`` first; with a cache ``batcher`` may be None.
    """
    cudart = import_cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batcher) if batcher is not None else iter(())
            self.device = None

        def get_batch_size(self):
            return batcher.batch_size if batcher is not None else 1

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            if self.device is None:
                self.device = _check(cudart.cudaMalloc(batch.nbytes))
            _check(cudart.cudaMemcpy(self.device, batch.ctypes.data, batch.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device)]

        def read_calibration_cache(self):
            return read_cache(cache_path)

        def write_calibration_cache(self, cache):
            write_cache(cache_path, cache)

    return EntropyCalibrator()


def _check(result):
    """Unpack a cuda-python ``(error, value...)`` tuple, raising on errors."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else values or None


def gpu_name() -> str:
    cudart = import_cudart()
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name
    return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def build_engine(spec: EngineSpec, calibration: CalibrationBatcher | None = None) -> dict:
    """Build and write ``spec.engine``; return the engine manifest entries."""
    trt = import_tensorrt()
    major = major_version(trt.__version__)
    plan = build_plan(spec, major)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan["network_flags"]:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{spec.onnx}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    for name in plan["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, spec.shape(spec.min_batch), spec.shape(spec.opt_batch),
                      spec.shape(spec.max_batch))
    config.add_optimization_profile(profile)
    if plan["calibrator"]:
        if calibration is None and read_cache(spec.calibration_cache) is None:
            raise ValueError("an INT8 build on TensorRT 8.6/10 needs calibration images or a "
                             "calibration cache")
        config.int8_calibrator = make_entropy_calibrator(trt, calibration, spec.calibration_cache)
        config.set_calibration_profile(profile)
    cache = config.create_timing_cache(read_cache(spec.timing_cache) or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {spec.engine} (see the log above)")
    from cpsl_tf.io_utils import atomic_write_bytes

    atomic_write_bytes(spec.engine, bytes(serialized))
    write_cache(spec.timing_cache, config.get_timing_cache().serialize())
    return {"tensorrt_version": trt.__version__, "gpu": gpu_name(), "precision": spec.precision,
            "build": {**plan, **asdict(spec)},
            "trtexec_build": trtexec_build_command(spec, "11" if major >= 11 else "8.6/10"),
            "trtexec_benchmark": trtexec_benchmark_command(spec)}


class EngineSession:
    """Run a serialized engine: TensorRT 10+ tensor-address API with cuda-python buffers."""

    def __init__(self, path: str | Path):
        trt = import_tensorrt()
        if major_version(trt.__version__) < 10:
            raise RuntimeError("EngineSession uses the TensorRT 10+ tensor-address API "
                               f"(found TensorRT {trt.__version__}); run 8.6 engines with trtexec")
        self.trt = trt
        self.cudart = import_cudart()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: not an engine for this TensorRT version and GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = _check(self.cudart.cudaStreamCreate())

    def run(self, batch: np.ndarray) -> dict:
        trt, cudart = self.trt, self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        name = self.inputs[0]
        self.context.set_input_shape(name, batch.shape)
        buffers = [_check(cudart.cudaMalloc(batch.nbytes))]
        try:
            _check(cudart.cudaMemcpyAsync(buffers[0], batch.ctypes.data, batch.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, int(buffers[0]))
            results = {}
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                results[out] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(out)))
                buffers.append(_check(cudart.cudaMalloc(max(1, results[out].nbytes))))
                self.context.set_tensor_address(out, int(buffers[-1]))
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for out, device in zip(self.outputs, buffers[1:]):
                host = results[out]
                _check(cudart.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, d2h, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
            return results
        finally:
            for device in buffers:
                cudart.cudaFree(device)


def _shape_arg(spec: EngineSpec, batch: int) -> str:
    return f"{spec.input_name}:" + "x".join(str(d) for d in spec.shape(batch))


def trtexec_build_command(spec: EngineSpec, generation: str) -> list[str]:
    """``trtexec`` building the same engine: ``generation`` is "8.6/10" (flags) or "11" (strongly typed)."""
    if generation not in ("8.6/10", "11"):
        raise ValueError(f"generation must be '8.6/10' or '11', got {generation!r}")
    command = ["trtexec", f"--onnx={spec.onnx}", f"--saveEngine={spec.engine}",
               f"--minShapes={_shape_arg(spec, spec.min_batch)}",
               f"--optShapes={_shape_arg(spec, spec.opt_batch)}",
               f"--maxShapes={_shape_arg(spec, spec.max_batch)}",
               f"--memPoolSize=workspace:{spec.workspace_mib}M",
               f"--timingCacheFile={spec.timing_cache}"]
    if generation == "8.6/10" and not spec.strongly_typed:
        if spec.precision == "fp16":
            command.append("--fp16")
        elif spec.precision == "int8":
            # trtexec cannot calibrate: it reads the cache written by the Python build (build_engine).
            command += ["--int8", "--fp16", f"--calib={spec.calibration_cache}"]
    elif generation == "8.6/10":
        command.append("--stronglyTyped")
    return command


def trtexec_benchmark_command(spec: EngineSpec, batch: int | None = None, iterations: int = 200) -> list[str]:
    """``trtexec`` timing an engine: GPU compute median/p99 and throughput, without host transfers."""
    return ["trtexec", f"--loadEngine={spec.engine}", f"--shapes={_shape_arg(spec, batch or spec.opt_batch)}",
            "--useCudaGraph", "--noDataTransfers", "--separateProfileRun", f"--iterations={iterations}",
            "--percentile=50,99", "--warmUp=500"]


def shell(command: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def build_engine_script(specs: Sequence[EngineSpec]) -> str:
    """``build_engine.sh``: the trtexec commands for both TensorRT generations, picked at run time."""
    lines = [
        "#!/usr/bin/env bash",
        "# Build TensorRT engines from the exported ONNX on the target GPU (engines are specific to the",
        "# GPU and the TensorRT version). Generated by scripts/export.py; see export/README.md.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRT_MAJOR="${TRT_MAJOR:-$(trtexec 2>&1 | sed -n \'s/.*TensorRT version: *\\([0-9]*\\).*/\\1/p\' '
        '| head -n1)}"',
        'echo "TensorRT major version: ${TRT_MAJOR:-unknown}"',
        'if [ "${TRT_MAJOR:-10}" -ge 11 ]; then',
    ]
    for spec in specs:
        if spec.precision == "fp32" or spec.strongly_typed:
            lines.append("  " + shell(trtexec_build_command(spec, "11")))
    lines.append("else")
    for spec in specs:
        if not spec.strongly_typed:
            lines.append("  " + shell(trtexec_build_command(spec, "8.6/10")))
    lines += ["fi", "", "# Benchmark (GPU compute median / p99, throughput):"]
    lines += ["# " + shell(trtexec_benchmark_command(spec)) for spec in specs]
    return "\n".join(lines) + "\n"
