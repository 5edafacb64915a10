"""Where a stage's samples come from: the configured datasets, or the generated benchmark."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cpsl_tf.config import Config
from cpsl_tf.data.datasets import DatasetError, Sample, check_pairs, list_samples, reader_for
from cpsl_tf.training.stage import StageError

log = logging.getLogger(__name__)

_PREPARE_HINT = {
    "gta5": "download GTA5 (images/ and labels/ folders) and point data.source_root at it",
    "synthia": "download SYNTHIA-RAND-CITYSCAPES (RGB/ and GT/LABELS/) and point data.source_root at it",
    "cityscapes": "download leftImg8bit_trainvaltest and gtFine_trainvaltest and point data.target_root at "
                  "the folder holding leftImg8bit/ and gtFine/",
    "folder": "point data.target_root at a folder of images",
}


@dataclass
class StageSamples:
    source: list[Sample]
    target_train: list[Sample]
    target_val: list[Sample]


def ensure_benchmark(cfg: Config) -> None:
    """Generate the benchmark into the configured folders if it is not there yet."""
    if cfg.data.source != "bench" and cfg.data.target != "bench":
        return
    from cpsl_tf.benchmark.generate import generate_benchmark

    out = Path(cfg.data.source_root).parent
    if Path(cfg.data.target_root).parent != out:
        raise StageError("data.source_root and data.target_root of the benchmark must be <out>/source and "
                         f"<out>/target of one folder; got {cfg.data.source_root} and {cfg.data.target_root}")
    b = cfg.data.benchmark
    generate_benchmark(out, variant=b.variant, seed=b.seed, height=b.height, width=b.width,
                       num_source=b.num_source, num_target_train=b.num_target_train,
                       num_target_val=b.num_target_val, workers=2, shift=b.shift)


def _list(kind: str, role: str, root: str, split: str, num_classes: int, what: str,
          bad_samples: str) -> list[Sample]:
    """The samples of one split; unusable pairs are left out with a warning or refused (``bad_samples``)."""
    dataset = reader_for(kind, role=role)
    try:
        samples = list_samples(dataset, root, split=split, num_classes=num_classes)
    except DatasetError as err:
        raise StageError(f"{what} ({dataset}, split {split}) not usable at {root}: {err}\n"
                         f"To prepare it: {_PREPARE_HINT.get(dataset, '')}; then check it with "
                         f"python scripts/prepare_data.py verify --dataset {dataset} --root {root}") from err
    # Headers only: unreadable files and image/label size mismatches stop here, before any training,
    # instead of inside tf.data. Truncated pixel data and unknown label ids surface when decoded.
    try:
        good, _ = check_pairs(samples, bad_samples)
    except DatasetError as err:
        raise StageError(f"{what} at {root}: {err}") from err
    if not good:
        raise StageError(f"{what} at {root}: none of its {len(samples)} sample(s) is usable (see the warning "
                         "above for the reasons)")
    return good


def stage_samples(cfg: Config, need_val_labels: bool = True) -> StageSamples:
    ensure_benchmark(cfg)
    d = cfg.data
    source = _list(d.source, "source", d.source_root, "train", d.num_classes, "source dataset",
                   d.bad_samples)
    target_train = _list(d.target, "target", d.target_root, "train", d.num_classes, "target training set",
                         d.bad_samples)
    target_val = _list(d.target, "target", d.target_root, cfg.eval.split, d.num_classes,
                       "target validation set", d.bad_samples)
    if need_val_labels and not any(s.label for s in target_val):
        log.warning("target validation set at %s has no labels: stages report no target-val metrics",
                    d.target_root)
    return StageSamples(source, target_train, target_val)
