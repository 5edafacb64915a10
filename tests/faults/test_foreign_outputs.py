"""A pseudo-label store or checkpoint written by another config (class count, resolution) is refused with
a clear message by the stages that read it, instead of being silently mixed in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.training.cli import main
from cpsl_tf.training.loop import resume
from cpsl_tf.training.stages import StageError
from tests.faults.conftest import copy_run, tiny_config, write_config


def run_stage(tmp_path, capsys, bench, change: dict, stage: str, trained) -> tuple[int, str]:
    """Run ``stage`` with the trained run's config changed by ``change``, on a copy of the trained run."""
    _, run = trained
    copy_run(run, tmp_path / "run")
    config = write_config(tmp_path / "other.json", tiny_config(bench, change))
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", stage])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_store_of_another_resolution_is_refused_by_the_cpsl_stage(trained_run, tiny_bench, tmp_path, capsys):
    change = {"data": {"target_size": [32, 64], "crop_size": [32, 48]}}
    code, err = run_stage(tmp_path, capsys, tiny_bench, change, "cpsl", trained_run)
    assert code == 2
    assert "pseudo-label store" in err and "was written by another setting" in err
    assert "config fingerprint" in err and str(tmp_path / "run" / "pseudo" / "soft") in err
    assert not (tmp_path / "run" / "cpsl" / "checkpoints").exists()


def test_store_of_another_class_count_is_refused_by_the_cpsl_stage(trained_run, tiny_bench, tmp_path, capsys):
    code, err = run_stage(tmp_path, capsys, tiny_bench, {"data": {"num_classes": 16}}, "cpsl", trained_run)
    assert code == 2
    assert "num_classes=19 (expected 16)" in err
    assert not (tmp_path / "run" / "cpsl" / "checkpoints").exists()


def test_checkpoint_of_another_class_count_is_refused_by_the_pseudo_stage(trained_run, tiny_bench, tmp_path,
                                                                          capsys):
    store_index = tmp_path / "run" / "pseudo" / "soft" / "index.json"
    code, err = run_stage(tmp_path, capsys, tiny_bench, {"data": {"num_classes": 16}}, "pseudo", trained_run)
    assert code == 2
    assert "warmup/model.weights.h5 predicts 19 classes but the config has data.num_classes=16" in err
    # Refused before the store of the trained run was touched.
    assert store_index.exists()


def test_training_checkpoints_of_another_config_are_set_aside_not_resumed(trained_run, tiny_bench, tmp_path,
                                                                          capsys, caplog):
    """The trained run's warm-up ended at step 2 under another learning rate: with this config it starts
    from step 0 instead of resuming those weights (and stopping at once, as they are at the last step)."""
    code, err = run_stage(tmp_path, capsys, tiny_bench, {"warmup": {"lr": 0.5}}, "warmup", trained_run)
    assert code == 0
    assert "written by another config" in caplog.text
    assert "resumed warmup" not in caplog.text
    aside = list((tmp_path / "run" / "warmup").glob("checkpoints-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoint").exists()


def test_the_evaluation_history_of_another_config_is_set_aside(trained_run, tiny_bench, tmp_path):
    """A stage that starts afresh under another config does not append to the old config's history (the
    report and the Fig. 4 curves would mix the two)."""
    _, run = trained_run
    copy_run(run, tmp_path / "run")
    old_entry = '{"step": 2, "miou": 0.99, "mpa": 0.99, "pa": 0.99}\n'
    (tmp_path / "run" / "warmup" / "eval_history.jsonl").write_text(old_entry)
    config = write_config(tmp_path / "other.json", tiny_config(tiny_bench, {"warmup": {"lr": 0.5}}))
    assert main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "warmup"]) == 0
    aside = list((tmp_path / "run" / "warmup").glob("eval_history-*.jsonl"))
    assert len(aside) == 1 and aside[0].read_text() == old_entry
    history = tmp_path / "run" / "warmup" / "eval_history.jsonl"
    assert not history.exists() or old_entry not in history.read_text()


# --------------------------------------------------------------------------------------------------
# Checkpoints and models carry the fingerprint of the config that trained them (issue 15)


def test_checkpoints_of_another_config_copied_into_a_run_are_refused(trained_run, tiny_bench, tmp_path,
                                                                     capsys):
    """``started.json`` says this config started the stage, but the checkpoints in the folder were copied
    from a run of another config: their own fingerprint says so, and they are not resumed."""
    from cpsl_tf.config import load_config
    from cpsl_tf.training.stages import stage_fingerprint

    _, run = trained_run
    copy_run(run, tmp_path / "run")
    config = write_config(tmp_path / "other.json", tiny_config(tiny_bench, {"warmup": {"lr": 0.5}}))
    other = stage_fingerprint(load_config(config), "warmup")
    (tmp_path / "run" / "warmup" / "started.json").write_text(json.dumps({"fingerprint": other}))
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "warmup"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    checkpoint = tmp_path / "run" / "warmup" / "checkpoints" / "ckpt-2"
    assert f"checkpoint {checkpoint} was written under another config" in err and f"stage's is {other}" in err
    assert "--stage warmup --force" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_refuses_a_checkpoint_beyond_the_stage_and_a_damaged_one(tmp_path):
    """A checkpoint without a stored fingerprint (as before they were stored) is still refused when its
    step is beyond the stage's length; a truncated one is named as damaged."""
    step = tf.Variable(12, dtype=tf.int64)
    folder = tmp_path / "cpsl" / "checkpoints"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(stage_step=step), str(folder), max_to_keep=2)
    path = manager.save(checkpoint_number=12)
    target = tf.train.Checkpoint(stage_step=tf.Variable(0, dtype=tf.int64))
    beyond = r"ckpt-12 is at step 12, beyond this stage's 2 steps.*--stage cpsl --force"
    with pytest.raises(StageError, match=beyond):
        resume(target, path, "0123456789abcdef", total_steps=2)
    resume(target, path, "0123456789abcdef", total_steps=12)
    assert int(target.stage_step) == 12
    data = next(folder.glob("ckpt-12.data-*"))
    data.write_bytes(data.read_bytes()[:4])
    with pytest.raises(StageError, match=r"checkpoint .*ckpt-12 is damaged \(.+\); move .*checkpoints away"):
        resume(target, path, None, total_steps=12)


