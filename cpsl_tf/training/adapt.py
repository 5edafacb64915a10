"""Stage ``cpsl``: CPSL adaptation from the warm-up model and the pseudo-label stage's outputs."""

from __future__ import annotations

import logging

import keras
import numpy as np

from cpsl_tf.cpsl.model import CPSLModel
from cpsl_tf.data import datasets
from cpsl_tf.data.pipeline import make_training_dataset
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.models.checkpoint import save_model_checkpoint
from cpsl_tf.training.callbacks import StageEvaluation
from cpsl_tf.training.inputs import stage_samples
from cpsl_tf.training.loop import fit_resumable
from cpsl_tf.training.pseudo import load_adaptation_inputs, load_stage_model, output_shape
from cpsl_tf.training.stages import RunContext, StageError, stage_fingerprint
from cpsl_tf.training.strategy import synchronize_batch_norm, training_scope
from cpsl_tf.training.warmup import build_segmentation_optimizer, checkpoint_meta, evaluate_on_target

# Target maps (P_ST, rectified labels, consistency) live at 1/4 of the crop, as in the official code.
TARGET_MAP_STRIDE = 4
SELF_LABELING_STATE = "self_labeling.npz"
log = logging.getLogger(__name__)


def build_cpsl_model(ctx: RunContext, prototypes, class_distribution) -> CPSLModel:
    """Student and momentum network from the warm-up model, the head from the prototypes, grouped SGD.
    Call it inside :func:`cpsl_tf.training.strategy.training_scope`."""
    cfg = ctx.cfg
    student = synchronize_batch_norm(load_stage_model(ctx, "warmup"), cfg.train.sync_batch_norm)
    teacher = synchronize_batch_norm(load_stage_model(ctx, "warmup"), cfg.train.sync_batch_norm)
    model = CPSLModel(student, teacher, prototypes, class_distribution, cfg.cpsl,
                      align_corners=cfg.model.align_corners, seed=cfg.train.seed)
    t = cfg.train
    w_lr = cfg.cpsl.self_labeling_lr_scale * t.head_lr
    model.use_optimizer(build_segmentation_optimizer(cfg, t.lr, t.head_lr, cfg.cpsl.iterations,
                                                     model.trainable_for_step, self_labeling_lr=w_lr))
    model.compile(optimizer=model.grouped.groups["backbone"])
    return model


def save_self_labeling_state(model: CPSLModel, path) -> None:
    """The head's start (the normalised Eq. 7 prototypes), W and its momentum copy W' at the end, and
    delta_pseudo at its start (Eq. 10) and end (Eq. 11): the class distribution of the rectified labels, for
    reports (paper Fig. 6)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, initial_prototypes=model.head.initial.numpy(), prototypes=model.head.prototypes.numpy(),
                 momentum_prototypes=model.head.momentum_prototypes.numpy(),
                 delta_start=model.delta_start.numpy(), delta_pseudo=model.delta_pseudo.numpy())


def self_labeling_summary(model: CPSLModel) -> dict:
    """Whether the clustering moved, and how: per-class travel of W' in degrees from its start, the largest
    cosine between two classes of W' (near 1 = two clusters collapsed into one), the range of |W|, and the L1
    distance of delta_pseudo from its start."""
    travel = model.head.travel_degrees().numpy()
    unit = model.head.momentum_prototypes.numpy()
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    cosines = unit @ unit.T
    norms = np.linalg.norm(model.head.prototypes.numpy(), axis=1)
    delta = model.delta_pseudo.numpy()
    return {"head_travel_degrees": [float(t) for t in travel], "head_travel_median": float(np.median(travel)),
            "max_class_cosine": float(cosines[~np.eye(len(cosines), dtype=bool)].max()),
            "head_norm_range": [float(norms.min()), float(norms.max())],
            "delta_shift": float(np.abs(delta - model.delta_start.numpy()).sum()),
            "delta_pseudo": [float(v) for v in delta]}


def ground_truth_marginal(samples, num_classes: int) -> np.ndarray:
    """The class distribution of the target-train labels, for ``cpsl.marginal=ground_truth``."""
    unlabelled = [s.name for s in samples if s.label is None]
    if unlabelled:
        raise StageError(f"cpsl.marginal=ground_truth needs target-train labels; {len(unlabelled)} images "
                         f"have none, e.g. {unlabelled[0]!r}")
    counts = datasets.class_pixel_counts(samples, num_classes)
    if counts.sum() == 0:
        raise StageError("cpsl.marginal=ground_truth: the target-train labels hold no class pixel")
    return (counts / counts.sum()).astype(np.float32)


def run_cpsl_stage(ctx: RunContext) -> dict | None:
    cfg = ctx.cfg
    keras.utils.set_random_seed(cfg.train.seed)
    samples = stage_samples(cfg)
    store, distribution, prototypes = load_adaptation_inputs(ctx)
    missing = [s.name for s in samples.target_train if s.name not in store]
    if missing:
        raise StageError(f"the pseudo-label store has no map for {len(missing)} target images, e.g. "
                         f"{missing[0]!r}; re-run --stage pseudo")
    if cfg.cpsl.marginal == "ground_truth":
        distribution = ground_truth_marginal(samples.target_train, cfg.data.num_classes)
    with training_scope(cfg.train):
        model = build_cpsl_model(ctx, prototypes, distribution)
    # The store must hold this network's output maps: an index describing another shape is refused.
    store.expect(shape=output_shape(model.student, cfg))

    def make_dataset(start_batch: int):
        return make_training_dataset(samples.source, samples.target_train, cfg, cfg.train.seed,
                                     pseudo_lookup=store.lookup, soft_stride=TARGET_MAP_STRIDE,
                                     start_batch=start_batch)

    with_labels = all(s.label is not None for s in samples.target_val)

    def mechanism() -> dict:
        summary = self_labeling_summary(model)
        return {"head_travel": summary["head_travel_median"],
                "head_travel_max": max(summary["head_travel_degrees"]), "delta_shift": summary["delta_shift"]}

    # One evaluation at the end of the stage: the periodic one of the last step, if there was one.
    evaluation = StageEvaluation(
        lambda progress: evaluate_on_target(model.student, cfg, samples.target_val, progress=progress),
        diagnostics=mechanism)

    state = {"cpsl_model": model, **model.grouped.groups}
    fit_resumable(model, make_dataset, cfg.cpsl.iterations, ctx.stage_dir("cpsl"), state,
                  cfg.train.checkpoint_every, cfg.train.eval_every,
                  evaluation if with_labels else None, log_every=cfg.train.log_every,
                  fingerprint=stage_fingerprint(cfg, "cpsl"))
    save_model_checkpoint(model.student, ctx.model_checkpoint("cpsl"), checkpoint_meta(cfg, "cpsl"))
    save_self_labeling_state(model, ctx.stage_dir("cpsl") / SELF_LABELING_STATE)
    summary = self_labeling_summary(model)
    log.info("self-labeling head: W' moved a median %.1f degrees (max %.1f); largest cosine between two "
             "classes %.3f; delta_pseudo moved %.3f (L1)", summary["head_travel_median"],
             max(summary["head_travel_degrees"]), summary["max_class_cosine"], summary["delta_shift"])
    if not with_labels:
        return None
    return {**evaluation.final(), "self_labeling": summary}
