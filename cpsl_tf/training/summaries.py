"""What a stage leaves for watching it: TensorBoard scalars, and the training numbers as JSON lines.

Every ``every`` steps (``train.log_every``) and at the last step, :class:`TrainingSummaries` writes the logs
of ``train_step`` (the loss terms and a stage's diagnostics, e.g. CPSL's ``head_travel``,
``q_marginal_gap``, ``rectified_changed``, ``delta_shift``) as ``train/<name>`` and the learning rate of each
optimizer as ``learning_rate/<optimizer>`` to ``<stage>/tensorboard/train``, and the same numbers as one line
of ``<stage>/train_history.jsonl`` (appended; a resumed stage logs the steps after its checkpoint again and
the later line counts). Each periodic evaluation
(:class:`~cpsl_tf.training.callbacks.PeriodicEvaluation`) goes to ``<stage>/tensorboard/eval``: its numbers
as ``eval/<name>`` (mIoU, MPA, PA, a stage's diagnostics), ``eval/miou_<n>`` of each class subset, and the
IoU of every class as ``iou/<class>``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import tensorflow as tf

from cpsl_tf.labels import class_names
from cpsl_tf.run_layout import StageLayout
from cpsl_tf.training.optim import GroupedSGD


def evaluation_scalars(scores: dict) -> dict[str, float]:
    """The TensorBoard scalars of one evaluation's result dict (undefined values left out)."""
    scalars = {f"eval/{key}": float(value) for key, value in scores.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    for size, part in (scores.get("subsets") or {}).items():
        scalars[f"eval/miou_{size}"] = part.get("miou")
    ious = scores.get("iou") or []
    if ious:
        scalars.update({f"iou/{name}": iou for name, iou in zip(class_names(len(ious)), ious)})
    return {tag: float(value) for tag, value in scalars.items()
            if value is not None and math.isfinite(float(value))}


def learning_rates(optimizers: dict[str, keras.Optimizer]) -> dict[str, float]:
    """The learning rate each optimizer applies at its next step; a :class:`GroupedSGD`'s (inside a loss
    scale optimizer or not) by group name."""
    rates = {}
    for name, optimizer in optimizers.items():
        sgd = getattr(optimizer, "inner_optimizer", optimizer)
        if isinstance(sgd, GroupedSGD):
            rates.update(sgd.learning_rates())
        else:
            rates[name] = float(optimizer.learning_rate)
    return rates


class TrainingSummaries(keras.callbacks.Callback):
    """Writes a stage's training numbers every ``every`` steps (counted by ``step``, ``total`` in all) and
    its evaluations (:meth:`evaluation`) under ``stage_dir``. ``optimizers`` by name: their learning rates are
    logged."""

    def __init__(self, step: tf.Variable, total: int, every: int, stage_dir: Path,
                 optimizers: dict[str, keras.Optimizer]):
        super().__init__()
        self.step = step
        self.total = total
        self.every = every
        self.stage = StageLayout(Path(stage_dir))
        self.optimizers = optimizers
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _write(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(str(self.stage.tensorboard / kind))
        with self._writers[kind].as_default(step=step):
            for tag, value in scalars.items():
                tf.summary.scalar(tag, value)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step)
        if step % self.every and step != self.total:
            return
        numbers = {name: float(value) for name, value in (logs or {}).items()}
        rates = learning_rates(self.optimizers)
        self._write("train", step, {**{f"train/{name}": value for name, value in numbers.items()},
                                    **{f"learning_rate/{name}": rate for name, rate in rates.items()}})
        entry = {"step": step, **numbers, "learning_rate": rates}
        with open(self.stage.train_history, "a") as history:
            history.write(json.dumps(entry) + "\n")

    def evaluation(self, step: int, scores: dict) -> None:
        """One periodic evaluation's scores at ``step``."""
        self._write("eval", step, evaluation_scalars(scores))
        self._writers["eval"].flush()

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
