"""The run layout names the files existing run folders hold: a rename would orphan them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cpsl_tf.run_layout import RunLayout, configured_stages
from tests.conftest import REPO


def test_the_names_of_a_run_folder(tmp_path):
    run = RunLayout(tmp_path)
    assert [run.config.name, run.results.name, run.train_log.name] == ["config.json", "results.json",
                                                                        "train.log"]
    cpsl = run.stage("cpsl")
    assert cpsl.folder == tmp_path / "cpsl"
    names = {path.relative_to(tmp_path).as_posix() for path in (
        cpsl.model, cpsl.model_sidecar, cpsl.checkpoints, cpsl.history, cpsl.train_history, cpsl.tensorboard,
        cpsl.done, cpsl.started, cpsl.self_labeling_state)}
    assert names == {"cpsl/model.weights.h5", "cpsl/model.json", "cpsl/checkpoints",
                     "cpsl/eval_history.jsonl", "cpsl/train_history.jsonl", "cpsl/tensorboard",
                     "cpsl/done.json", "cpsl/started.json", "cpsl/self_labeling.npz"}
    pseudo = run.stage("pseudo")
    assert pseudo.outputs == (tmp_path / "pseudo" / "soft" / "index.json",
                              tmp_path / "pseudo" / "prototypes.npy")
    assert cpsl.outputs == (cpsl.model, cpsl.model_sidecar)


def test_set_aside_places_keep_the_kind_of_each_file(tmp_path):
    stage = RunLayout(tmp_path).stage("warmup")
    assert {path.name: aside.name for path, aside in stage.set_aside("previous").items()} == {
        "checkpoints": "checkpoints-previous", "tensorboard": "tensorboard-previous",
        "eval_history.jsonl": "eval_history-previous.jsonl",
        "train_history.jsonl": "train_history-previous.jsonl"}


def test_final_models_in_run_order(tmp_path):
    run = RunLayout(tmp_path)
    for stage in ("distill1", "warmup"):
        run.stage(stage).folder.mkdir()
        run.stage(stage).model.touch()
    assert list(run.final_models()) == ["warmup", "distill1"]


def test_configured_stages_follow_the_distillation_rounds():
    class Distill:
        rounds = 1

    class Cfg:
        distill = Distill

    assert configured_stages(Cfg) == ["warmup", "pseudo", "cpsl", "distill1"]


def test_the_layout_imports_no_training_machinery():
    """Evaluation, reports and benchmarks read run folders through it without importing training or
    TensorFlow."""
    code = ("import sys, cpsl_tf.run_layout; print(sorted(m for m in sys.modules "
            "if m.startswith(('tensorflow', 'keras', 'cpsl_tf.training'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(REPO), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
