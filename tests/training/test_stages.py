"""The stage runner on a shrunk benchmark config: warm-up end to end, skip, resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cpsl_tf.config import load_config, shrink
from cpsl_tf.models.checkpoint import load_segmenter
from cpsl_tf.training.callbacks import StepCheckpoint
from cpsl_tf.training.stages import RunContext, is_done, run_stages
from tests.conftest import REPO
from tests.training.test_summaries import scalars


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    cfg = load_config(REPO / "configs/bench.json", [
        f"data.source_root={root}/source", f"data.target_root={root}/target",
        "warmup.mode=source_only", "train.checkpoint_every=2", "train.eval_every=100"])
    return shrink(cfg)


def test_warmup_stage_writes_checkpoint_and_results(tiny_cfg, tmp_path):
    results = run_stages(tiny_cfg, tmp_path / "run", only="warmup")
    warm = results["stages"]["warmup"]
    assert set(warm) >= {"miou", "mpa", "pa", "iou", "acc", "seconds"}
    assert 0.0 <= warm["miou"] <= 1.0 and len(warm["iou"]) == 19
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["stages"]["warmup"]["miou"] == warm["miou"]
    model, meta = load_segmenter(tmp_path / "run" / "warmup" / "model.weights.h5")
    assert meta["num_classes"] == 19 and meta["stage"] == "warmup"
    # Finished with the same config: skipped (the checkpoint is not rewritten).
    checkpoint = tmp_path / "run" / "warmup" / "model.weights.h5"
    stamp = checkpoint.stat().st_mtime_ns
    assert is_done(RunContext(tiny_cfg, tmp_path / "run"), "warmup")
    changed = dataclasses.replace(tiny_cfg, warmup=dataclasses.replace(tiny_cfg.warmup, lr=0.5))
    assert not is_done(RunContext(changed, tmp_path / "run"), "warmup")
    assert checkpoint.stat().st_mtime_ns == stamp


def test_interrupted_stage_resumes_to_the_same_weights(tiny_cfg, tmp_path, monkeypatch):
    four = dataclasses.replace(tiny_cfg, warmup=dataclasses.replace(tiny_cfg.warmup, iterations=4))
    run_stages(four, tmp_path / "straight", only="warmup")

    class Killed(BaseException):
        pass

    original = StepCheckpoint.on_train_batch_end

    def killed_after_step_three(self, batch, logs=None):
        original(self, batch, logs)
        if int(self.step) == 3:  # after the checkpoint of step 2, before the end of the stage
            raise Killed

    monkeypatch.setattr(StepCheckpoint, "on_train_batch_end", killed_after_step_three)
    with pytest.raises(Killed):
        run_stages(four, tmp_path / "resumed", only="warmup")
    assert not (tmp_path / "resumed" / "warmup" / "done.json").exists()
    monkeypatch.setattr(StepCheckpoint, "on_train_batch_end", original)
    run_stages(four, tmp_path / "resumed", only="warmup")
    a, _ = load_segmenter(tmp_path / "straight" / "warmup" / "model.weights.h5")
    b, _ = load_segmenter(tmp_path / "resumed" / "warmup" / "model.weights.h5")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-5, err_msg=wa.path)


def test_all_stages_run_in_order_and_skip_when_done(tiny_cfg, tmp_path):
    results = run_stages(tiny_cfg, tmp_path / "run")
    assert list(results["stages"]) == ["warmup", "cpsl", "distill1", "distill2"]
    for stage, r in results["stages"].items():
        assert 0.0 <= r["miou"] <= 1.0 and r["seconds"] > 0, stage
    pseudo = tmp_path / "run" / "pseudo"
    assert (pseudo / "soft" / "index.json").exists() and (pseudo / "prototypes.npy").exists()
    state = np.load(tmp_path / "run" / "cpsl" / "self_labeling.npz")
    assert state["delta_pseudo"].sum() == pytest.approx(1.0, abs=1e-5)
    assert state["momentum_prototypes"].shape == (19, tiny_cfg.model.head_channels)
    # TensorBoard: every stage's losses and learning rates, and CPSL's self-labeling diagnostics.
    for stage, loss in (("warmup", "train/loss_src"), ("cpsl", "train/loss"), ("distill1", "train/loss"),
                        ("distill2", "train/loss")):
        logged = scalars(tmp_path / "run" / stage / "tensorboard" / "train")
        assert set(logged[loss]) == set(logged["learning_rate/backbone"]) == {1, 2}, stage
    logged = scalars(tmp_path / "run" / "cpsl" / "tensorboard" / "train")
    for diagnostic in ("head_travel", "q_marginal_gap", "rectified_changed", "delta_shift", "loss_sl"):
        assert set(logged[f"train/{diagnostic}"]) == {1, 2}, diagnostic
    stamps = {s: (tmp_path / "run" / s / "done.json").stat().st_mtime_ns for s in results["stages"]}
    again = run_stages(tiny_cfg, tmp_path / "run")
    assert again == results
    assert stamps == {s: (tmp_path / "run" / s / "done.json").stat().st_mtime_ns for s in results["stages"]}
    # --from restarts a finished stage afresh (the last one, so that nothing else re-runs): the finished
    # run's checkpoints are kept aside and a new training writes its own.
    last = tmp_path / "run" / "distill2"
    first = load_segmenter(last / "model.weights.h5")[0].get_weights()
    run_stages(tiny_cfg, tmp_path / "run", start="distill2")
    assert (last / "checkpoints-previous" / "checkpoint").is_file()
    assert (last / "checkpoints" / "checkpoint").is_file()
    assert (last / "done.json").stat().st_mtime_ns > stamps["distill2"]
    assert all((tmp_path / "run" / s / "done.json").stat().st_mtime_ns == stamps[s] for s in stamps
               if s != "distill2")
    again = load_segmenter(last / "model.weights.h5")[0].get_weights()
    for a, b in zip(first, again):  # same seed, same data: the same weights again
        np.testing.assert_allclose(a, b, atol=1e-5)
