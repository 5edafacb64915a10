"""Watching a run of scripts/train.py: TensorBoard holds the losses, learning rates and evaluations;
train.log holds the start-up header, every log line and the final table; the output ends with the commands
that come next; TensorFlow's and Keras' noise stays out."""

from __future__ import annotations

import shlex

import pytest

from cpsl_tf.benchmark.generate import generate_benchmark
from cpsl_tf.training.cli import main
from tests.faults.conftest import TINY_BENCH, tiny_config, write_config
from tests.training.test_summaries import scalars


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """The warm-up, 2 steps, evaluated at step 2, run through train.py's main (tests/training/test_stages.py
    reads the CPSL stage's diagnostics back)."""
    root = tmp_path_factory.mktemp("watched")
    generate_benchmark(root / "bench", **TINY_BENCH, workers=1, progress=False)
    config = write_config(root / "tiny.json", tiny_config(root / "bench", {
        "name": "watched", "train": {"eval_every": 2, "log_every": 1}}))
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        lines = []
        patch.setattr("builtins.print", lambda *args, **kwargs: lines.append(" ".join(map(str, args))))
        assert main(["--config", str(config), "--run-dir", str(run), "--stage", "warmup",
                     "--set", "train.batch_size=2"]) == 0
    return run, "\n".join(lines)


def test_tensorboard_holds_losses_learning_rates_and_evaluations(watched_run):
    run, _ = watched_run
    train = scalars(run / "warmup" / "tensorboard" / "train")
    assert set(train["train/loss_src"]) == {1, 2}
    assert train["learning_rate/backbone"][1] > train["learning_rate/backbone"][2] >= 0  # poly decay
    evaluation = scalars(run / "warmup" / "tensorboard" / "eval")
    assert 0.0 <= evaluation["eval/miou"][2] <= 1.0 and set(evaluation["eval/mpa"]) == {2}
    assert "iou/road" in evaluation


def test_train_log_holds_the_header_the_stages_and_the_final_table(watched_run):
    run, printed = watched_run
    text = (run / "train.log").read_text()
    for expected in ("command: train.py --config", "--set train.batch_size=2", f"run folder: {run.resolve()}",
                     "strategy: train.strategy=auto", "images: source train 6, target train 6 (6 labelled), "
                     "target val 4 (4 labelled)", "246,814 parameters", "stage warmup: done", "steps/s"):
        assert expected in text, expected
    table = next(line for line in printed.splitlines() if line.startswith("stage "))
    assert table in text  # what is printed at the end is in the log too
    assert (run / "warmup" / "train_history.jsonl").is_file()


def test_the_output_ends_with_the_commands_that_come_next(watched_run):
    run, printed = watched_run
    commands = {line.split(":")[0].strip(): shlex.split(line.split(":", 1)[1])
                for line in printed.split("next:\n")[1].splitlines()}
    assert set(commands) == {"report", "evaluate", "export"}
    assert commands["report"][1:] == ["scripts/report.py", str(run)]
    model = str(run / "warmup" / "model.weights.h5")
    assert commands["evaluate"][1:] == ["scripts/evaluate.py", "--checkpoint", model]
    export = ["scripts/export.py", "--checkpoint", model, "--out", str(run / "export")]
    assert commands["export"][1:] == export


def test_no_noise(watched_run):
    run, _ = watched_run
    text = (run / "train.log").read_text()
    for noise in ("shuffle=True", "is deprecated", "retracing", "Sharding callback"):
        assert noise not in text, noise
