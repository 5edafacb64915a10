"""Resumable training of one stage: restore the latest checkpoint, train the remaining steps.

Under the default, one-device and mirrored strategies the steps run through ``model.fit``. Under
MultiWorkerMirroredStrategy, where Keras 3.15's ``fit`` fails (keras-team/keras#20585), :func:`run_steps`
calls ``strategy.run(model.train_step, ...)`` over a distributed dataset: ``train_step`` stays the one
definition of a step, the logs are the replica mean as in ``fit``, and the same callbacks run. Every
worker restores from the chief's checkpoint folder; only the chief writes checkpoints (the other workers
take part in the save, which may need collective reads, into a scratch folder that is then deleted),
evaluation history and TensorBoard logs (:mod:`cpsl_tf.training.summaries`).
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import tensorflow as tf

from cpsl_tf.run_layout import StageLayout
from cpsl_tf.training.callbacks import (
    CheckpointedWeights,
    IntervalMeans,
    NonFiniteGuard,
    PeriodicEvaluation,
    ProgressLog,
    StepCheckpoint,
)
from cpsl_tf.training.stage import StageError
from cpsl_tf.training.strategy import is_chief, is_multi_worker
from cpsl_tf.training.summaries import TrainingSummaries

log = logging.getLogger(__name__)


def random_states(state: dict) -> list:
    """The seed-generator variables of the models in ``state`` (dropout randomness). Keras keeps them
    outside ``model.weights``, so a checkpoint of the model alone would replay the first steps' masks."""
    return [v.value for obj in state.values() if isinstance(obj, keras.Model)
            for v in obj.variables if "seed_generator" in v.path]


# The names under which a checkpoint holds the stage's step counter and config fingerprint.
STEP_KEY = "stage_step/.ATTRIBUTES/VARIABLE_VALUE"
FINGERPRINT_KEY = "stage_fingerprint/.ATTRIBUTES/VARIABLE_VALUE"


def resume(checkpoint: tf.train.Checkpoint, path: str, fingerprint: str | None, total_steps: int,
           weights: CheckpointedWeights | None = None, state_names: Iterable[str] = ()) -> None:
    """Restore ``checkpoint`` from ``path`` if it is this stage's to resume. Refused with a
    :class:`StageError` naming the file and what to do: a damaged file, one holding nothing under one of
    ``state_names`` (written by an older layout, e.g. the per-group optimizers before the one Keras SGD:
    restoring it would silently start those afresh), another config's fingerprint (checkpoints from
    before fingerprints were stored hold none and are not checked), a step beyond the stage's
    ``total_steps``, non-finite ``weights`` once restored (saved before checkpoints were checked)."""
    stage_dir = Path(path).parents[1]
    afresh = (f"move {Path(path).parent} away, or run with --stage {stage_dir.name} --force (which sets it "
              "aside), to train the stage afresh")
    try:
        reader = tf.train.load_checkpoint(path)
        saved_step = int(reader.get_tensor(STEP_KEY))
        held = {key.split("/", 1)[0] for key in reader.get_variable_to_shape_map()}
        missing = [name for name in state_names if name not in held]
        if missing:
            raise StageError(f"checkpoint {path} holds no {', '.join(missing)}: it was written by an older "
                             f"version of cpsl-tf (it holds {', '.join(sorted(held))}) and cannot be resumed "
                             f"without losing that state; {afresh}")
        saved = reader.get_tensor(FINGERPRINT_KEY).decode() if reader.has_tensor(FINGERPRINT_KEY) else None
        if fingerprint is not None and saved is not None and saved != fingerprint:
            raise StageError(f"checkpoint {path} was written under another config (fingerprint {saved}, this "
                             f"stage's is {fingerprint}): it is not this run's to resume; {afresh}")
        if saved_step > total_steps:
            raise StageError(f"checkpoint {path} is at step {saved_step}, beyond this stage's {total_steps} "
                             f"steps: it is not this run's to resume; {afresh}")
        checkpoint.restore(path).expect_partial()
    except (tf.errors.OpError, IndexError, ValueError) as err:
        raise StageError(f"checkpoint {path} is damaged ({str(err).splitlines()[0]}); {afresh}") from err
    bad = weights.non_finite() if weights is not None else []
    if bad:
        raise StageError(f"checkpoint {path} holds non-finite weights ({weights.describe(bad)}): a run that "
                         f"diverged saved it; {afresh}")


