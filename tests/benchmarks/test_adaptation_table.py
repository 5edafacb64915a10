"""The results-table script: cells found by run (seed and machine type), paired differences, variant layout,
records that outlive the run folders (no training)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def adaptation(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("adaptation_script", REPO / "benchmarks" / "adaptation.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "machine_signature", lambda: "cpu A")
    return module


def _write(runs: Path, folder: str, seed: int, stage: str, miou: float) -> None:
    iou = [miou] * 19
    path = runs / folder / f"seed{seed}" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stages": {stage: {"miou": miou, "mpa": miou + 0.1, "pa": 0.9, "iou": iou,
                                                   "acc": iou, "seconds": 1.0}}}))


def _table(adaptation, seeds, command, layout):
    """What ``--table-only`` does: record the finished run folders, then build the table from the records."""
    adaptation.record_finished(layout)
    return adaptation.write_outputs(seeds, command, layout)


def test_paired_difference_uses_the_same_seed(adaptation, tmp_path):
    runs = tmp_path / "runs"
    source_only = {0: 0.20, 1: 0.30, 2: 0.25}
    cpsl = {0: 0.24, 1: 0.31}  # seed 2 not finished
    for seed, value in source_only.items():
        _write(runs, "shared", seed, "warmup", value)
    for seed, value in cpsl.items():
        _write(runs, "cpsl_paper", seed, "cpsl", value)

    table = _table(adaptation, [0, 1, 2], "cmd", adaptation.Layout("A"))

    row = table["cpsl_paper"]
    assert row["runs"] == ["0", "1"]
    differences = [100 * (cpsl[s] - source_only[s]) for s in (0, 1)]
    assert row["miou_minus_warmup"]["mean"] == pytest.approx(np.mean(differences))
    assert row["miou_minus_warmup"]["std"] == pytest.approx(np.std(differences, ddof=1))
    assert row["miou"]["mean"] == pytest.approx(100 * np.mean(list(cpsl.values())))
    assert table["source_only"]["miou_minus_warmup"]["mean"] == pytest.approx(0.0)
    assert "oracle" not in table
    markdown = (tmp_path / "results" / "adaptation.md").read_text()
    assert "| CPSL, preset paper | 27.5 ± 4.9 | +2.5 ± 2.1 |" in markdown


def test_variant_b_has_its_own_runs_data_and_table(adaptation, tmp_path):
    layout = adaptation.Layout("B")
    assert layout.runs == tmp_path / "runs" / "variant-B"
    assert "data.target_root=data/bench-B/target" in layout.overrides()
    oracle = adaptation.BY_NAME["oracle"]
    assert "data.source_root=data/bench-B/target" in oracle.settings(layout)
    assert "data.source_root=data/bench/target" in oracle.settings(adaptation.Layout("A"))
    _write(layout.runs, "shared", 0, "warmup", 0.3)
    _table(adaptation, [0], "cmd", layout)
    assert json.loads((tmp_path / "results" / "adaptation-B.json").read_text())["variant"] == "B"
    assert not (tmp_path / "results" / "adaptation.json").exists()


def test_cells_of_the_long_warmup_pair_with_the_long_source_only(adaptation, tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "shared", 0, "warmup", 0.25)
    _write(runs, "shared_6k", 0, "warmup", 0.40)
    _write(runs, "cpsl_paper_6k", 0, "cpsl", 0.43)
    _write(runs, "oracle", 0, "warmup", 0.60)

    table = _table(adaptation, [0], "cmd", adaptation.Layout("A"))

    assert table["cpsl_paper_6k"]["miou_minus_warmup"]["mean"] == pytest.approx(3.0)
    assert table["oracle"]["miou_minus_warmup"]["mean"] == pytest.approx(20.0)
    assert table["source_only_6k"]["miou"]["mean"] == pytest.approx(40.0)
    assert "warmup.iterations=6000" in table["oracle"]["settings"]
    assert "data.source=cityscapes" in table["oracle"]["settings"]


def test_cpsl_from_the_adversarial_warmup_pairs_with_it_and_the_warmup_with_source_only(adaptation, tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "shared", 0, "warmup", 0.28)
    _write(runs, "shared_adv", 0, "warmup", 0.32)
    _write(runs, "cpsl_paper_adv", 0, "cpsl", 0.37)

    table = _table(adaptation, [0], "cmd", adaptation.Layout("A"))

    assert table["warmup_adversarial"]["miou"]["mean"] == pytest.approx(32.0)
    assert table["warmup_adversarial"]["miou_minus_warmup"]["mean"] == pytest.approx(4.0)
    assert table["warmup_adversarial"]["paired_with"] == "source_only"
    assert table["cpsl_paper_adv"]["miou_minus_warmup"]["mean"] == pytest.approx(5.0)
    assert table["cpsl_paper_adv"]["paired_with"] == "warmup_adversarial"
    assert "warmup.mode=adversarial" in table["cpsl_paper_adv"]["settings"]


def test_comparisons_pair_two_cells_over_the_seeds_both_finished(adaptation, tmp_path):
    runs = tmp_path / "runs"
    cpsl = {0: 0.32, 1: 0.30, 2: 0.33}
    self_training = {0: 0.28, 1: 0.29}  # seed 2 not finished
    for seed in cpsl:
        _write(runs, "cpsl_paper", seed, "cpsl", cpsl[seed])
    for seed in self_training:
        _write(runs, "self_training", seed, "cpsl", self_training[seed])

    _table(adaptation, [0, 1, 2], "cmd", adaptation.Layout("A"))

    saved = json.loads((tmp_path / "results" / "adaptation.json").read_text())["differences"]
    assert [(d["cell"], d["minus"]) for d in saved] == [("cpsl_paper", "self_training")]
    assert saved[0]["runs"] == ["0", "1"]
    assert saved[0]["miou"]["values"] == pytest.approx([4.0, 1.0])
    markdown = (tmp_path / "results" / "adaptation.md").read_text()
    assert "| CPSL, preset paper - self-training only (w/o SL) | +2.5 ± 2.1 | +4.0, +1.0 | 2 |" in markdown


def test_partition_curves_average_the_seeds_step_by_step_and_pair_them(adaptation, tmp_path):
    runs = tmp_path / "runs"
    histories = {("cpsl_paper_long", 0): [(1000, 0.30, 0.40), (2000, 0.34, 0.42)],
                 ("cpsl_paper_long", 1): [(1000, 0.32, 0.44)],
                 ("equal_partition_long", 0): [(1000, 0.28, 0.46)]}
    for (cell, seed), entries in histories.items():
        path = runs / cell / f"seed{seed}" / "cpsl" / "eval_history.jsonl"
        path.parent.mkdir(parents=True)
        lines = [json.dumps({"step": step, "miou": 0.0, "mpa": 0.0}) for step, _, _ in entries[:1]]
        lines += [json.dumps({"step": step, "miou": miou, "mpa": mpa}) for step, miou, mpa in entries]
        path.write_text("\n".join(lines) + '\n{"step": 3000, "mi')  # the first step logged twice, a cut line
        _write(runs, cell, seed, "cpsl", entries[-1][1])
    _table(adaptation, [0, 1, 2], "cmd", adaptation.Layout("A"))
    record = json.loads((tmp_path / "results" / "adaptation.json").read_text())["partition_curves"]
    assert record["cpsl_paper_long"] == [
        {"step": 1000, "runs": ["0", "1"], "miou": pytest.approx(31.0), "mpa": pytest.approx(42.0),
         "miou_by_run": pytest.approx([30.0, 32.0]), "mpa_by_run": pytest.approx([40.0, 44.0])},
        {"step": 2000, "runs": ["0"], "miou": pytest.approx(34.0), "mpa": pytest.approx(42.0),
         "miou_by_run": pytest.approx([34.0]), "mpa_by_run": pytest.approx([42.0])}]
    assert record["equal_partition_long"][0]["runs"] == ["0"]
    # Paired by run: only seed 0 has both cells, at step 1000 only.
    assert record["equal - unequal"] == [
        {"step": 1000, "runs": ["0"], "miou": pytest.approx(-2.0), "mpa": pytest.approx(6.0),
         "miou_by_run": pytest.approx([-2.0]), "mpa_by_run": pytest.approx([6.0])}]
    assert (tmp_path / "results" / "adaptation-fig4.png").stat().st_size > 0


def test_the_table_outlives_its_run_folders_and_a_disagreeing_rerun_is_refused(adaptation, tmp_path):
    runs = tmp_path / "runs"
    layout = adaptation.Layout("A")
    _write(runs, "shared", 0, "warmup", 0.25)
    _write(runs, "cpsl_paper", 0, "cpsl", 0.31)
    history = runs / "cpsl_paper" / "seed0" / "cpsl" / "eval_history.jsonl"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps({"step": 1000, "miou": 0.31, "mpa": 0.41}) + "\n")
    before = _table(adaptation, [0], "cmd", layout)
    records = json.loads((tmp_path / "results" / "adaptation-cells.json").read_text())["cells"]
    history = records["cpsl_paper"]["0"]["history"]
    assert [(e["step"], e["miou"], e["mpa"]) for e in history] == [(1000, 0.31, 0.41)]
    assert records["cpsl_paper"]["0"]["recorded_from"].endswith("cpsl_paper/seed0")
    assert records["cpsl_paper"]["0"]["rare_miou"] == pytest.approx(0.31)

    shutil.rmtree(runs)  # a new machine: the scratch folder is gone, the records are in the repository
    assert _table(adaptation, [0], "cmd", layout) == before

    _write(runs, "shared", 0, "warmup", 0.25)  # the same warm-up rebuilt: agrees with its record
    _write(runs, "cpsl_paper", 0, "cpsl", 0.30)  # a re-run that does not reproduce
    with pytest.raises(adaptation.RecordMismatch,
                       match=r"cpsl_paper seed 0 on machine m0 scores mIoU 30.0000, but .* records 31.0000"):
        adaptation.record_finished(layout)


def test_a_scores_only_record_is_completed_by_a_run_that_reproduces_it(adaptation, tmp_path):
    layout = adaptation.Layout("A")
    seed0 = adaptation.Replicate("m0", 0)
    adaptation.write_records({"source_only": {seed0: {"miou": 0.25, "mpa": 0.35, "rare_miou": 0.1,
                                                      "history": [], "recorded_from": "an earlier table"}}},
                             layout)
    _write(tmp_path / "runs", "shared", 0, "warmup", 0.25)
    adaptation.record_finished(layout)
    record = adaptation.read_records(layout)["source_only"][seed0]
    assert record["iou"] == [0.25] * 19
    assert record["recorded_from"].endswith("shared/seed0")


def test_runs_of_another_machine_type_are_recorded_beside_and_paired_only_with_their_own(
        adaptation, tmp_path, monkeypatch):
    runs, layout = tmp_path / "runs", adaptation.Layout("A")
    _write(runs, "shared", 0, "warmup", 0.25)
    _write(runs, "cpsl_paper", 0, "cpsl", 0.31)
    _table(adaptation, [0], "cmd", layout)
    shutil.rmtree(runs)

    monkeypatch.setattr(adaptation, "machine_signature", lambda: "cpu B")  # another CPU: another warm-up
    _write(runs, "shared", 0, "warmup", 0.27)
    _write(runs, "wo_st", 0, "cpsl", 0.30)
    table = _table(adaptation, [0], "cmd", layout)

    saved = json.loads((tmp_path / "results" / "adaptation-cells.json").read_text())
    assert saved["machines"]["m0"]["signature"] == "cpu A" and saved["machines"]["m1"]["signature"] == "cpu B"
    assert set(saved["cells"]["source_only"]) == {"0", "0@m1"}
    assert table["source_only"]["runs"] == ["0", "0@m1"]
    assert table["cpsl_paper"]["miou_minus_warmup"]["values"] == pytest.approx([6.0])  # its own warm-up only
    assert table["wo_st"]["miou_minus_warmup"]["values"] == pytest.approx([3.0])
    differences = json.loads((tmp_path / "results" / "adaptation.json").read_text())["differences"]
    assert not [d for d in differences if d["cell"] == "wo_st"]  # w/o ST (m1) has no full CPSL of m1
    assert "m0: cpu A; m1: cpu B" in (tmp_path / "results" / "adaptation.md").read_text()
    assert adaptation.this_machine(layout) == "m1"


def test_an_unrecorded_machine_is_recognised_by_a_warmup_that_reproduces_its_record(adaptation, tmp_path):
    layout = adaptation.Layout("A")
    legacy = {"miou": 0.25, "mpa": 0.35, "rare_miou": 0.1, "history": [], "recorded_from": "an earlier table"}
    adaptation.write_records({"source_only": {adaptation.Replicate("m0", 0): legacy}}, layout)
    _write(tmp_path / "runs", "cpsl_paper", 0, "cpsl", 0.31)  # recorded after the warm-up identified m0
    _write(tmp_path / "runs", "shared", 0, "warmup", 0.25)
    adaptation.record_finished(layout)
    saved = json.loads((tmp_path / "results" / "adaptation-cells.json").read_text())
    assert list(saved["machines"]) == ["m0"] and saved["machines"]["m0"]["signature"] == "cpu A"
    assert "source_only seed 0 reproduced its record" in saved["machines"]["m0"]["note"]
    assert set(saved["cells"]["cpsl_paper"]) == {"0"}


def test_an_unrecorded_machine_is_not_assumed_when_the_warmup_differs(adaptation, tmp_path):
    layout = adaptation.Layout("A")
    legacy = {"miou": 0.25, "mpa": 0.35, "rare_miou": 0.1, "history": [], "recorded_from": "an earlier table"}
    adaptation.write_records({"source_only": {adaptation.Replicate("m0", 0): legacy}}, layout)
    _write(tmp_path / "runs", "shared", 0, "warmup", 0.26)
    adaptation.record_finished(layout)  # no RecordMismatch: another machine's run, not a failed rerun
    saved = json.loads((tmp_path / "results" / "adaptation-cells.json").read_text())
    assert saved["machines"]["m0"]["signature"] is None
    assert saved["machines"]["m1"]["signature"] == "cpu A"
    assert saved["cells"]["source_only"]["0"]["miou"] == 0.25
    assert saved["cells"]["source_only"]["0@m1"]["miou"] == 0.26


def test_machine_flag_names_the_recorded_type_or_says_it_is_not_recorded(adaptation, tmp_path, monkeypatch,
                                                                           capsys):
    _write(tmp_path / "runs", "shared", 0, "warmup", 0.25)
    adaptation.record_finished(adaptation.Layout("A"))  # the first record names this CPU m0
    assert adaptation.main(["--machine"]) == 0
    assert capsys.readouterr().out.startswith("m0: cpu A (its runs are keyed <seed>)")
    monkeypatch.setattr(adaptation, "machine_signature", lambda: "cpu B")
    adaptation.main(["--machine"])
    assert capsys.readouterr().out.startswith("not in the records: cpu B.")
    assert not (tmp_path / "results" / "adaptation.md").exists()  # it only reports
    shutil.rmtree(tmp_path / "runs")
    _write(tmp_path / "runs", "shared", 0, "warmup", 0.27)  # cpu B's own warm-up names it m1
    adaptation.record_finished(adaptation.Layout("A"))
    adaptation.main(["--machine"])
    assert capsys.readouterr().out.startswith("m1: cpu B (its runs are keyed <seed>@m1)")


def test_cells_train_on_one_thread_whatever_the_callers_environment(adaptation, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(adaptation.subprocess, "run", lambda command, **kwargs: calls.append(kwargs["env"]))
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    adaptation.run_train_process(Path("config.json"), [], tmp_path / "run", "warmup", tmp_path / "run.log")
    assert calls[0]["TF_NUM_INTRAOP_THREADS"] == "1" and calls[0]["TF_NUM_INTEROP_THREADS"] == "1"
    assert calls[0]["PATH"] == adaptation.os.environ["PATH"]  # the rest of the environment is passed on
