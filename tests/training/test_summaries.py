"""TensorBoard scalars and the training history of a stage, read back from the event files; logged losses are
means over each logging interval."""

from __future__ import annotations

import json
import types
from pathlib import Path

import keras
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cpsl_tf.labels import class_names
from cpsl_tf.training.callbacks import IntervalMeans
from cpsl_tf.training.schedule import PolyDecay
from cpsl_tf.training.summaries import TrainingSummaries


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the event files in ``folder``, as TensorBoard reads them."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]}


def test_training_numbers_and_evaluations_are_written_every_few_steps(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    optimizer = keras.optimizers.SGD(PolyDecay(0.01, 5, 0.9))
    optimizer.build([tf.Variable(1.0)])
    summaries = TrainingSummaries(step, total=5, every=2, stage_dir=tmp_path,
                                  optimizers={"backbone": optimizer})
    for k in range(5):
        step.assign_add(1)
        summaries.on_train_batch_end(k, {"loss": 1.0 / (k + 1), "head_travel": 0.5 * k})
    iou = [0.25] * 19
    iou[3] = None
    summaries.evaluation(4, {"miou": 0.5, "mpa": 0.625, "pa": 0.75, "iou": iou, "acc": [0.5] * 19,
                             "subsets": {"13": {"miou": 0.375, "mpa": None}}, "delta_shift": 0.125})
    summaries.on_train_end()

    train = scalars(tmp_path / "tensorboard" / "train")
    # Every second step and the last one.
    assert train["train/loss"] == pytest.approx({2: 1 / 2, 4: 1 / 4, 5: 1 / 5})
    assert train["train/head_travel"] == pytest.approx({2: 0.5, 4: 1.5, 5: 2.0})
    assert set(train["learning_rate/backbone"]) == {2, 4, 5}
    assert train["learning_rate/backbone"][2] == pytest.approx(0.01)
    evaluation = scalars(tmp_path / "tensorboard" / "eval")
    scores = {tag: values[4] for tag, values in evaluation.items() if tag.startswith("eval/")}
    assert scores == pytest.approx({"eval/miou": 0.5, "eval/mpa": 0.625, "eval/pa": 0.75,
                                    "eval/delta_shift": 0.125, "eval/miou_13": 0.375})
    names = class_names(19)
    assert evaluation[f"iou/{names[0]}"] == {4: 0.25}
    assert f"iou/{names[3]}" not in evaluation  # undefined: left out
    history = [json.loads(line) for line in (tmp_path / "train_history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [2, 4, 5]
    assert history[-1]["loss"] == pytest.approx(0.2) and set(history[-1]["learning_rate"]) == {"backbone"}


def test_logged_losses_are_means_over_each_interval():
    step = tf.Variable(0, dtype=tf.int64)
    loss = keras.metrics.Mean(name="loss")
    callback = IntervalMeans(step, every=2)
    callback.set_model(types.SimpleNamespace(metrics=[loss]))
    logged = []
    for value in (1.0, 3.0, 5.0, 7.0):
        step.assign_add(1)
        loss.update_state(value)
        logged.append(float(loss.result()))
        callback.on_train_batch_end(int(step) - 1)
    assert logged == [1.0, 2.0, 5.0, 6.0]
