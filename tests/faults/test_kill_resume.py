"""SIGKILL in the middle of a stage: rerunning the same command continues and finishes, and no file
written before the kill is lost or half-written (every output is written atomically)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import tensorflow as tf

from cpsl_tf.models.checkpoint import load_segmenter
from cpsl_tf.training.cli import main
from tests.conftest import REPO
from tests.faults.conftest import copy_run, tiny_config, write_config

ITERATIONS = 40


def _is_temporary(path) -> bool:
    """A leftover of a write the kill interrupted: atomic_path's hidden temp file or TF's temp folder."""
    return (path.name.startswith(".") and ".tmp" in path.name) or any("_temp" in p for p in path.parts)


def _latest_step(run) -> int:
    """The step of the newest checkpoint that the manager's index names (0 before the first).

    Not the newest ``ckpt-*.index`` file: TensorFlow writes it before it updates the index, and a kill
    between the two leaves no readable checkpoint when it is the first.
    """
    latest = tf.train.latest_checkpoint(str(run / "warmup" / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def assert_outputs_complete(run):
    """Every output under a final name is whole: JSON parses, checkpoints and models load."""
    for path in run.rglob("*.json"):
        if not _is_temporary(path):
            json.loads(path.read_text())
    state = tf.train.get_checkpoint_state(str(run / "warmup" / "checkpoints"))
    assert state is not None and state.all_model_checkpoint_paths
    for checkpoint in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(checkpoint)
        step = int(reader.get_tensor("stage_step/.ATTRIBUTES/VARIABLE_VALUE"))
        assert checkpoint.endswith(f"ckpt-{step}") and step % 2 == 0
    model = run / "warmup" / "model.weights.h5"
    if model.exists():
        load_segmenter(model)


def test_sigkill_at_a_random_step_then_rerun_continues(tiny_bench, tmp_path):
    config = write_config(tmp_path / "tiny.json",
                          tiny_config(tiny_bench, {"warmup": {"iterations": ITERATIONS}}))
    run = tmp_path / "run"
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config), "--stage",
               "warmup", "--run-dir", str(run)]
    # Killed within two steps after the checkpoint of a random step in the first half: the rest of the stage
    # is long enough that a test process starved by the suite's other worker still kills it mid-stage.
    kill_after = random.Random().randrange(2, ITERATIONS // 2, 2)
    delay = random.Random().uniform(0.0, 0.2)
    with open(tmp_path / "killed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 240
        while (_latest_step(run) < kill_after and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    killed_log = (tmp_path / "killed.log").read_text(errors="replace")
    assert process.returncode == -signal.SIGKILL, (
        f"not killed mid-stage (after step {kill_after} + {delay:.2f} s):\n{killed_log[-3000:]}")
    assert not (run / "warmup" / "done.json").exists() and not (run / "results.json").exists()
    assert_outputs_complete(run)

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed warmup at step" in rerun.stderr, rerun.stderr[-3000:]
    assert_outputs_complete(run)
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["stages"]["warmup"]["miou"] <= 1.0
    assert tf.train.latest_checkpoint(str(run / "warmup" / "checkpoints")).endswith(f"ckpt-{ITERATIONS}")
    assert json.loads((run / "warmup" / "done.json").read_text())["fingerprint"]
    _, meta = load_segmenter(run / "warmup" / "model.weights.h5")
    assert meta["stage"] == "warmup" and meta["num_classes"] == 19


def test_an_evaluation_a_kill_cut_off_from_its_checkpoint_is_run_on_resume(trained_run, tiny_bench, tmp_path):
    """The trained run's warm-up was killed, so to speak, between its checkpoint of step 2 and that step's
    evaluation (periodic every 2 steps); an entry of a later step, which the resumed run replays, is there
    too. Resuming evaluates step 2 and drops the later entry: the history matches the checkpoint."""
    _, run = trained_run
    copy_run(run, tmp_path / "run")
    history = tmp_path / "run" / "warmup" / "eval_history.jsonl"
    history.write_text('{"step": 4, "miou": 0.9, "mpa": 0.9, "pa": 0.9}\n')
    config = write_config(tmp_path / "tiny.json", tiny_config(tiny_bench, {"train": {"eval_every": 2}}))
    assert main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "warmup"]) == 0
    entries = [json.loads(line) for line in history.read_text().splitlines()]
    assert [entry["step"] for entry in entries] == [2]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert entries[0]["miou"] == results["stages"]["warmup"]["miou"]
