"""The config a run folder records (``<run>/config.json``), readable from any working folder.

A run records its data roots as absolute paths, so that evaluate, export, predict and report find the data
from wherever they are started. Run folders written before held the roots as given, relative to the folder
the run was started from: reading one resolves such a root against the working folder, else against the
run folder's parents (``runs/<name>`` of a checkout started from the checkout), where it exists.

The stage fingerprints hash the roots as the user gave them, not these records: the fingerprints of existing
runs stay valid, and nothing reads the record back to train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cpsl_tf.config import Config, config_from_dict, read_json, save_config
from cpsl_tf.run_layout import CONFIG as CONFIG_NAME

_ROOT_KEYS = ("source_root", "target_root")


def _with_roots(cfg: Config, resolve) -> Config:
    roots = {key: str(resolve(Path(getattr(cfg.data, key)).expanduser())) for key in _ROOT_KEYS}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **roots))


def write_run_config(cfg: Config, run_dir: str | Path) -> None:
    """``<run_dir>/config.json``: ``cfg`` with absolute data roots."""
    save_config(_with_roots(cfg, Path.resolve), Path(run_dir) / CONFIG_NAME)


def _locate(root: Path, run_dir: Path) -> Path:
    if root.is_absolute():
        return root
    bases = [Path.cwd(), *run_dir.absolute().parents]
    return next(((base / root).resolve() for base in bases if (base / root).exists()), root)


def read_run_config(run_dir: str | Path) -> Config:
    """The config recorded in ``run_dir``, its data roots made absolute where they can be found;
    :class:`~cpsl_tf.config.ConfigError` when there is none or it is damaged."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_NAME
    cfg = config_from_dict(read_json(path), str(path))
    return _with_roots(cfg, lambda root: _locate(root, run_dir))


def checkpoint_run(checkpoint: str | Path, meta: dict) -> Path | None:
    """The run folder that wrote a stage's network (``<run>/<stage>/model.weights.h5``, its sidecar naming
    that stage), or ``None`` for a checkpoint that is not in its run folder."""
    stage_dir = Path(checkpoint).absolute().parent
    run_dir = stage_dir.parent
    if meta.get("stage") != stage_dir.name or not (run_dir / CONFIG_NAME).is_file():
        return None
    return run_dir