def test_resume_refuses_a_checkpoint_of_the_per_group_optimizers(tmp_path):
    """Checkpoints from before the one Keras SGD held an optimizer per learning-rate group ("backbone",
    "head"); restoring one into the stage's "optimizer" would start the momentum buffers afresh unnoticed."""
    import keras

    from cpsl_tf.training.optim import GroupedSGD

    weights = keras.Variable(np.ones(2, np.float32), name="w")
    old_groups = {name: keras.optimizers.SGD(momentum=0.9, name=f"sgd_{name}")
                  for name in ("backbone", "head")}
    for optimizer in old_groups.values():
        optimizer.build([weights])
    folder = tmp_path / "warmup" / "checkpoints"
    old = tf.train.Checkpoint(stage_step=tf.Variable(1, dtype=tf.int64), weights=weights, **old_groups)
    path = tf.train.CheckpointManager(old, str(folder), max_to_keep=2).save(checkpoint_number=1)
    sgd = GroupedSGD({"backbone": 0.1}, lambda v: "backbone", 0.0, 4, 0.9, 0.9)
    sgd.build([weights])
    state = {"weights": weights, "optimizer": sgd}
    target = tf.train.Checkpoint(stage_step=tf.Variable(0, dtype=tf.int64), **state)
    with pytest.raises(StageError, match=r"ckpt-1 holds no optimizer: it was written by an older version.*"
                                         r"--stage warmup --force"):
        resume(target, path, None, total_steps=4, state_names=state)
    assert int(target.stage_step) == 0


def test_a_truncated_training_checkpoint_is_named_as_damaged(trained_run, tiny_bench, tmp_path, capsys):
    _, run = trained_run
    copy_run(run, tmp_path / "run")
    index = tmp_path / "run" / "warmup" / "checkpoints" / "ckpt-2.index"
    index.write_bytes(index.read_bytes()[:40])
    config = write_config(tmp_path / "tiny.json", tiny_config(tiny_bench))
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "warmup"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"checkpoint {index.with_suffix('')} is damaged" in err and "--force" in err


def test_a_model_of_another_config_is_refused_by_the_next_stage(trained_run, tiny_bench, tmp_path, capsys):
    """Same class count, another warm-up learning rate: the sidecar's fingerprint tells them apart."""
    store_index = tmp_path / "run" / "pseudo" / "soft" / "index.json"
    code, err = run_stage(tmp_path, capsys, tiny_bench, {"warmup": {"lr": 0.5}}, "pseudo", trained_run)
    assert code == 2
    model = tmp_path / "run" / "warmup" / "model.weights.h5"
    assert f"{model} was trained under another config" in err and "re-run stage warmup" in err
    assert store_index.exists()


def test_a_truncated_model_is_named_as_damaged_and_re_running_its_stage_mends_it(trained_run, tiny_bench,
                                                                                   tmp_path, capsys):
    _, run = trained_run
    copy_run(run, tmp_path / "run")
    model = tmp_path / "run" / "warmup" / "model.weights.h5"
    model.write_bytes(model.read_bytes()[:1000])
    config = write_config(tmp_path / "tiny.json", tiny_config(tiny_bench))
    command = ["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage"]
    assert main([*command, "pseudo"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{model}: the weights file is damaged" in err and "--stage warmup" in err
    # What the message says to do: the warm-up resumes at its last step and writes its model again.
    assert main([*command, "warmup"]) == 0
    assert main([*command, "pseudo"]) == 0


# --------------------------------------------------------------------------------------------------
# The pseudo-label store is read, not trusted (issue 15)


def test_a_store_index_whose_shape_disagrees_with_the_network_is_refused(trained_run, tiny_bench, tmp_path,
                                                                         capsys):
    """Height and width swapped in index.json: as many values per map, so the maps would read, cut into the
    wrong shape."""
    _, run = trained_run
    copy_run(run, tmp_path / "run")
    index_path = tmp_path / "run" / "pseudo" / "soft" / "index.json"
    index = json.loads(index_path.read_text())
    height, width = index["shape"]
    index_path.write_text(json.dumps(dict(index, shape=[width, height])))
    config = write_config(tmp_path / "tiny.json", tiny_config(tiny_bench))
    code = main(["--config", str(config), "--run-dir", str(tmp_path / "run"), "--stage", "cpsl"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"map shape [{width}, {height}] (expected [{height}, {width}])" in err and "'pseudo' stage" in err
    assert not (tmp_path / "run" / "cpsl" / "checkpoints").exists()
