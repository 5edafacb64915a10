"""Where a checkpoint's settings come from: a config the user names, else its run folder's config.json, else
its sidecar alone; a config of another class count is refused."""

from __future__ import annotations

import pytest

from cpsl_tf.checkpoint_settings import checkpoint_settings
from cpsl_tf.config import Config, ConfigError, save_config
from cpsl_tf.run_config import write_run_config
from tests.conftest import REPO

META = {"num_classes": 19, "stage": "cpsl", "model": {"input_mean": [0.5] * 3, "input_std": [0.25] * 3}}


def test_a_named_config_wins_over_the_run(tmp_path):
    run = tmp_path / "run"
    cfg = Config()
    cfg.data.target_size = [32, 64]
    write_run_config(cfg, run)
    checkpoint = run / "cpsl" / "model.weights.h5"
    from_run = checkpoint_settings(checkpoint, META)
    assert from_run.origin == str(run / "config.json") and from_run.input_size == (32, 64)
    named = checkpoint_settings(checkpoint, META, REPO / "configs" / "bench.json", ["export.height=48"])
    assert named.input_size == (96, 192) and named.export_size == (48, 192)


def test_the_sidecar_alone_gives_the_input_size_and_normalisation(tmp_path):
    settings = checkpoint_settings(tmp_path / "model.weights.h5", {**META, "input_size": [16, 32]})
    assert settings.cfg is None and settings.input_size == settings.export_size == (16, 32)
    assert settings.line(["input 16x32"]) == (
        "settings: input 16x32, normalisation mean [0.5, 0.5, 0.5] std [0.25, 0.25, 0.25] (inside the "
        f"model) (from the sidecar of {tmp_path / 'model.weights.h5'} where no flag gave them)")


def test_overrides_need_a_config_and_the_class_count_must_agree(tmp_path):
    with pytest.raises(ConfigError, match="--set changes a config given with --config"):
        checkpoint_settings(tmp_path / "model.weights.h5", META, None, ["data.num_classes=16"])
    cfg = Config()
    cfg.data.num_classes = 16
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.json")
    with pytest.raises(ConfigError, match="data.num_classes=16, the checkpoint .* has 19 classes"):
        checkpoint_settings(tmp_path / "run" / "cpsl" / "model.weights.h5", META)
