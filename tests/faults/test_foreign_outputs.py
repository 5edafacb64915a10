"""A pseudo-label store or checkpoint written by another config (class count, resolution) is refused with
a clear message by the stages that read it, instead of being silently mixed in."""

from __future__ import annotations

from cpsl_tf.training.cli import main
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
    change = {"data": {"target_size": [32, 64]}}
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
