"""Smoke runs: :func:`shrink` turns any config into a few steps on tiny images with a tiny model."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from cpsl_tf.config.parsing import config_from_dict, set_key, to_dict
from cpsl_tf.config.schema import Config

# What shrink() sets: a few steps, tiny crops, a tiny model, a tiny bank.
SMOKE = {
    "data.source_size": [64, 128], "data.target_size": [64, 128], "data.crop_size": [64, 96],
    "data.benchmark.height": 64, "data.benchmark.width": 128, "data.benchmark.num_source": 16,
    "data.benchmark.num_target_train": 16, "data.benchmark.num_target_val": 8,
    "model.backbone": "resnet18", "model.base_width": 8, "model.head_channels": 32,
    "model.aspp_rates": [1, 2], "model.imagenet_weights": False,
    "train.batch_size": 2, "train.checkpoint_every": 2, "train.eval_every": 2, "train.log_every": 1,
    "warmup.iterations": 2, "cpsl.iterations": 2, "cpsl.bank_size": 64, "cpsl.pixels_per_image": 16,
    "distill.iterations": 2, "eval.batch_size": 2,
    "export.height": 64, "export.width": 128, "export.calibration_images": 4,
}


def shrink(cfg: Config, keep: Collection[str] = (), source: str = "smoke config") -> Config:
    """A smoke-run version of any config (:data:`SMOKE`, the name gains ``-smoke`` and the description says
    it is a smoke run); the dotted keys in ``keep`` (those set explicitly) keep their values.

    A generated benchmark is written to ``<folder>-smoke`` beside the configured one, even when its folders
    were set explicitly, so a smoke run never replaces the full benchmark.
    """
    def smoke_root(root: str) -> str:  # <folder>/source -> <folder>-smoke/source
        folder = Path(root).parent
        return str(folder.with_name(folder.name + "-smoke") / Path(root).name)

    raw = to_dict(cfg)
    # The config's own description would state the sizes it was written for, not the shrunk ones.
    changes = {"name": cfg.name + "-smoke", "description": f"A smoke run (--quick) of config {cfg.name}.",
               **SMOKE}
    for key, value in changes.items():
        if key not in keep:
            set_key(raw, key.split("."), value, source)
    if "bench" in (cfg.data.source, cfg.data.target):
        raw["data"]["source_root"] = smoke_root(cfg.data.source_root)
        raw["data"]["target_root"] = smoke_root(cfg.data.target_root)
    return config_from_dict(raw, source)
