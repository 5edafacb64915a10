"""Typed experiment configuration: dataclasses per section, loaded from JSON, validated, overridable.

A config file is documentation: besides the settings it carries the experiment's ``expected`` result
and the ``command`` that launches it. ``load_config(path, overrides=["train.batch_size=2"])`` gives a
validated :class:`Config`; every error names the file, the dotted key and what was expected.
``shrink(config)`` turns any config into a smoke-run version (few steps, tiny images, tiny model).

The modules, each importable on its own, all re-exported here:

- :mod:`.schema`: the dataclasses, every key with its default and meaning;
- :mod:`.validation`: :data:`BOUNDS` of the numeric keys, :func:`validate` and the rules that relate keys,
  :func:`validate_for_training`;
- :mod:`.parsing`: type checking of JSON values, ``--set`` overrides, :func:`config_from_dict`;
- :mod:`.loading`: :func:`load_config` (file, official preset, overrides, ``--quick``), :func:`save_config`;
- :mod:`.smoke`: :func:`shrink` for smoke runs.
"""

from cpsl_tf.config.loading import (
    OFFICIAL_PRESET,
    REQUIRED_KEYS,
    load_config,
    read_json,
    save_config,
)
from cpsl_tf.config.parsing import apply_overrides, config_from_dict, to_dict
from cpsl_tf.config.schema import (
    BenchmarkConfig,
    Config,
    ConfigError,
    CPSLConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    TrainConfig,
    WarmupConfig,
)
from cpsl_tf.config.smoke import SMOKE, shrink
from cpsl_tf.config.validation import (
    BOUNDS,
    OFFICIAL_FIXED_SWITCHES,
    Bound,
    validate,
    validate_for_training,
)

__all__ = [
    "BOUNDS", "OFFICIAL_FIXED_SWITCHES", "OFFICIAL_PRESET", "REQUIRED_KEYS", "SMOKE", "BenchmarkConfig",
    "Bound", "CPSLConfig", "Config", "ConfigError", "DataConfig", "DistillConfig", "EvalConfig",
    "ExportConfig", "ModelConfig", "TrainConfig", "WarmupConfig", "apply_overrides", "config_from_dict",
    "load_config", "read_json", "save_config", "shrink", "to_dict", "validate", "validate_for_training",
]
