"""What values a config may hold: the bounds of every numeric key (:data:`BOUNDS`) and :func:`validate`, which
checks them and then the rules that relate keys; :func:`validate_for_training` adds what only training
needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cpsl_tf.config.schema import Config, ConfigError
from cpsl_tf.labels import SUPPORTED_NUM_CLASSES


@dataclass(frozen=True)
class Bound:
    """The values a numeric key (or every entry of a numeric list) may take: always finite, and within
    ``low``/``high`` where given (``open_low``/``open_high`` exclude the limit itself)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self, integer: bool) -> str:
        if self.low is not None and self.high is not None:
            return (f"{'an integer' if integer else 'a number'} in {'(' if self.open_low else '['}"
                    f"{self.low:g}, {self.high:g}{')' if self.open_high else ']'}")
        if integer:
            return f"an integer of at least {self.low:g}" if self.low is not None else "an integer"
        if self.low == 0:
            return "positive and finite" if self.open_low else "non-negative and finite"
        return "a finite number" if self.low is None else f"a finite number >= {self.low:g}"


FINITE, POSITIVE, NON_NEGATIVE = Bound(), Bound(0, open_low=True), Bound(0)
PROBABILITY, BELOW_ONE = Bound(0, 1), Bound(0, 1, open_high=True)


def at_least(low: int) -> Bound:
    return Bound(low)


# Every numeric key of Config (for a list, each entry). Rates are positive, weights and counts of steps
# non-negative, momenta and probabilities in [0, 1]; validate() adds the checks that relate keys.
BOUNDS: dict[str, Bound] = {
    "data.num_classes": at_least(1),
    "data.source_size": at_least(1), "data.target_size": at_least(1), "data.crop_size": at_least(1),
    "data.scale_range": POSITIVE,
    "data.benchmark.seed": at_least(0), "data.benchmark.shift": PROBABILITY,
    "data.benchmark.height": at_least(32), "data.benchmark.width": at_least(32),
    "data.benchmark.num_source": at_least(1), "data.benchmark.num_target_train": at_least(1),
    "data.benchmark.num_target_val": at_least(1),
    "model.base_width": at_least(8), "model.head_channels": at_least(32), "model.se_reduction": at_least(1),
    "model.dropout": BELOW_ONE, "model.aspp_rates": at_least(1), "model.input_mean": FINITE,
    "model.input_std": POSITIVE, "model.bn_momentum": PROBABILITY, "model.bn_epsilon": POSITIVE,
    "train.batch_size": at_least(1), "train.lr": POSITIVE, "train.head_lr": POSITIVE,
    "train.momentum": BELOW_ONE, "train.weight_decay": NON_NEGATIVE, "train.poly_power": NON_NEGATIVE,
    "train.seed": at_least(0), "train.gradient_accumulation_steps": at_least(1),
    "train.checkpoint_every": at_least(1), "train.eval_every": at_least(1), "train.log_every": at_least(1),
    "warmup.iterations": at_least(0), "warmup.lr": POSITIVE, "warmup.adversarial_weight": NON_NEGATIVE,
    "warmup.discriminator_lr": POSITIVE,
    "cpsl.iterations": at_least(0), "cpsl.lambda_sl": NON_NEGATIVE, "cpsl.lambda_reg": NON_NEGATIVE,
    "cpsl.tau": POSITIVE, "cpsl.epsilon": POSITIVE, "cpsl.sinkhorn_iterations": at_least(1),
    "cpsl.bank_size": at_least(0), "cpsl.pixels_per_image": at_least(1), "cpsl.ema_momentum": PROBABILITY,
    "cpsl.alignment_momentum": PROBABILITY, "cpsl.self_labeling_lr_scale": NON_NEGATIVE,
    "cpsl.rectify_threshold": BELOW_ONE, "cpsl.cutmix_prob": PROBABILITY,
    # Two distillation stages exist (distill1, distill2).
    "distill.rounds": Bound(0, 2), "distill.iterations": at_least(0), "distill.lr": POSITIVE,
    "distill.head_lr": POSITIVE, "distill.threshold": BELOW_ONE, "distill.kd_weight": NON_NEGATIVE,
    "distill.student_width": POSITIVE, "distill.student_head_channels": at_least(1),
    "eval.batch_size": at_least(1), "eval.report_subsets": at_least(1),
    "export.opset": Bound(7, 21), "export.height": at_least(1), "export.width": at_least(1),
    "export.max_abs_logit_diff": NON_NEGATIVE,
    # Above 1e-3 of the logits' scale the gate would no longer tell a summation order from a wrong op.
    "export.max_relative_logit_diff": Bound(0, 1e-3), "export.min_argmax_agreement": PROBABILITY,
    "export.min_second_runtime_agreement": PROBABILITY,
    "export.calibration_images": at_least(1),
}


