"""Typed experiment configuration: dataclasses per section, loaded from JSON, validated, overridable.

A config file is documentation: besides the settings it carries the experiment's ``expected`` result
and the ``command`` that launches it. ``load_config(path, overrides=["train.batch_size=2"])`` gives a
validated :class:`Config`; every error names the file, the dotted key and what was expected.
``shrink(config)`` turns any config into a smoke-run version (few steps, tiny images, tiny model).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cpsl_tf.labels import SUPPORTED_NUM_CLASSES


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or impossible."""


@dataclass
class BenchmarkConfig:
    """Generated two-domain benchmark (see ``cpsl_tf.data.benchmark``)."""

    variant: Literal["A", "B"] = "A"
    seed: int = 0
    # Strength of the target shift in [0, 1] (see cpsl_tf/data/bench_style.py).
    shift: float = 0.5
    height: int = 96
    width: int = 192
    num_source: int = 1000
    num_target_train: int = 1000
    num_target_val: int = 200


@dataclass
class DataConfig:
    """Datasets, sizes and augmentation of the training views."""

    # "cityscapes" as source trains on labelled target-layout data: the oracle of the benchmark.
    source: Literal["gta5", "synthia", "bench", "cityscapes"] = "bench"
    target: Literal["cityscapes", "bench", "folder"] = "bench"
    source_root: str = "data/bench/source"
    target_root: str = "data/bench/target"
    num_classes: int = 19
    # Sizes are (height, width). Source images are resized to source_size before augmentation
    # (GTA5 is stretched to 1024x2048 in the official code), target images to target_size.
    source_size: list[int] = field(default_factory=lambda: [1024, 2048])
    target_size: list[int] = field(default_factory=lambda: [1024, 2048])
    crop_size: list[int] = field(default_factory=lambda: [512, 896])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 1.5])
    hflip: bool = True
    # Photometric augmentation of the source images (the strong baseline of the benchmark study).
    source_photometric: bool = False
    # Bad samples (unreadable, size mismatch): "error" stops, "skip" logs and leaves them out.
    bad_samples: Literal["error", "skip"] = "skip"
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)


@dataclass
class ModelConfig:
    """DeepLab-v2 with a dilated ResNet and the ProDA head."""

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet101"
    # Channels of the stem; 64 is the standard ResNet, smaller values give narrow variants.
    base_width: int = 64
    head_channels: int = 256
    se_reduction: int = 16
    dropout: float = 0.1
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # Inputs are RGB in [0, 1]; the model subtracts mean and divides by std (official: none).
    input_mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    input_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    align_corners: bool = True
    imagenet_weights: bool = True
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5


@dataclass
class TrainConfig:
    """Optimisation shared by the stages."""

    batch_size: int = 4
    lr: float = 1e-4
    head_lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 2e-4
    poly_power: float = 0.9
    seed: int = 6523
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = "auto"
    sync_batch_norm: bool = False
    mixed_precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 1000
    eval_every: int = 1000
    log_every: int = 50
    run_dir: str = "runs"


@dataclass
class WarmupConfig:
    """Stage ``warmup``: source-only or output-space adversarial training."""

    mode: Literal["source_only", "adversarial"] = "adversarial"
    iterations: int = 20000
    lr: float = 2.5e-4
    adversarial_weight: float = 0.01
    discriminator_lr: float = 1e-4


