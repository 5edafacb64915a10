"""The marginal-drift table: distances to the ground truth and vanished classes (no model run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("marginal_drift", REPO / "benchmarks" / "marginal_drift.py")
marginal_drift = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(marginal_drift)


def _run(name: str, start, end, iou_change=None) -> dict:
    return {"run": f"runs/{name}", "variant": "B", "names": ["road", "light", "car"], "start": start,
            "end": end, "ground_truth": [0.5, 0.25, 0.25], "iou_change": iou_change}


def test_distances_to_the_ground_truth_and_the_vanished_classes():
    # start: |0.6-0.5| + |0.2-0.25| + |0.2-0.25| = 0.2 -> 0.1; end: 0.4 + 0.25 + 0.15 = 0.8 -> 0.4.
    s = marginal_drift.summary(_run("cpsl/seed0", [0.6, 0.2, 0.2], [0.9, 0.0001, 0.0999]))
    assert abs(s["start_to_truth"] - 0.1) < 1e-12
    assert abs(s["end_to_truth"] - 0.4) < 1e-12
    assert abs(s["moved"] - 0.3) < 1e-12
    assert s["vanished"] == ["light"]


def test_a_class_already_absent_at_the_start_has_not_vanished():
    assert marginal_drift.summary(_run("x/seed0", [0.6, 0.0, 0.4], [0.6, 0.0, 0.4]))["vanished"] == []


def test_markdown_groups_runs_by_cell_and_means_their_shares():
    runs = [_run("cpsl/seed0", [0.6, 0.2, 0.2], [0.9, 0.0001, 0.0999], [0.01, -0.1, 0.02]),
            _run("cpsl/seed1", [0.4, 0.3, 0.3], [0.5, 0.2, 0.3], [0.0, -0.05, 0.03])]
    text = marginal_drift.markdown(runs, "cmd")
    assert "| cpsl/seed0 | B | 10.0 | 40.0 | 30.0 | light |" in text
    assert "| cpsl/seed1 | B | 10.0 | 5.0 | 10.0 | - |" in text
    assert "Variant B, `cpsl` (2 runs)" in text
    # light: ground truth 25, start (20 + 30) / 2 = 25, end (0.01 + 20) / 2 = 10.005, ratio 0.40.
    assert "| light | 25.0 | 25.0 | 10.0 | 0.40 | -10.0, -5.0 |" in text


def test_a_run_without_a_finished_cpsl_stage_is_refused(tmp_path, capsys):
    assert marginal_drift.main(["--runs", str(tmp_path), "--out", str(tmp_path / "out.json")]) == 2
    assert "no finished CPSL stage" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_a_run_folder_without_its_config_gets_one_message(tmp_path, capsys):
    import numpy as np

    (tmp_path / "cpsl").mkdir()
    np.savez(tmp_path / "cpsl" / "self_labeling.npz", delta_start=np.full(19, 1 / 19),
             delta_pseudo=np.full(19, 1 / 19))
    assert marginal_drift.main(["--runs", str(tmp_path), "--out", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json" in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()
