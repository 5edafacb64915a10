"""A run folder's config.json is readable from any working folder: data roots are recorded absolute, and the
relative roots of older run folders are found again."""

from __future__ import annotations

import json

from cpsl_tf.config import Config, load_config, save_config
from cpsl_tf.run_config import checkpoint_run, read_run_config, write_run_config
from cpsl_tf.training.stages import stage_fingerprint
from tests.conftest import REPO


def _checkout(tmp_path):
    """A checkout-like folder with data/bench/{source,target} and runs/bench."""
    for role in ("source", "target"):
        (tmp_path / "repo" / "data" / "bench" / role).mkdir(parents=True)
    run = tmp_path / "repo" / "runs" / "bench"
    run.mkdir(parents=True)
    return tmp_path / "repo", run


def test_the_record_holds_absolute_roots_read_from_anywhere(tmp_path, monkeypatch):
    repo, run = _checkout(tmp_path)
    monkeypatch.chdir(repo)
    cfg = Config()  # roots data/bench/source and data/bench/target, relative
    write_run_config(cfg, run)
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert recorded["target_root"] == str(repo / "data" / "bench" / "target")
    monkeypatch.chdir(tmp_path)
    assert read_run_config(run).data.source_root == str(repo / "data" / "bench" / "source")


def test_relative_roots_of_an_older_run_are_found_beside_the_run_folder(tmp_path, monkeypatch):
    repo, run = _checkout(tmp_path)
    save_config(Config(), run / "config.json")  # as runs were recorded before: roots as given
    monkeypatch.chdir(tmp_path)
    assert read_run_config(run).data.target_root == str(repo / "data" / "bench" / "target")


def test_a_root_found_nowhere_stays_as_recorded(tmp_path, monkeypatch):
    _, run = _checkout(tmp_path)
    cfg = Config()
    cfg.data.target_root = "elsewhere/target"
    save_config(cfg, run / "config.json")
    monkeypatch.chdir(tmp_path)
    assert read_run_config(run).data.target_root == "elsewhere/target"


def test_fingerprints_hash_the_roots_as_given_not_the_record(tmp_path, monkeypatch):
    """A run started again from the same folder with the same config keeps its finished stages."""
    repo, run = _checkout(tmp_path)
    monkeypatch.chdir(repo)
    cfg = load_config(REPO / "configs" / "bench.json")
    before = stage_fingerprint(cfg, "warmup")
    write_run_config(cfg, run)
    assert cfg.data.target_root == "data/bench/target"
    assert stage_fingerprint(cfg, "warmup") == before
    assert stage_fingerprint(read_run_config(run), "warmup") != before


def test_the_run_of_a_stage_checkpoint(tmp_path):
    _, run = _checkout(tmp_path)
    save_config(Config(), run / "config.json")
    checkpoint = run / "cpsl" / "model.weights.h5"
    assert checkpoint_run(checkpoint, {"stage": "cpsl"}) == run.absolute()
    assert checkpoint_run(checkpoint, {"stage": "warmup"}) is None  # a copy under another stage's name
    assert checkpoint_run(tmp_path / "x" / "model.weights.h5", {"stage": "x"}) is None