@dataclass
class CPSLConfig:
    """Stage ``cpsl``: the adaptation of paper sections 3.1-3.4."""

    preset: Literal["paper", "official"] = "paper"
    iterations: int = 90000
    lambda_sl: float = 0.1
    lambda_reg: float = 5.0
    tau: float = 0.08
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    sinkhorn_log_domain: bool = False
    bank_size: int = 65536
    pixels_per_image: int = 512
    ema_momentum: float = 0.999
    # Eq. 11 momentum of the distribution alignment.
    alignment_momentum: float = 0.999
    # r of Eq. 12: "pseudo" = delta_pseudo (Eq. 10, then Eq. 11); "ground_truth" = the class distribution of
    # the target-train labels, fixed (a diagnostic that needs labelled target data: it tells a biased
    # alignment target from an alignment that does nothing).
    marginal: Literal["pseudo", "ground_truth"] = "pseudo"
    # Learning rate of the self-labeling head's W as a multiple of train.head_lr, poly-decayed like the
    # network's. The official code puts W in the segmentation head's group; the paper's 5e-4 for W equals
    # that head rate (section 4.1, official-code-notes section 3). So W takes lambda_sl x its rate = a tenth
    # of the head's step in every config, whatever its rates.
    self_labeling_lr_scale: float = 1.0
    rectify_threshold: float = 0.0
    # Ablations of paper Table 3 and the equal-partition variant.
    use_self_labeling: bool = True
    use_self_training: bool = True
    class_balanced: bool = True
    equal_partition: bool = False
    prototype_init: bool = True
    strong_augmentation: bool = True
    use_momentum: bool = True
    target_loss: Literal["ce", "ce+rce"] = "ce"
    cutmix_prob: float = 0.0
    prototype_mode: Literal["paper", "official"] = "paper"


@dataclass
class DistillConfig:
    """Stages ``distill1`` and ``distill2``: self-distillation (paper 4.2)."""

    rounds: int = 2
    iterations: int = 40000
    lr: float = 6e-4
    head_lr: float = 6e-3
    threshold: float = 0.95
    kd_weight: float = 1.0
    flip: bool = True
    # "imagenet" (the model's own initialisation), "teacher" (the previous stage's weights) or a checkpoint.
    student_init: str = "imagenet"


@dataclass
class EvalConfig:
    """Evaluation on the target validation split."""

    split: str = "val"
    batch_size: int = 2
    # Extra class subsets reported beside the full protocol (SYNTHIA: [13]).
    report_subsets: list[int] = field(default_factory=list)


@dataclass
class ExportConfig:
    """ONNX / TensorRT export."""

    opset: int = 17
    height: int = 1024
    width: int = 2048
    layout: Literal["nhwc", "nchw"] = "nhwc"
    output: Literal["logits", "argmax"] = "argmax"
    argmax_dtype: Literal["uint8", "int32"] = "uint8"
    max_abs_logit_diff: float = 1e-4
    min_argmax_agreement: float = 0.9999
    calibration_images: int = 200


