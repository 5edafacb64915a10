"""The one skeleton of the training stages (warm-up, CPSL, distillation).

Seed, samples; the stage builds what it trains (:class:`StageTraining`: a ``keras.Model`` whose
``train_step`` is one step, the network it trains, what a checkpoint carries, the input stream); then the
resumable ``model.fit`` with periodic target-val evaluation (:func:`cpsl_tf.training.loop.fit_resumable`),
the network saved with its sidecar, and the final evaluation, which reuses the periodic one of the last step
when there was one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf

from cpsl_tf.models.checkpoint import save_model_checkpoint
from cpsl_tf.training.builders import checkpoint_meta, evaluate_on_target
from cpsl_tf.training.callbacks import StageEvaluation
from cpsl_tf.training.inputs import StageSamples, stage_samples
from cpsl_tf.training.loop import fit_resumable
from cpsl_tf.training.stage import RunContext, Stage


@dataclass
class StageTraining:
    """What a training stage trains, built by the stage for :func:`train_stage`."""

    trainer: keras.Model  # runs one step in its train_step
    network: keras.Model  # the segmenter the stage saves and evaluates
    state: dict  # every trackable whose value must survive a restart, by checkpoint name
    make_dataset: Callable[[int], tf.data.Dataset]  # the input stream from a given step on
    iterations: int
    diagnostics: Callable[[], dict] | None = None  # numbers added to each periodic evaluation
    finish: Callable[[], dict] | None = None  # after the network is saved: more outputs; result entries
    architecture: dict | None = None  # names the network in its sidecar when it is not the model section's
    distilled_from: dict | None = None  # the teacher of a distilled network (builders.teacher_record)


def train_stage(ctx: RunContext, stage: Stage, seed: int,
                build: Callable[[StageSamples], StageTraining]) -> dict | None:
    """Train what ``build(samples)`` returns, resuming from the stage's checkpoints, save the network and
    return the target-val scores (None without target-val labels)."""
    cfg = ctx.cfg
    keras.utils.set_random_seed(seed)
    samples = stage_samples(cfg)
    training = build(samples)
    with_labels = all(s.label is not None for s in samples.target_val)
    # One evaluation at the end of the stage: the periodic one of the last step, if there was one.
    evaluation = StageEvaluation(
        lambda progress: evaluate_on_target(training.network, cfg, samples.target_val, progress=progress),
        diagnostics=training.diagnostics)
    fit_resumable(training.trainer, training.make_dataset, training.iterations, ctx.stage_dir(stage.name),
                  training.state, cfg.train.checkpoint_every, cfg.train.eval_every,
                  evaluation if with_labels else None, log_every=cfg.train.log_every,
                  fingerprint=stage.fingerprint(cfg))
    save_model_checkpoint(training.network, ctx.layout.stage(stage.name).model,
                          checkpoint_meta(cfg, stage, training.architecture, training.distilled_from))
    entries = training.finish() if training.finish is not None else {}
    return {**evaluation.final(), **entries} if with_labels else None
