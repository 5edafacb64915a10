"""The deployment budget's bookkeeping (no training, no export): artefacts, ratios, paired differences,
goals, and the trtexec summary line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def budget(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("deployment_budget_script",
                                                  REPO / "benchmarks" / "deployment_budget.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _values():
    miou = {"teacher": (0.30, 0.32), "distilled": (0.31, 0.33), "student": (0.28, 0.29)}
    values = {}
    for network, per_seed in miou.items():
        for seed, value in enumerate(per_seed):
            values[f"accuracy/{network}/seed{seed}"] = {
                "float32": {"miou": value}, "float16": {"miou": value},
                "int8": {"miou": value - (0.02 if network == "student" else 0.005)}}
    latency = {("teacher", "1024x2048"): 20000.0, ("teacher", "512x1024"): 5000.0,
               ("student", "1024x2048"): 400.0, ("student", "512x1024"): 100.0}
    for (network, tag), ms in latency.items():
        values[f"cost/{network}/{tag}/gflops"] = 4350.0 if network == "teacher" else 19.1
        for precision, factor in (("float32", 1.0), ("float16", 3.0), ("int8", 1.5)):
            values[f"cost/{network}/{tag}/{precision}"] = {"file_bytes": 1000,
                                                          "ort": {"median_ms": ms * factor}}
    values["cost/teacher/params"], values["cost/student/params"] = 65_000_000, 3_200_000
    return values


def test_artefacts_ratios_and_goals(budget):
    result = budget.summarise(_values(), {"gpu": False, "gpu_note": "no GPU here"})
    by = {(a["network"], a["precision"]): a for a in result["artefacts"]}
    assert len(by) == 6
    student = by[("student", "float32")]
    assert student["miou"] == pytest.approx(0.285) and student["params"] == 3_200_000
    assert student["ort_latency_ratio"] == {"1024x2048": pytest.approx(0.02), "512x1024": pytest.approx(0.02)}
    assert by[("teacher", "float16")]["ort_latency_ratio"]["512x1024"] == pytest.approx(3.0)
    assert by[("teacher", "float32")]["ort_latency_ratio"]["1024x2048"] == pytest.approx(1.0)
    pairs = result["comparisons"]
    assert pairs["student_minus_teacher"]["per_seed_points"] == pytest.approx([-2.0, -3.0])
    assert pairs["student_minus_distilled"]["mean_points"] == pytest.approx(-3.5)
    assert pairs["student_int8_minus_float32"]["mean_points"] == pytest.approx(-2.0)
    goals = result["goals"]
    assert goals["student_keeps_of_teacher_miou"]["value"] == pytest.approx(0.285 / 0.31)
    assert goals["student_keeps_of_teacher_miou"]["holds"] is True
    assert goals["student_latency_of_teacher_at_1024x2048"]["holds"] is True
    assert goals["student_int8_miou_drop_points"]["value"] == pytest.approx(2.0)
    assert goals["student_int8_miou_drop_points"]["holds"] is False
    result.update(command="python benchmarks/deployment_budget.py", machine={"cpus": 2})
    table = budget.markdown(result)
    assert "| student | int8 | 26.5 ± 0.7 (2 seeds) | 3.20 M |" in table
    assert "does not hold" in table and "no GPU here" in table


def test_missing_cells_are_not_measured(budget):
    result = budget.summarise({}, {"gpu": False, "gpu_note": "no GPU here"})
    assert all(goal["holds"] is None for goal in result["goals"].values())
    assert all(a["miou"] is None and a["ort_latency_ratio"]["1024x2048"] is None for a in result["artefacts"])


def test_trtexec_summary_is_read(budget):
    output = ("[I] Latency: min = 9.11 ms, max = 11.74 ms, mean = 9.81 ms, median = 9.76 ms\n"
              "[I] GPU Compute Time: min = 7.54407 ms, max = 10.1723 ms, mean = 8.23978 ms, "
              "median = 8.19409 ms, percentile(50%) = 8.19409 ms, percentile(99%) = 9.90002 ms\n")
    assert budget.parse_gpu_compute(output) == {"median_ms": 8.19409, "p99_ms": 9.90002}
    with pytest.raises(ValueError, match="GPU Compute Time"):
        budget.parse_gpu_compute("[I] Throughput: 120 qps\n")


def test_trtexec_columns_appear_when_measured(budget):
    values = _values()
    values["cost/student/1024x2048/int8/trtexec"] = {"median_ms": 4.25, "p99_ms": 4.9}
    result = budget.summarise(values, {"gpu": True, "gpu_note": "NVIDIA A10"})
    result.update(command="python benchmarks/deployment_budget.py", machine={"cpus": 2})
    table = budget.markdown(result)
    assert "TensorRT median / p99 ms 1024x2048" in table
    student_int8 = next(line for line in table.splitlines() if line.startswith("| student | int8 |"))
    assert student_int8.endswith("| 4.25 / 4.90 | n/a / n/a |")