@dataclass
class Config:
    """A whole experiment."""

    name: str = "experiment"
    description: str = ""
    expected: dict = field(default_factory=dict)
    command: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    cpsl: CPSLConfig = field(default_factory=CPSLConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


# --------------------------------------------------------------------------------------------------
# Loading and type checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "an object"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints are accepted for floats)."""

    def fail() -> typing.NoReturn:
        raise ConfigError(f"{source}: key '{key}' must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin is list:
        if not isinstance(value, list):
            fail()
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key, source)
            except ConfigError:
                continue
        fail()
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if tp is dict:
        if not isinstance(value, dict):
            fail()
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _build(cls: type, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(
            f"{source}: unknown key {where}; known keys{' of ' + repr(prefix) if prefix else ''}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key, source)
    return cls(**kwargs)


def _parse_override(text: str, source: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"{source}: override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``section.key=value`` overrides (values parsed as JSON, else taken as strings)."""
    for text in overrides:
        path, value = _parse_override(text, source)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{'.'.join(path)}' does not name a config key")
        node[path[-1]] = value
    return raw


def _require(ok: bool, source: str, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")


def validate(cfg: Config, source: str = "config") -> Config:
    """Reject impossible values, naming the key and what was expected."""
    d, m, t, c = cfg.data, cfg.model, cfg.train, cfg.cpsl
    # The run folder is <train.run_dir>/<name>: a separator or '..' in the name would put it elsewhere.
    _require(cfg.name not in ("", ".", "..") and not any(sep in cfg.name for sep in "/\\")
             and cfg.name.isprintable() and cfg.name == cfg.name.strip(), source, "name",
             "a plain folder name (it names the run folder under train.run_dir): not empty, '.' or '..', no "
             "'/' or '\\', no control characters or surrounding spaces", cfg.name)
    _require(d.num_classes in SUPPORTED_NUM_CLASSES, source, "data.num_classes",
             f"one of {SUPPORTED_NUM_CLASSES}", d.num_classes)
    for key, value in (("data.source_size", d.source_size), ("data.target_size", d.target_size),
                       ("data.crop_size", d.crop_size), ("export.height/width",
                                                         [cfg.export.height, cfg.export.width])):
        _require(len(value) == 2 and all(v > 0 for v in value), source, key,
                 "[height, width] with positive entries", value)
    _require(len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1], source,
             "data.scale_range", "[low, high] with 0 < low <= high", d.scale_range)
    _require(m.base_width >= 8 and m.base_width % 8 == 0, source, "model.base_width",
             "a positive multiple of 8", m.base_width)
    _require(m.head_channels >= 32 and m.head_channels % 32 == 0, source, "model.head_channels",
             "a positive multiple of 32 (GroupNorm uses 32 groups)", m.head_channels)
    _require(0.0 <= m.dropout < 1.0, source, "model.dropout", "in [0, 1)", m.dropout)
    _require(len(m.input_mean) == 3 and len(m.input_std) == 3 and all(s > 0 for s in m.input_std),
             source, "model.input_mean/input_std", "three values each, std > 0",
             [m.input_mean, m.input_std])
    _require(t.batch_size >= 1, source, "train.batch_size", "at least 1", t.batch_size)
    for key in ("lr", "head_lr", "weight_decay"):
        _require(getattr(t, key) >= 0, source, f"train.{key}", "non-negative", getattr(t, key))
    _require(0.0 <= t.momentum < 1.0, source, "train.momentum", "in [0, 1)", t.momentum)
    _require(t.gradient_accumulation_steps >= 1, source, "train.gradient_accumulation_steps",
             "at least 1", t.gradient_accumulation_steps)
    for key in ("checkpoint_every", "eval_every", "log_every"):
        _require(getattr(t, key) >= 1, source, f"train.{key}", "at least 1", getattr(t, key))
    for section, key in (("warmup", "iterations"), ("cpsl", "iterations"), ("distill", "iterations")):
        value = getattr(getattr(cfg, section), key)
        _require(value >= 0, source, f"{section}.{key}", "non-negative", value)
    _require(c.tau > 0, source, "cpsl.tau", "positive", c.tau)
    _require(c.self_labeling_lr_scale >= 0, source, "cpsl.self_labeling_lr_scale", "non-negative",
             c.self_labeling_lr_scale)
    _require(c.epsilon > 0, source, "cpsl.epsilon", "positive", c.epsilon)
    _require(c.sinkhorn_iterations >= 1, source, "cpsl.sinkhorn_iterations", "at least 1",
             c.sinkhorn_iterations)
    _require(c.pixels_per_image >= 1, source, "cpsl.pixels_per_image", "at least 1",
             c.pixels_per_image)
    _require(c.bank_size >= 0 and c.bank_size % max(1, c.pixels_per_image) == 0, source,
             "cpsl.bank_size", "a non-negative multiple of cpsl.pixels_per_image", c.bank_size)
    for key in ("ema_momentum", "alignment_momentum", "cutmix_prob"):
        _require(0.0 <= getattr(c, key) <= 1.0, source, f"cpsl.{key}", "in [0, 1]", getattr(c, key))
    _require(0.0 <= c.rectify_threshold < 1.0, source, "cpsl.rectify_threshold", "in [0, 1)",
             c.rectify_threshold)
    _require(c.marginal == "pseudo" or (c.class_balanced and not c.equal_partition), source, "cpsl.marginal",
             "'pseudo' with cpsl.equal_partition or without cpsl.class_balanced (both make r uniform)",
             c.marginal)
    if c.preset == "official":
        # The official step has no place for the Table 3 ablations; the paper preset implements them.
        for key, default in OFFICIAL_FIXED_SWITCHES.items():
            _require(getattr(c, key) == default, source, f"cpsl.{key}",
                     f"{str(default).lower()} under cpsl.preset=official (the ablations run with the paper "
                     "preset)", getattr(c, key))
    _require(cfg.distill.rounds >= 0, source, "distill.rounds", "non-negative", cfg.distill.rounds)
    _require(0.0 <= cfg.distill.threshold < 1.0, source, "distill.threshold", "in [0, 1)",
             cfg.distill.threshold)
    _require(all(s in SUPPORTED_NUM_CLASSES and s <= d.num_classes for s in cfg.eval.report_subsets),
             source, "eval.report_subsets", f"class counts from {SUPPORTED_NUM_CLASSES} no larger "
             "than data.num_classes", cfg.eval.report_subsets)
    _require(7 <= cfg.export.opset <= 21, source, "export.opset", "an ONNX opset in [7, 21]",
             cfg.export.opset)
    b = d.benchmark
    _require(b.height >= 32 and b.width >= 32, source, "data.benchmark.height/width",
             "at least 32 pixels each", [b.height, b.width])
    _require(0.0 <= b.shift <= 1.0, source, "data.benchmark.shift", "in [0, 1]", b.shift)
    return cfg


# What ``cpsl.preset: "official"`` sets (official-code-notes sections 1.2, 5, 8): 256 uniformly sampled
# pixels per image, 0.1 CE + RCE, CutMix with probability 0.5, the running-mean prototypes. A --set of one
# of these keys still wins.
OFFICIAL_PRESET = {"pixels_per_image": 256, "target_loss": "ce+rce", "cutmix_prob": 0.5,
                   "prototype_mode": "official"}


# Table 3 switches the official step does not implement; a config that changes them under the official
# preset is refused.
OFFICIAL_FIXED_SWITCHES = {"use_self_labeling": True, "use_self_training": True, "class_balanced": True,
                           "equal_partition": False, "strong_augmentation": True}


def _with_preset(raw: dict, explicit: set[str]) -> dict:
    cpsl = raw.get("cpsl")
    if not isinstance(cpsl, dict) or cpsl.get("preset") != "official":
        return raw
    preset = {k: v for k, v in OFFICIAL_PRESET.items() if f"cpsl.{k}" not in explicit}
    return {**raw, "cpsl": {**cpsl, **preset}}


def config_from_dict(raw: dict, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object")
    return validate(_build(Config, raw, "", source), source)


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a JSON config (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw = read_json(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    if overrides:
        raw = apply_overrides(raw, overrides, f"{source} --set")
        source += " (with --set overrides)"
    explicit = {text.split("=", 1)[0].strip() for text in overrides or []}
    return config_from_dict(_with_preset(raw, explicit), source)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    from cpsl_tf.io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2) + "\n")


def shrink(cfg: Config) -> Config:
    """A smoke-run version of any config: a few steps, tiny crops, a tiny model, a tiny bank.

    A generated benchmark is written to ``<folder>-smoke`` beside the configured one, so a smoke run never
    replaces the full benchmark.
    """
    small = dataclasses.replace

    def smoke_root(root: str) -> str:  # <folder>/source -> <folder>-smoke/source
        folder = Path(root).parent
        return str(folder.with_name(folder.name + "-smoke") / Path(root).name)

    roots = {}
    if "bench" in (cfg.data.source, cfg.data.target):
        roots = {"source_root": smoke_root(cfg.data.source_root),
                 "target_root": smoke_root(cfg.data.target_root)}
    cfg = small(
        cfg,
        name=cfg.name + "-smoke",
        data=small(cfg.data, source_size=[64, 128], target_size=[64, 128], crop_size=[64, 96],
                   benchmark=small(cfg.data.benchmark, height=64, width=128, num_source=16,
                                   num_target_train=16, num_target_val=8), **roots),
        model=small(cfg.model, backbone="resnet18", base_width=8, head_channels=32,
                    aspp_rates=[1, 2], imagenet_weights=False),
        train=small(cfg.train, batch_size=2, checkpoint_every=2, eval_every=2, log_every=1),
        warmup=small(cfg.warmup, iterations=2),
        cpsl=small(cfg.cpsl, iterations=2, bank_size=64, pixels_per_image=16),
        distill=small(cfg.distill, iterations=2),
        eval=small(cfg.eval, batch_size=2),
        export=small(cfg.export, height=64, width=128, calibration_images=4),
    )
    return validate(cfg, "smoke config")
