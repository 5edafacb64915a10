"""Training callbacks: step counting, atomic periodic checkpoints, evaluation, non-finite guard."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from cpsl_tf.io_utils import atomic_write_text, disk_full_named, require_space
from cpsl_tf.training.summaries import TrainingSummaries, learning_rates

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; the message names the step and the term."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights became NaN or Inf while the logged loss terms stayed finite (an update that diverged, or
    BatchNorm statistics that overflowed); the message names the step and the tensors. It stops a stage as a
    non-finite loss does."""


class CheckpointedWeights:
    """The floating-point variables of a stage's checkpoint: which hold a NaN or an Inf (one reduction per
    variable, run only when asked: before a checkpoint is written, after one is restored; eager, 0.1 s for
    the 549 tensors of the ResNet-101 segmenter, less than tracing a tf.function of them) and how many bytes
    they take."""

    def __init__(self, variables):
        self.variables = [v for v in variables if keras.backend.is_float_dtype(v.dtype)]

    def non_finite(self) -> list[str]:
        return [v.path for v in self.variables if not bool(tf.reduce_all(tf.math.is_finite(v)))]

    def describe(self, bad: list[str]) -> str:
        return f"{len(bad)} of {len(self.variables)} weight tensors are not finite (e.g. '{bad[0]}')"

    def num_bytes(self) -> int:
        return sum(math.prod(v.shape) * tf.as_dtype(v.dtype).size for v in self.variables)


class StepCheckpoint(keras.callbacks.Callback):
    """Counts optimizer steps in ``step`` and saves ``manager`` every ``every`` steps and at the end.

    ``tf.train.CheckpointManager`` writes the new checkpoint files before it updates its index, so a
    crash mid-save leaves the previous checkpoint as the latest readable one. With ``weights`` (a
    :class:`CheckpointedWeights` of everything the checkpoint holds), only finite weights are saved: otherwise
    training stops with :class:`NonFiniteWeightsError` and the last good checkpoint stays the latest.
    """

    def __init__(self, step: tf.Variable, manager: tf.train.CheckpointManager, every: int,
                 weights: CheckpointedWeights | None = None):
        super().__init__()
        self.step = step
        self.manager = manager
        self.every = every
        self.weights = weights

    def _save(self):
        step = int(self.step)
        bad = self.weights.non_finite() if self.weights is not None else []
        if bad:
            self.model.stop_training = True
            latest = self.manager.latest_checkpoint
            kept = f"the last good one, {latest}, is kept" if latest else "there is no earlier one"
            raise NonFiniteWeightsError(
                f"after step {step}, {self.weights.describe(bad)} although every loss term is finite: an "
                f"update diverged. Training stopped without writing the checkpoint of step {step}; {kept}. "
                "Lower the learning rate.")
        prefix = Path(self.manager.directory) / f"ckpt-{step}"
        size = self.weights.num_bytes() if self.weights is not None else None
        with disk_full_named(prefix, size):
            try:
                if size is not None:
                    require_space(prefix, size)
                self.manager.save(checkpoint_number=step)
            except BaseException:
                self.model.stop_training = True
                # TensorFlow writes into <prefix>_temp/, renames its files to <prefix>.*, then rewrites its
                # index file 'checkpoint' through checkpoint.tmp*; the index still names the last good one.
                shutil.rmtree(f"{prefix}_temp", ignore_errors=True)
                folder = prefix.parent
                for partial in [*folder.glob(f"{prefix.name}.*"), *folder.glob("checkpoint.tmp*")]:
                    partial.unlink()
                raise

    def on_train_batch_end(self, batch, logs=None):
        self.step.assign_add(1)
        if int(self.step) % self.every == 0:
            self._save()

    def on_train_end(self, logs=None):
        if self.manager.latest_checkpoint is None or not self.manager.latest_checkpoint.endswith(
                f"-{int(self.step)}"):
            self._save()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss term, naming the step and the term.

    It runs before :class:`StepCheckpoint` in the callback list, so a poisoned state is never saved and
    the last good checkpoint survives. The terms are named before the total (``loss``), which a
    non-finite term makes non-finite too.
    """

    TOTAL = "loss"

    def __init__(self, step: tf.Variable):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        bad = {name: float(value) for name, value in (logs or {}).items() if not math.isfinite(float(value))}
        if not bad:
            return
        self.model.stop_training = True
        first, *others = sorted(bad, key=lambda name: name == self.TOTAL)
        also = f" (not finite either: {', '.join(repr(n) for n in others)})" if others else ""
        raise NonFiniteLossError(
            f"loss term '{first}' is {bad[first]} at step {int(self.step) + 1}{also}; training stopped, the "
            "last good checkpoint is kept. Lower the learning rate or check the inputs of that term.")


class StageEvaluation:
    """A stage's target-val evaluation, shared by its periodic evaluations and its final one.

    ``scores(progress)`` evaluates the model as it is now and returns the stage's result dict (``progress``:
    False for the periodic evaluations, None, the evaluation's default, for the final one);
    ``diagnostics()``, if given, adds numbers to each periodic evaluation's history entry only. The scores
    are kept until training changes the weights (:class:`PeriodicEvaluation` says so before every step,
    :func:`cpsl_tf.training.loop.fit_resumable` before training), so when the last step was evaluated
    periodically, :meth:`final` returns that evaluation instead of running it again.
    """

    def __init__(self, scores: Callable[..., dict], diagnostics: Callable[[], dict] | None = None):
        self.scores = scores
        self.diagnostics = diagnostics
        self._current: dict | None = None

    def weights_changed(self) -> None:
        self._current = None

    def _evaluate(self, progress: bool | None) -> dict:
        if self._current is None:
            self._current = self.scores(progress=progress)
        return dict(self._current)

    def final(self) -> dict:
        """The scores of the weights as they are now: the periodic evaluation's if it saw them."""
        return self._evaluate(progress=None)

    def __call__(self) -> dict:
        """One periodic evaluation: the scores and the diagnostics."""
        return {**self._evaluate(progress=False), **(self.diagnostics() if self.diagnostics else {})}


