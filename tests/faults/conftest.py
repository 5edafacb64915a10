"""A tiny generated benchmark (made once per session) and tiny JSON configs for the fault tests."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from cpsl_tf.benchmark.generate import generate_benchmark
from tests.conftest import REPO

TINY_BENCH = {"variant": "A", "seed": 0, "height": 64, "width": 128, "num_source": 6, "num_target_train": 6,
              "num_target_val": 4}


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> Path:
    """``<out>/source`` (GTA5 layout) and ``<out>/target`` (Cityscapes layout), 64x128, a few images."""
    out = tmp_path_factory.mktemp("tiny_bench")
    generate_benchmark(out, **TINY_BENCH, workers=1, progress=False)
    return out


def copy_bench(bench: Path, dest: Path) -> Path:
    """A private copy of the benchmark tree that a test may damage."""
    shutil.copytree(bench, dest)
    return dest


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def tiny_config(bench: Path, changes: dict | None = None) -> dict:
    """configs/bench.json shrunk to seconds per stage, reading the benchmark at ``bench``."""
    raw = json.loads((REPO / "configs" / "bench.json").read_text())
    _merge(raw, {
        "name": "faults",
        "data": {"source_root": str(bench / "source"), "target_root": str(bench / "target"),
                 "source_size": [64, 128], "target_size": [64, 128], "crop_size": [64, 96],
                 "benchmark": dict(TINY_BENCH)},
        "model": {"base_width": 8, "head_channels": 32, "aspp_rates": [1, 2]},
        "train": {"batch_size": 2, "checkpoint_every": 2, "eval_every": 1000, "log_every": 1},
        "warmup": {"iterations": 2},
        "cpsl": {"iterations": 2, "bank_size": 64, "pixels_per_image": 16},
        "distill": {"rounds": 0, "iterations": 2},
        "eval": {"batch_size": 2},
        "export": {"height": 64, "width": 128, "calibration_images": 4},
    })
    return _merge(raw, copy.deepcopy(changes or {}))


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw, indent=2))
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_bench, tmp_path_factory) -> tuple[Path, Path]:
    """(config file, run folder) after the warm-up and pseudo-label stages on the tiny benchmark; copy the
    run folder (``copy_run``) before running anything against it."""
    from cpsl_tf.config import load_config
    from cpsl_tf.training.stages import run_stages

    root = tmp_path_factory.mktemp("trained")
    config = write_config(root / "tiny.json", tiny_config(tiny_bench))
    cfg = load_config(config)
    run_stages(cfg, root / "run", only="warmup")
    run_stages(cfg, root / "run", only="pseudo")
    return config, root / "run"


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest
