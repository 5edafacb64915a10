"""What the training stages build alike: segmenters, their grouped SGD, the networks earlier stages left,
a network's sidecar, and the target-val evaluation in the shape of ``results.json``.

These sit below the stages: a stage module imports them, never another stage module's helpers.
"""

from __future__ import annotations

import dataclasses
import logging

import keras

from cpsl_tf.config import Config
from cpsl_tf.cpsl.head import SELF_LABELING_PREFIX
from cpsl_tf.evaluation.evaluate import evaluate_model
from cpsl_tf.io_utils import sha256_file
from cpsl_tf.labels import class_names
from cpsl_tf.models.checkpoint import (
    NORMALISATION,
    CheckpointError,
    describe_network,
    load_segmenter,
    read_checkpoint_meta,
    sidecar_path,
)
from cpsl_tf.models.resnet import load_imagenet_backbone
from cpsl_tf.models.segmenter import build_segmenter, is_head_variable, output_size
from cpsl_tf.training.optim import GroupedSGD, SegmentationOptimizer
from cpsl_tf.training.stage import RunContext, Stage, StageError

log = logging.getLogger(__name__)

# Target maps (P_ST, rectified labels, consistency, distillation labels) live at 1/4 of the crop, as in the
# official code.
TARGET_MAP_STRIDE = 4


def build_segmentation_optimizer(cfg: Config, lr: float, head_lr: float, total_steps: int,
                                 variables, self_labeling_lr: float | None = None) -> SegmentationOptimizer:
    """SGD groups of the official code: backbone at ``lr``, segmentation head at ``head_lr`` and, for CPSL,
    the self-labeling head's W at ``self_labeling_lr``; coupled weight decay on all of them; gradient
    accumulation and float16 loss scaling from ``cfg.train``."""
    t = cfg.train
    group_rates = {"backbone": lr, "head": head_lr}
    if self_labeling_lr is not None:
        group_rates["self_labeling"] = self_labeling_lr

    def group_of(variable) -> str:
        if variable.path.startswith(SELF_LABELING_PREFIX):
            return "self_labeling"
        return "head" if is_head_variable(variable) else "backbone"

    sgd = GroupedSGD(group_rates, group_of, t.weight_decay, total_steps, t.momentum, t.poly_power,
                     t.gradient_accumulation_steps)
    optimizer = SegmentationOptimizer(sgd, loss_scaling=t.mixed_precision == "mixed_float16")
    optimizer.build(variables)
    return optimizer


def new_segmenter(cfg: Config) -> keras.Model:
    """A segmenter for the config, with the ImageNet backbone when ``model.imagenet_weights`` is set."""
    segmenter = build_segmenter(cfg.model, cfg.data.num_classes)
    if cfg.model.imagenet_weights:
        try:
            load_imagenet_backbone(segmenter, cfg.model.backbone)
        except Exception as err:  # download or file problems surface with the fix in the message
            raise StageError(
                f"could not load ImageNet weights for model.backbone={cfg.model.backbone}: {err}. They are "
                "downloaded by keras.applications on first use (~/.keras/models); without internet copy the "
                "file there, or run with --set model.imagenet_weights=false") from err
    return segmenter


def checkpoint_meta(cfg: Config, stage: Stage, architecture: dict | None = None,
                    distilled_from: dict | None = None) -> dict:
    """The sidecar of a stage's network; ``fingerprint`` lets the stages that load it check it was trained
    under their config; ``input_size`` (H, W) feeds it in evaluate and predict away from its run folder;
    ``architecture`` names a network other than the model section's (see ``models.checkpoint``);
    ``distilled_from`` describes the teacher of a distilled network (:func:`teacher_record`)."""
    meta = {"model": cfg.model, "num_classes": cfg.data.num_classes,
            "class_names": list(class_names(cfg.data.num_classes)), "stage": stage.name, "config": cfg.name,
            "fingerprint": stage.fingerprint(cfg), "input_size": list(cfg.data.target_size)}
    if architecture is not None:
        mean, std = NORMALISATION[architecture["name"]]
        meta["model"] = dataclasses.replace(cfg.model, input_mean=list(mean), input_std=list(std))
        meta["architecture"] = architecture
    if distilled_from is not None:
        meta["distilled_from"] = distilled_from
    return meta


def teacher_record(ctx: RunContext, stage: Stage) -> dict:
    """What a distilled network's sidecar says of its teacher, the network ``stage`` left: the stage, the
    network, the SHA-256 of its weights and, when the teacher was itself distilled, its own teacher."""
    path = ctx.layout.stage(stage.name).model
    meta = read_checkpoint_meta(path)
    record = {"stage": stage.name, "network": describe_network(meta), "weights_sha256": sha256_file(path)}
    if "distilled_from" in meta:
        record["distilled_from"] = meta["distilled_from"]
    return record


def load_stage_model(ctx: RunContext, stage: Stage) -> keras.Model:
    """The network that ``stage`` left, refused when it is damaged or was trained under another config
    (its sidecar's fingerprint; sidecars from before fingerprints were recorded are taken with a warning)."""
    path = ctx.layout.stage(stage.name).model
    rerun = f"python scripts/train.py --config <config> --stage {stage.name}"
    if not path.exists():
        raise StageError(f"stage '{stage.name}' has no model at {path}; run it first ({rerun})")
    try:
        model, meta = load_segmenter(path)
    except CheckpointError as err:
        raise StageError(f"{err}; re-run stage {stage.name} to write it again ({rerun}: it resumes from its "
                         "last checkpoint)") from err
    if meta["num_classes"] != ctx.cfg.data.num_classes:
        raise StageError(f"{path} predicts {meta['num_classes']} classes but the config has "
                         f"data.num_classes={ctx.cfg.data.num_classes}")
    recorded, expected = meta.get("fingerprint"), stage.fingerprint(ctx.cfg)
    if recorded is None:
        log.warning("%s records no config fingerprint (written before they were recorded): it cannot be "
                    "checked to belong to this config", sidecar_path(path))
    elif recorded != expected:
        raise StageError(f"{path} was trained under another config (fingerprint {recorded} in "
                         f"{sidecar_path(path).name}; this config's stage {stage.name} has {expected}); "
                         f"re-run stage {stage.name} with this config ({rerun})")
    return model


def output_shape(model: keras.Model, cfg: Config) -> tuple[int, int]:
    """(h, w) of the network's output for a target image of ``data.target_size``, read from the traced
    graph of the compiled forward pass: never an eager full-resolution pass (R101 at 1024x2048 is killed
    above 23 GB that way)."""
    return output_size(model, cfg.data.target_size)


def evaluate_on_target(segmenter: keras.Model, cfg: Config, samples, progress: bool | None = None) -> dict:
    """Target-val scores in the shape of ``results.json`` (fractions; per-class lists)."""
    result = evaluate_model(segmenter, samples, cfg.data.num_classes, image_size=cfg.data.target_size,
                            batch_size=cfg.eval.batch_size, align_corners=cfg.model.align_corners,
                            subsets=cfg.eval.report_subsets or None,
                            class_names=class_names(cfg.data.num_classes), progress=progress)
    return {"miou": result["miou"], "mpa": result["mpa"], "pa": result["pa"],
            "iou": [c["iou"] for c in result["classes"]], "acc": [c["acc"] for c in result["classes"]],
            **({"subsets": result["subsets"]} if result.get("subsets") else {})}