class PeriodicEvaluation(keras.callbacks.Callback):
    """Runs ``evaluate()`` (a scores dict) every ``every`` steps and appends it to a JSON-lines history, and
    to TensorBoard through ``summaries`` when given.

    A :class:`StageEvaluation` is told before every step that the weights are about to change."""

    def __init__(self, step: tf.Variable, evaluate: Callable[[], dict], every: int, history: Path,
                 summaries: TrainingSummaries | None = None):
        super().__init__()
        self.step = step
        self.evaluate = evaluate
        self.every = every
        self.history = Path(history)
        self.summaries = summaries

    def _run(self):
        scores = self.evaluate()
        # Every number the evaluation gives (scores, and a stage's own diagnostics); per-class lists stay in
        # the stage's results.
        numbers = {key: value for key, value in scores.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        entry = {"step": int(self.step), **numbers}
        # Rewritten whole and atomically: a crash mid-write never leaves a torn last line.
        before = self.history.read_text() if self.history.exists() else ""
        atomic_write_text(self.history, before + json.dumps(entry) + "\n")
        if self.summaries is not None:
            self.summaries.evaluation(entry["step"], scores)
        log.info("step %d: target-val mIoU %.2f MPA %.2f", entry["step"], 100 * entry["miou"],
                 100 * entry["mpa"])

    def resume(self) -> None:
        """Make the history agree with the step training resumes from: entries of later steps are dropped
        (those steps run again and are evaluated again), and this step's evaluation is run if a kill between
        its checkpoint and its evaluation lost it."""
        step = int(self.step)
        lines = self.history.read_text().splitlines() if self.history.exists() else []
        kept, evaluated = [], set()
        for line in lines:
            try:
                entry_step = int(json.loads(line)["step"])
            except (ValueError, TypeError, KeyError):
                log.warning("%s: dropped a damaged line: %r", self.history, line)
                continue
            if entry_step <= step:
                kept.append(line)
                evaluated.add(entry_step)
        if kept != lines:
            atomic_write_text(self.history, "".join(line + "\n" for line in kept))
        if step and step % self.every == 0 and step not in evaluated:
            log.info("step %d: evaluating the checkpoint whose evaluation was interrupted", step)
            self._run()

    def on_train_batch_begin(self, batch, logs=None):
        weights_changed = getattr(self.evaluate, "weights_changed", None)
        if weights_changed is not None:
            weights_changed()

    def on_train_batch_end(self, batch, logs=None):
        if int(self.step) % self.every == 0:
            self._run()


class ProgressLog(keras.callbacks.Callback):
    """Logs every ``every`` steps the running metrics, the learning rate of each of ``optimizers``, the speed
    since the previous line and the time the rest of the stage takes at that speed: a readable log when stdout
    is not a terminal (Keras' progress bar then writes one line per step)."""

    def __init__(self, step: tf.Variable, total: int, every: int, optimizers: dict[str, keras.Optimizer]):
        super().__init__()
        self.step = step
        self.total = total
        self.every = every
        self.optimizers = optimizers
        self._previous = (0, 0.0)  # (step, time.monotonic()) of the previous line

    def on_train_begin(self, logs=None):
        self._previous = (int(self.step), time.monotonic())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step)
        if step % self.every and step != self.total:
            return
        now = time.monotonic()
        speed = (step - self._previous[0]) / max(now - self._previous[1], 1e-9)
        self._previous = (step, now)
        left = round((self.total - step) / speed) if speed > 0 else 0
        values = " ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items())
        rates = " ".join(f"{name} {rate:.3g}" for name, rate in learning_rates(self.optimizers).items())
        log.info("step %d/%d: %s; lr %s; %.2f steps/s, %d:%02d:%02d left", step, self.total, values, rates,
                 speed, left // 3600, left // 60 % 60, left % 60)


class IntervalMeans(keras.callbacks.Callback):
    """Resets the trainer's metrics every ``every`` steps, after the callbacks before it in the list have read
    the logs: each logged loss is then the mean over the last ``every`` steps, not over the whole stage so far
    (Keras resets them once per epoch, and a stage is one epoch). Every worker runs it, so that the replicas'
    metrics, averaged into the logs, cover the same steps."""

    def __init__(self, step: tf.Variable, every: int):
        super().__init__()
        self.step = step
        self.every = every

    def on_train_batch_end(self, batch, logs=None):
        if int(self.step) % self.every == 0:
            for metric in self.model.metrics:
                metric.reset_state()
