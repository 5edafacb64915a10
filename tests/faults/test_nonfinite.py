"""A NaN/Inf loss stops training naming the step and the term, and the last good checkpoint survives; weights
that went non-finite while the loss stayed finite are never checkpointed, nor resumed.

The log-domain Sinkhorn in float16 with extreme scores is covered by
tests/cpsl/test_sinkhorn.py::test_log_domain_stays_finite_in_float16_for_extreme_scores; bfloat16 here.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.cpsl.sinkhorn import sinkhorn
from cpsl_tf.training import warmup
from cpsl_tf.training.callbacks import NonFiniteGuard, NonFiniteLossError, NonFiniteWeightsError
from cpsl_tf.training.cli import main
from cpsl_tf.training.loop import fit_resumable
from cpsl_tf.training.stages import StageError
from tests.faults.conftest import tiny_config, write_config


class OneWeight(keras.Model):
    """One weight ``w`` and a count of the optimizer steps taken; something goes wrong at ``bad_step``."""

    def __init__(self, bad_step: int, **kwargs):
        super().__init__(**kwargs)
        self.bad_step = bad_step
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        self.steps = self.add_weight(shape=(), initializer="zeros", trainable=False, name="steps")

    def call(self, x):
        return x * self.w


class PoisonedAtStep(OneWeight):
    """Its loss term ``loss_sl`` (and so the weight) turns NaN at optimizer step ``bad_step``."""

    def train_step(self, data):
        self.steps.assign_add(1.0)
        poison = tf.where(self.steps >= self.bad_step, float("nan"), 0.0)
        loss_sl = self.w * self.w + poison
        self.w.assign_sub(0.1 * loss_sl)
        return {"loss": tf.constant(1.0), "loss_sl": loss_sl}


def assert_checkpoint_finite_at(checkpoint_dir, step):
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    assert latest is not None and latest.endswith(f"ckpt-{step}"), latest
    reader = tf.train.load_checkpoint(latest)
    names = reader.get_variable_to_shape_map()
    assert int(reader.get_tensor("stage_step/.ATTRIBUTES/VARIABLE_VALUE")) == step
    checked = 0
    for name in names:
        value = np.asarray(reader.get_tensor(name))
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"{latest}: {name} is not finite"
            checked += 1
    assert checked > 0


def test_nan_term_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = PoisonedAtStep(bad_step=3)
    trainer.compile(optimizer="sgd")

    def make_dataset(start_step):
        return tf.data.Dataset.from_tensors(tf.zeros(())).repeat()

    with pytest.raises(NonFiniteLossError, match=r"'loss_sl' is nan at step 3"):
        fit_resumable(trainer, make_dataset, 6, tmp_path, {"trainer": trainer}, checkpoint_every=2, verbose=0)
    assert_checkpoint_finite_at(tmp_path / "checkpoints", 2)


class DivergesAtStep(OneWeight):
    """The update of optimizer step ``bad_step`` turns the weight into Inf while the logged loss stays
    finite: what a huge learning rate does to BatchNorm statistics, which the training loss never reads."""

    def train_step(self, data):
        self.steps.assign_add(1.0)
        self.w.assign(tf.where(self.steps >= self.bad_step, float("inf"), self.w * 0.5))
        return {"loss": tf.constant(1.0)}


def repeat_zeros(start_step):
    return tf.data.Dataset.from_tensors(tf.zeros(())).repeat()


@pytest.mark.parametrize("total_steps, stopped_at", [(3, 3), (6, 4)])  # saved at the end / periodically
def test_non_finite_weights_are_never_checkpointed(tmp_path, total_steps, stopped_at):
    trainer = DivergesAtStep(bad_step=3)
    trainer.compile(optimizer="sgd")
    expected = (rf"after step {stopped_at}, 1 of 2 weight tensors are not finite \(e.g. '\S*w'\) although "
                r"every loss term is finite: an update diverged\. Training stopped without writing the "
                rf"checkpoint of step {stopped_at}; the last good one, \S*ckpt-2, is kept")
    with pytest.raises(NonFiniteWeightsError, match=expected):
        fit_resumable(trainer, repeat_zeros, total_steps, tmp_path, {"trainer": trainer}, checkpoint_every=2,
                      verbose=0)
    assert_checkpoint_finite_at(tmp_path / "checkpoints", 2)


def test_a_checkpoint_with_non_finite_weights_is_not_resumed(tmp_path):
    """A checkpoint written before checkpoints were checked: refused, naming it and what to do."""
    trainer = DivergesAtStep(bad_step=100)
    trainer.compile(optimizer="sgd")
    trainer.w.assign(float("nan"))
    step = tf.Variable(2, dtype=tf.int64, name="stage_step")
    poisoned = tf.train.Checkpoint(stage_step=step, random_states=[], trainer=trainer)
    path = tf.train.CheckpointManager(poisoned, str(tmp_path / "checkpoints"), 2).save(checkpoint_number=2)
    trainer.w.assign(1.0)
    with pytest.raises(StageError, match=rf"checkpoint {path} holds non-finite weights \(1 of 2 weight "
                       r"tensors are not finite \(e.g. '\S*w'\)\): a run that diverged saved it; move "
                       r"\S*checkpoints away"):
        fit_resumable(trainer, repeat_zeros, 6, tmp_path, {"trainer": trainer}, checkpoint_every=2, verbose=0)


def test_the_term_is_named_before_the_total():
    guard = NonFiniteGuard(tf.Variable(6, dtype=tf.int64))
    guard.set_model(DivergesAtStep(bad_step=1))
    logs = {"loss": float("nan"), "loss_src": 0.5, "loss_sl": float("inf"), "loss_reg": float("nan")}
    expected = r"^loss term 'loss_sl' is inf at step 7 \(not finite either: 'loss_reg', 'loss'\); training"
    with pytest.raises(NonFiniteLossError, match=expected):
        guard.on_train_batch_end(0, logs)


def test_cli_reports_a_nan_loss_without_a_traceback(tiny_bench, tmp_path, monkeypatch, capsys):
    """scripts/train.py main(): the warm-up loss turns NaN at step 3 after the checkpoint of step 2."""
    calls = tf.Variable(0, dtype=tf.int64)
    original = warmup.segmentation_cross_entropy

    def poisoned(logits, labels):
        calls.assign_add(1)
        return tf.where(calls >= 3, float("nan"), original(logits, labels))

    monkeypatch.setattr(warmup, "segmentation_cross_entropy", poisoned)
    config = write_config(tmp_path / "tiny.json", tiny_config(tiny_bench, {"warmup": {"iterations": 4}}))
    run = tmp_path / "run"
    code = main(["--config", str(config), "--stage", "warmup", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    assert "loss term 'loss_src' is nan at step 3" in err
    assert "Traceback" not in err
    assert_checkpoint_finite_at(run / "warmup" / "checkpoints", 2)
    assert not (run / "warmup" / "done.json").exists()
    assert not (run / "warmup" / "model.weights.h5").exists()


def _log_domain_sinkhorn_float64(scores, r, eps=0.05, iterations=3):
    """Eq. 6 / Eq. 12 by alternating scalings of log Q (K x N), in float64: independent of the package."""
    def logsumexp(x, axis):
        peak = x.max(axis=axis, keepdims=True)
        return peak + np.log(np.exp(x - peak).sum(axis=axis, keepdims=True))

    log_q = scores.astype(np.float64).T / eps
    n = log_q.shape[1]
    for _ in range(iterations):
        log_q += np.log(r)[:, None] - logsumexp(log_q, 1)
        log_q -= logsumexp(log_q, 0) + np.log(n)
    return np.exp(log_q + np.log(n)).T


def test_log_domain_sinkhorn_stays_finite_in_bfloat16_for_extreme_scores(rng):
    scores = tf.constant(rng.uniform(-1e3, 1e3, (256, 19)), tf.bfloat16)
    r = np.full(19, 1 / 19, np.float32)
    q = sinkhorn(scores, r, log_domain=True)
    assert q.dtype == tf.bfloat16
    q = tf.cast(q, tf.float32).numpy()
    assert np.isfinite(q).all()
    # bfloat16 keeps 8 bits of mantissa: rows sum to 1 within its rounding.
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=2e-2)
    reference = _log_domain_sinkhorn_float64(tf.cast(scores, tf.float32).numpy(), r)
    np.testing.assert_allclose(q, reference, atol=1e-2)
