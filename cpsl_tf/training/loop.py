"""Resumable ``model.fit`` for one stage: restore the latest checkpoint, train the remaining steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from cpsl_tf.training.callbacks import NonFiniteGuard, PeriodicEvaluation, StepCheckpoint

log = logging.getLogger(__name__)


def random_states(state: dict) -> list:
    """The seed-generator variables of the models in ``state`` (dropout randomness). Keras keeps them
    outside ``model.weights``, so a checkpoint of the model alone would replay the first steps' masks."""
    return [v.value for obj in state.values() if isinstance(obj, keras.Model)
            for v in obj.variables if "seed_generator" in v.path]


def fit_resumable(trainer: keras.Model, make_dataset: Callable[[int], tf.data.Dataset], total_steps: int,
                  stage_dir: Path, state: dict, checkpoint_every: int, eval_every: int | None = None,
                  evaluate: Callable[[], dict] | None = None, verbose: int | str = "auto") -> int:
    """Train ``trainer`` for ``total_steps`` optimizer steps, resuming from ``stage_dir/checkpoints``.

    ``state`` names every trackable whose value must survive a restart (networks, optimizers, memory
    bank, ...). ``make_dataset(start_step)`` builds the input stream from a given step so that a resumed
    run sees the same samples as an uninterrupted one. Returns the number of steps run now.
    """
    stage_dir = Path(stage_dir)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage_step")
    checkpoint = tf.train.Checkpoint(stage_step=step, random_states=random_states(state), **state)
    manager = tf.train.CheckpointManager(checkpoint, str(stage_dir / "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        log.info("resumed %s at step %d from %s", stage_dir.name, int(step), manager.latest_checkpoint)
    remaining = total_steps - int(step)
    if remaining <= 0:
        return 0
    callbacks = [NonFiniteGuard(step), StepCheckpoint(step, manager, checkpoint_every)]
    if evaluate is not None and eval_every:
        callbacks.append(PeriodicEvaluation(step, evaluate, eval_every, stage_dir / "eval_history.jsonl"))
    callbacks.append(keras.callbacks.TensorBoard(log_dir=str(stage_dir / "tensorboard"), update_freq=50,
                                                 write_graph=False))
    trainer.fit(make_dataset(int(step)), epochs=1, steps_per_epoch=remaining, callbacks=callbacks,
                verbose=verbose)
    return remaining
