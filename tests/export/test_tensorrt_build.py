"""TensorRT: plans per generation, calibrator batching, trtexec lines, build_engine.sh; GPU parts skip."""

from __future__ import annotations

import importlib.util
import subprocess

import numpy as np
import pytest

from cpsl_tf.export.tensorrt_build import (
    TENSORRT_UNAVAILABLE,
    CalibrationBatcher,
    EngineSpec,
    build_engine_script,
    build_plan,
    import_tensorrt,
    trtexec_benchmark_command,
    trtexec_build_command,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def spec(**kwargs):
    return EngineSpec(onnx="model.onnx", engine="m.engine", height=64, width=128, **kwargs)


def test_weakly_typed_generations_use_flags_and_a_calibrator():
    assert build_plan(spec(precision="fp16"), 8) == {
        "network_flags": ["EXPLICIT_BATCH"], "builder_flags": ["FP16"], "calibrator": False,
        "strongly_typed": False}
    plan = build_plan(spec(precision="int8"), 10)
    assert plan["network_flags"] == [] and plan["builder_flags"] == ["INT8", "FP16"] and plan["calibrator"]


def test_tensorrt_11_is_strongly_typed_without_precision_flags():
    for precision in ("fp16", "int8"):
        plan = build_plan(spec(precision=precision, strongly_typed=True), 11)
        assert plan == {"network_flags": [], "builder_flags": [], "calibrator": False, "strongly_typed": True}
    assert build_plan(spec(precision="int8", strongly_typed=True), 10)["network_flags"] == ["STRONGLY_TYPED"]
    with pytest.raises(ValueError, match="8.6 has no strongly typed"):
        build_plan(spec(precision="fp16", strongly_typed=True), 8)
    with pytest.raises(ValueError, match="precision"):
        build_plan(spec(precision="int4"), 10)


def test_calibration_batches_have_a_fixed_size_and_layout():
    seen = []

    def load(chunk):
        seen.append(list(chunk))
        return np.stack([np.full((64, 128, 3), value, np.float32) for value in chunk])

    batches = list(CalibrationBatcher(list(range(7)), 3, load, layout="nchw"))
    assert [b.shape for b in batches] == [(3, 3, 64, 128)] * 2  # the partial last batch is dropped
    assert seen == [[0, 1, 2], [3, 4, 5]] and batches[1][2, 0, 0, 0] == 5
    assert all(b.flags["C_CONTIGUOUS"] and b.dtype == np.float32 for b in batches)
    padded = list(CalibrationBatcher([7, 8], 4, load))
    assert len(padded) == 1 and seen[-1] == [7, 8, 7, 8]
    with pytest.raises(ValueError, match="at least one"):
        CalibrationBatcher([], 2, load)


def test_trtexec_lines_for_both_generations():
    int8 = spec(precision="int8")
    line = trtexec_build_command(int8, "8.6/10")
    assert "--int8" in line and "--calib=calibration.cache" in line
    assert "--minShapes=image:1x64x128x3" in line and "--maxShapes=image:4x64x128x3" in line
    assert "--timingCacheFile=timing.cache" in line
    typed = trtexec_build_command(spec(precision="int8", strongly_typed=True), "11")
    assert not {"--int8", "--fp16"} & set(typed)
    nchw = trtexec_build_command(spec(precision="fp16", layout="nchw"), "8.6/10")
    assert "--fp16" in nchw and "--optShapes=image:1x3x64x128" in nchw
    bench = trtexec_benchmark_command(int8)
    for flag in ("--useCudaGraph", "--noDataTransfers", "--separateProfileRun", "--loadEngine=m.engine"):
        assert flag in bench


def test_build_engine_script_is_valid_bash(tmp_path):
    text = build_engine_script([spec(precision="fp16"), spec(precision="fp16", strongly_typed=True)])
    path = tmp_path / "build_engine.sh"
    path.write_text(text)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    eleven, older = text.split("then", 1)[1].split("else", 1)
    assert "--fp16" not in eleven and "--fp16" in older


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed")
def test_missing_tensorrt_gives_a_clear_message():
    with pytest.raises(RuntimeError, match="NVIDIA GPU"):
        import_tensorrt()


@pytest.mark.skipif(not HAS_TENSORRT, reason=TENSORRT_UNAVAILABLE)
def test_engine_build_and_run(tmp_path, tiny_model):  # pragma: no cover - GPU host only
    from cpsl_tf.export.onnx_export import export_onnx
    from cpsl_tf.export.tensorrt_build import EngineSession, build_engine

    model, _ = tiny_model
    export_onnx(model, tmp_path / "model.onnx", height=64, width=128, output="logits")
    engine_spec = EngineSpec(onnx=str(tmp_path / "model.onnx"), engine=str(tmp_path / "m.engine"),
                             precision="fp32", height=64, width=128,
                             timing_cache=str(tmp_path / "timing.cache"))
    info = build_engine(engine_spec)
    assert info["tensorrt_version"] and info["gpu"]
    out = EngineSession(engine_spec.engine).run(np.zeros((2, 64, 128, 3), np.float32))
    assert out["logits"].shape[:3] == (2, 64, 128)
