"""The run's own bookkeeping is read, not trusted (issue 15): a damaged ``done.json`` or ``results.json`` is
moved aside with a warning and the stages it vouched for run again, and the temporaries of writes an
earlier run left when it was killed are removed when a stage starts. The stages are stand-ins here: only
the runner's bookkeeping is under test."""

from __future__ import annotations

import json
import os
import time

import pytest

from cpsl_tf.training import stages
from cpsl_tf.training.cli import main
from cpsl_tf.training.leftovers import remove_leftovers
from tests.conftest import REPO

BENCH = REPO / "configs" / "bench.json"
SCORES = {"miou": 0.5, "mpa": 0.5, "pa": 0.5, "iou": [], "acc": []}


@pytest.fixture
def stand_in(monkeypatch) -> list[str]:
    """Replace every stage by one that writes empty outputs and scores warmup and cpsl; returns the list
    of stages run, in order."""
    ran = []

    def run(ctx, stage):
        for path in ctx.layout.stage(stage).outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        ran.append(stage)
        return dict(SCORES) if stage in ("warmup", "cpsl") else None

    monkeypatch.setattr(stages, "_run_stage", run)
    return ran


def train(run, capsys, *args) -> str:
    code = main(["--config", str(BENCH), "--run-dir", str(run), *args])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("content", [b'{"fingerprint": "12', b"[1, 2]", b"\x00\xff\xfe"],
                         ids=["truncated", "a-list", "binary"])
def test_a_damaged_done_json_is_set_aside_and_its_stage_runs_again(stand_in, tmp_path, capsys, caplog,
                                                                   content):
    run = tmp_path / "run"
    train(run, capsys)
    (run / "cpsl" / "done.json").write_bytes(content)
    stand_in.clear()
    train(run, capsys)
    assert stand_in == ["cpsl", "distill1", "distill2"]
    assert f"{run / 'cpsl' / 'done.json'} is damaged" in caplog.text
    assert "stage cpsl runs again" in caplog.text
    assert (run / "cpsl" / "done.json.damaged").read_bytes() == content
    assert json.loads((run / "cpsl" / "done.json").read_text())["fingerprint"]


@pytest.mark.parametrize("content", ["{\"stages\": {\"warmup\"", "[]", "{\"stages\": 3}"])
def test_a_damaged_results_json_is_set_aside_and_the_scored_stages_run_again(stand_in, tmp_path, capsys,
                                                                            caplog, content):
    run = tmp_path / "run"
    train(run, capsys)
    (run / "results.json").write_text(content)
    stand_in.clear()
    train(run, capsys)
    # warmup's scores were lost: it runs again, and so does every stage after it, on its new outputs.
    assert stand_in == list(stages.STAGES)
    assert f"{run / 'results.json'} is damaged" in caplog.text
    assert (run / "results.json.damaged").read_text() == content
    assert set(json.loads((run / "results.json").read_text())["stages"]) == {"warmup", "cpsl"}


def test_a_finished_stage_whose_scores_are_missing_runs_again(stand_in, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    train(run, capsys)
    results = json.loads((run / "results.json").read_text())
    del results["stages"]["cpsl"]
    (run / "results.json").write_text(json.dumps(results))
    stand_in.clear()
    train(run, capsys)
    assert stand_in == ["cpsl", "distill1", "distill2"]
    assert "its scores are missing" in caplog.text


LEFTOVERS = (".results.json.k2j3.tmp.json", "warmup/.model.weights.h5.a8x1.tmp.weights.h5",
             "warmup/.done.json.0q9w.tmp.json", "warmup/checkpoints/checkpoint.tmp3f2a9c",
             "warmup/checkpoints/ckpt-4_temp/part-00000-of-00001.index",
             "warmup/.worker_1_checkpoints/ckpt-4.index", "pseudo/soft/.shard-ab12-00000.bin.x1.tmp.bin")
KEPT = ("warmup/checkpoints/checkpoint", "warmup/checkpoints/ckpt-2.index", "warmup/eval_history.jsonl",
        "pseudo/soft/shard-ab12-00000.bin", ".lock")


def test_leftovers_of_interrupted_writes_are_removed_when_their_stage_starts(stand_in, tmp_path, capsys):
    run = tmp_path / "run"
    for name in LEFTOVERS + KEPT:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    train(run, capsys, "--stage", "warmup")
    # Only the folders of the run and of the stage that started are cleaned.
    assert [name for name in LEFTOVERS if (run / name).exists()] == [LEFTOVERS[-1]]
    assert not (run / "warmup" / "checkpoints" / "ckpt-4_temp").exists()
    assert all((run / name).exists() for name in KEPT)
    train(run, capsys, "--stage", "pseudo")
    assert not any((run / name).exists() for name in LEFTOVERS)


def test_temporaries_newer_than_the_lock_belong_to_live_writers_and_stay(tmp_path):
    """Another worker of a multi-worker run writes in the folder without the run's lock."""
    old, new = tmp_path / ".started.json.a1.tmp.json", tmp_path / ".started.json.b2.tmp.json"
    old.write_text("x")
    new.write_text("x")
    locked_at = time.time()
    os.utime(old, (locked_at - 60, locked_at - 60))
    os.utime(new, (locked_at + 1, locked_at + 1))
    assert remove_leftovers(tmp_path, locked_at) == [old]
    assert new.exists()
