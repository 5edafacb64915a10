"""Stage ``cpsl`` (:data:`CPSL`): CPSL adaptation from the warm-up model and the pseudo-label stage's outputs.

The stage builds the :class:`~cpsl_tf.cpsl.model.CPSLModel` (student, momentum teacher, self-labeling head,
grouped SGD) and its input stream with the soft pseudo labels, and hands them to the trainer skeleton
(:func:`cpsl_tf.training.trainer.train_stage`); after training it saves the self-labeling head's state
beside the network.
"""

from __future__ import annotations

import logging

import numpy as np

from cpsl_tf.cpsl.model import CPSLModel
from cpsl_tf.data import datasets
from cpsl_tf.data.pipeline import make_training_dataset
from cpsl_tf.io_utils import atomic_path
from cpsl_tf.training.builders import (
    TARGET_MAP_STRIDE,
    build_segmentation_optimizer,
    load_stage_model,
    output_shape,
)
from cpsl_tf.training.inputs import StageSamples
from cpsl_tf.training.pseudo import PSEUDO, load_adaptation_inputs
from cpsl_tf.training.stage import RunContext, Stage, StageError
from cpsl_tf.training.strategy import synchronize_batch_norm, training_scope
from cpsl_tf.training.trainer import StageTraining, train_stage
from cpsl_tf.training.warmup import WARMUP

log = logging.getLogger(__name__)


def build_cpsl_model(ctx: RunContext, prototypes, class_distribution) -> CPSLModel:
    """Student and momentum network from the warm-up model, the head from the prototypes, grouped SGD.
    Call it inside :func:`cpsl_tf.training.strategy.training_scope`."""
    cfg = ctx.cfg
    student = synchronize_batch_norm(load_stage_model(ctx, WARMUP), cfg.train.sync_batch_norm)
    teacher = synchronize_batch_norm(load_stage_model(ctx, WARMUP), cfg.train.sync_batch_norm)
    model = CPSLModel(student, teacher, prototypes, class_distribution, cfg.cpsl,
                      align_corners=cfg.model.align_corners, seed=cfg.train.seed)
    t = cfg.train
    w_lr = cfg.cpsl.self_labeling_lr_scale * t.head_lr
    model.use_optimizer(build_segmentation_optimizer(cfg, t.lr, t.head_lr, cfg.cpsl.iterations,
                                                     model.trainable_for_step, self_labeling_lr=w_lr))
    model.compile(optimizer=model.grouped.optimizer)
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

    def build(samples: StageSamples) -> StageTraining:
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

        def mechanism() -> dict:
            summary = self_labeling_summary(model)
            return {"head_travel": summary["head_travel_median"],
                    "head_travel_max": max(summary["head_travel_degrees"]),
                    "delta_shift": summary["delta_shift"]}

        def finish() -> dict:
            save_self_labeling_state(model, ctx.layout.stage(CPSL.name).self_labeling_state)
            summary = self_labeling_summary(model)
            log.info("self-labeling head: W' moved a median %.1f degrees (max %.1f); largest cosine between "
                     "two classes %.3f; delta_pseudo moved %.3f (L1)", summary["head_travel_median"],
                     max(summary["head_travel_degrees"]), summary["max_class_cosine"], summary["delta_shift"])
            return {"self_labeling": summary}

        state = {"cpsl_model": model, "optimizer": model.grouped.optimizer}
        return StageTraining(model, model.student, state, make_dataset, cfg.cpsl.iterations,
                             diagnostics=mechanism, finish=finish)

    return train_stage(ctx, CPSL, cfg.train.seed, build)


# Everything of the cpsl section: the trainer is given the whole section (cpsl_tf.cpsl.model reads it in
# train_step).
CPSL = Stage("cpsl", needs=(WARMUP, PSEUDO), reads=("cpsl",), run=run_cpsl_stage)
