"""Config files: reading one (:func:`load_config`, with the official preset's settings and ``--set``
overrides) and writing one (:func:`save_config`)."""

from __future__ import annotations

import json
from pathlib import Path

from cpsl_tf.config.parsing import apply_overrides, config_from_dict, to_dict
from cpsl_tf.config.schema import Config, ConfigError
from cpsl_tf.config.smoke import shrink
from cpsl_tf.config.validation import validate_for_training

# A config file must say what it trains on and at which size: these keys have no default that fits more
# than one dataset. Every other key may be left out and takes the paper's setting (the defaults of
# cpsl_tf/config/schema.py).
REQUIRED_KEYS = ("data.source", "data.target", "data.source_size", "data.target_size", "data.crop_size")

# What ``cpsl.preset: "official"`` sets (docs/official-code.md sections 1.2, 5, 8): 256 uniformly sampled
# pixels per image, 0.1 CE + RCE, CutMix with probability 0.5, the running-mean prototypes, r fixed at
# Eq. 10 (Eq. 11 with momentum 1). A --set of one of these keys still wins.
OFFICIAL_PRESET = {"pixels_per_image": 256, "target_loss": "ce+rce", "cutmix_prob": 0.5,
                   "prototype_mode": "official", "alignment_momentum": 1.0}


def _with_preset(raw: dict, explicit: set[str]) -> dict:
    cpsl = raw.get("cpsl")
    if not isinstance(cpsl, dict) or cpsl.get("preset") != "official":
        return raw
    preset = {k: v for k, v in OFFICIAL_PRESET.items() if f"cpsl.{k}" not in explicit}
    return {**raw, "cpsl": {**cpsl, **preset}}


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        from cpsl_tf.user_paths import did_you_mean

        raise ConfigError(f"config file {path} does not exist{did_you_mean(path)}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object ({{...}}), got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                quick: bool = False, training: bool = False) -> Config:
    """Load a JSON config (or the defaults when ``path`` is None) and apply ``--set`` overrides.

    A file must set :data:`REQUIRED_KEYS`. ``quick`` shrinks the config to a smoke run (:func:`shrink`); the
    overrides still win over the values shrinking sets. ``training`` adds :func:`validate_for_training`.
    """
    raw = read_json(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    if overrides:
        raw = apply_overrides(raw, overrides, f"{source} --set")
        source += " (with --set overrides)"
    explicit = {text.split("=", 1)[0].strip() for text in overrides or []}
    cfg = config_from_dict(_with_preset(raw, explicit), source, REQUIRED_KEYS if path is not None else ())
    if quick:
        source += " shrunk by --quick"
        cfg = shrink(cfg, keep=explicit, source=source)
    return validate_for_training(cfg, source) if training else cfg


def save_config(cfg: Config, path: str | Path) -> None:
    from cpsl_tf.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")