# Table 3 switches the official step does not implement; a config that changes them under the official
# preset is refused.
OFFICIAL_FIXED_SWITCHES = {"use_self_labeling": True, "use_self_training": True, "class_balanced": True,
                           "equal_partition": False, "strong_augmentation": True}


def _require(ok: bool, source: str, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}")


def _lookup(cfg: Config, key: str) -> Any:
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_bounds(cfg: Config, source: str) -> None:
    for key, bound in BOUNDS.items():
        value = _lookup(cfg, key)
        entries = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, entry in entries:
            _require(bound.allows(entry), source, key if index is None else f"{key}[{index}]",
                     bound.describe(integer=isinstance(entry, int)), entry)


def validate(cfg: Config, source: str = "config") -> Config:
    """Reject impossible values, naming the key and what was expected: the bounds of :data:`BOUNDS`, then
    the checks that relate keys."""
    d, m, c = cfg.data, cfg.model, cfg.cpsl
    # The run folder is <train.run_dir>/<name>: a separator or '..' in the name would put it elsewhere.
    _require(cfg.name not in ("", ".", "..") and not any(sep in cfg.name for sep in "/\\")
             and cfg.name.isprintable() and cfg.name == cfg.name.strip(), source, "name",
             "a plain folder name (it names the run folder under train.run_dir): not empty, '.' or '..', no "
             "'/' or '\\', no control characters or surrounding spaces", cfg.name)
    for key, value, form in (("data.source_size", d.source_size, "[height, width]"),
                             ("data.target_size", d.target_size, "[height, width]"),
                             ("data.crop_size", d.crop_size, "[height, width]"),
                             ("data.scale_range", d.scale_range, "[low, high]")):
        _require(len(value) == 2, source, key, form, value)
    _check_bounds(cfg, source)
    _require(d.num_classes in SUPPORTED_NUM_CLASSES, source, "data.num_classes",
             f"one of {SUPPORTED_NUM_CLASSES}", d.num_classes)
    _require(d.scale_range[0] <= d.scale_range[1], source, "data.scale_range", "[low, high] with low <= high",
             d.scale_range)
    _require(m.base_width % 8 == 0, source, "model.base_width", "a positive multiple of 8", m.base_width)
    _require(m.head_channels % 32 == 0, source, "model.head_channels",
             "a positive multiple of 32 (GroupNorm uses 32 groups)", m.head_channels)
    _require(len(m.input_mean) == 3 and len(m.input_std) == 3, source, "model.input_mean/input_std",
             "three values each", [m.input_mean, m.input_std])
    _require(c.bank_size % c.pixels_per_image == 0, source, "cpsl.bank_size",
             "a non-negative multiple of cpsl.pixels_per_image", c.bank_size)
    _require(c.marginal == "pseudo" or (c.class_balanced and not c.equal_partition), source, "cpsl.marginal",
             "'pseudo' with cpsl.equal_partition or without cpsl.class_balanced (both make r uniform)",
             c.marginal)
    if c.preset == "official":
        # The official step has no place for the Table 3 ablations; the paper preset implements them.
        for key, default in OFFICIAL_FIXED_SWITCHES.items():
            _require(getattr(c, key) == default, source, f"cpsl.{key}",
                     f"{str(default).lower()} under cpsl.preset=official (the ablations run with the paper "
                     "preset)", getattr(c, key))
    _require(all(s in SUPPORTED_NUM_CLASSES and s <= d.num_classes for s in cfg.eval.report_subsets),
             source, "eval.report_subsets", f"class counts from {SUPPORTED_NUM_CLASSES} no larger "
             "than data.num_classes", cfg.eval.report_subsets)
    return cfg


def validate_for_training(cfg: Config, source: str = "config") -> Config:
    """What only training needs besides :func:`validate`: each training crop is cut from an image resized to
    data.source_size or data.target_size, so it must fit inside both. (Evaluation reads the images at
    data.target_size and never crops: a smaller target size is fine there.)"""
    d = cfg.data
    _require(all(crop <= min(s, t) for crop, s, t in zip(d.crop_size, d.source_size, d.target_size)), source,
             "data.crop_size", f"no larger than data.source_size {d.source_size} and data.target_size "
             f"{d.target_size} in each dimension (training cuts it from those images)", d.crop_size)
    return cfg