def fit_resumable(trainer: keras.Model, make_dataset: Callable[[int], tf.data.Dataset], total_steps: int,
                  stage_dir: Path, state: dict, checkpoint_every: int, eval_every: int | None = None,
                  evaluate: Callable[[], dict] | None = None, verbose: int | str = "auto",
                  log_every: int = 50, fingerprint: str | None = None) -> int:
    """Train ``trainer`` for ``total_steps`` optimizer steps, resuming from ``stage_dir/checkpoints``.

    ``state`` names every trackable whose value must survive a restart (networks, optimizers, memory
    bank, ...). ``make_dataset(start_step)`` builds the input stream from a given step so that a resumed
    run sees the same samples as an uninterrupted one. Returns the number of steps run now.

    ``fingerprint`` (the stage's config fingerprint) is stored inside every checkpoint, and a checkpoint
    is resumed only when it holds the same one (:func:`resume`).

    ``evaluate`` (every ``eval_every`` steps, on the chief) is best a
    :class:`~cpsl_tf.training.callbacks.StageEvaluation`: its ``final()`` after this returns then reuses
    the evaluation of the last step instead of evaluating the same weights twice.

    Under gradient accumulation (``trainer.grouped.accumulation_steps`` = k) one optimizer step takes k
    ``train_step`` calls of one batch each: the loop runs ``k * total_steps`` calls, and the step counter,
    ``checkpoint_every`` and ``eval_every`` count calls in multiples of k (checkpoints fall between
    optimizer steps, when the accumulators are empty).
    """
    stage = StageLayout(Path(stage_dir))
    k = getattr(getattr(trainer, "grouped", None), "accumulation_steps", 1)
    total_steps, checkpoint_every = k * total_steps, k * checkpoint_every
    eval_every = k * eval_every if eval_every else eval_every
    strategy = trainer.distribute_strategy
    chief = is_chief(strategy)
    with strategy.scope():
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage_step")
    tracked = dict(stage_step=step, random_states=random_states(state), **state)
    if fingerprint is not None:
        tracked["stage_fingerprint"] = tf.Variable(fingerprint, trainable=False, name="stage_fingerprint")
    checkpoint = tf.train.Checkpoint(**tracked)
    weights = CheckpointedWeights(v for obj in state.values() for v in getattr(obj, "variables", ()))
    manager = tf.train.CheckpointManager(checkpoint, str(stage.checkpoints), max_to_keep=2)
    if manager.latest_checkpoint:
        resume(checkpoint, manager.latest_checkpoint, fingerprint, total_steps, weights, state)
        log.info("resumed %s at step %d from %s", stage.name, int(step), manager.latest_checkpoint)
    optimizers = {name: obj for name, obj in state.items() if isinstance(obj, keras.Optimizer)}
    summaries = TrainingSummaries(step, total_steps, log_every, stage.folder, optimizers) if chief else None
    periodic = None
    if chief and evaluate is not None and eval_every:
        periodic = PeriodicEvaluation(step, evaluate, eval_every, stage.history, summaries)
        periodic.resume()
    remaining = total_steps - int(step)
    if remaining <= 0:
        return 0
    weights_changed = getattr(evaluate, "weights_changed", None)
    if weights_changed is not None:
        weights_changed()
    scratch = None
    if not chief:
        scratch = stage.worker_checkpoints(strategy.cluster_resolver.task_id)
        manager = tf.train.CheckpointManager(checkpoint, str(scratch), max_to_keep=1)
    callbacks = [NonFiniteGuard(step), StepCheckpoint(step, manager, checkpoint_every, weights)]
    if periodic is not None:
        callbacks.append(periodic)
    if summaries is not None:
        callbacks.append(summaries)
    if verbose == "auto" and not sys.stdout.isatty():
        # Keras' progress bar would write one line per step into a log file: log every log_every instead.
        verbose = 0
        if chief:
            callbacks.append(ProgressLog(step, total_steps, log_every, optimizers))
    callbacks.append(IntervalMeans(step, log_every))  # last: after everything that reads the logs
    # The trainers' networks are built; under a strategy Keras would otherwise try a symbolic build by
    # calling the trainer on the training-data dict.
    trainer.built = True
    try:
        if is_multi_worker(strategy):
            run_steps(trainer, make_dataset(int(step)), remaining, callbacks, verbose if chief else 0)
        else:
            trainer.fit(make_dataset(int(step)), epochs=1, steps_per_epoch=remaining, callbacks=callbacks,
                        verbose=verbose, shuffle=False)  # the dataset shuffles itself
    finally:
        if summaries is not None:
            summaries.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return remaining


def distributed_step(trainer: keras.Model) -> Callable:
    """A ``tf.function`` running one ``trainer.train_step`` on every replica from a distributed iterator;
    returns the logs averaged over the replicas (what ``fit`` reports)."""
    strategy = trainer.distribute_strategy

    @tf.function
    def step(iterator):
        logs = strategy.run(trainer.train_step, args=(next(iterator),))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in logs.items()}

    return step


def run_steps(trainer: keras.Model, dataset: tf.data.Dataset, steps: int, callbacks: list,
              verbose: int | str = "auto") -> dict:
    """``steps`` training steps of ``trainer`` over ``dataset`` (global batches) with the semantics of
    ``fit(epochs=1, steps_per_epoch=steps)``: the dataset is split into per-replica batches, callbacks get
    ``on_train_batch_end`` with the logs, and ``stop_training`` ends the loop. Returns the last logs."""
    strategy = trainer.distribute_strategy
    options = tf.data.Options()
    # The input pipeline is not file-based: each worker reads the stream and keeps its replicas' slices of
    # every global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
    progress = verbose != 0
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=progress,
                                                 model=trainer, verbose=int(progress), epochs=1, steps=steps)
    step = distributed_step(trainer)
    trainer.stop_training = False
    logs: dict = {}
    callback_list.on_train_begin()
    callback_list.on_epoch_begin(0)
    for batch in range(steps):
        callback_list.on_train_batch_begin(batch)
        logs = {name: float(value) for name, value in step(iterator).items()}
        callback_list.on_train_batch_end(batch, logs)
        if trainer.stop_training:
            break
    callback_list.on_epoch_end(0, logs)
    callback_list.on_train_end(logs)
    return logs
