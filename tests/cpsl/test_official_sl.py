"""The official two-bank L_SL over three steps against sl_loss_3steps.npz."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.official_sl import official_two_bank_sl_loss, uniform_official_samples
from tests.conftest import fixture_path
from tests.cpsl.test_memory_bank import newest_first


def channels_last(x):
    return np.moveaxis(x, 1, -1)


def run_three_steps(step_fn_wrapper):
    data = np.load(fixture_path("sl_loss_3steps.npz"))
    pixels, bank_rows = int(data["fbs"]), int(data["L"])
    prototypes = tf.Variable(data["prototypes_init"])
    feature_bank = MemoryBank(bank_rows, prototypes.shape[1])
    logit_bank = MemoryBank(bank_rows, prototypes.shape[0])

    def step(feat, out, permutation):
        features, logits = uniform_official_samples(feat, out, permutation, pixels)
        with tf.GradientTape() as tape:
            total, logit_part = official_two_bank_sl_loss(
                features, logits, prototypes, feature_bank, logit_bank, data["r"], float(data["tau"]),
                float(data["eps"]), 3)
        return total, logit_part, tape.gradient(total, prototypes)

    step = step_fn_wrapper(step)
    for k in range(3):
        total, logit_part, grad = step(channels_last(data[f"step{k}_feat_SL"]),
                                       channels_last(data[f"step{k}_out_SL"]), data[f"step{k}_rand_index"])
        np.testing.assert_allclose(total.numpy(), data[f"step{k}_loss_SL"], rtol=1e-5, err_msg=f"step {k}")
        np.testing.assert_allclose(logit_part.numpy(), data[f"step{k}_loss_SL_out"], rtol=1e-5)
        expected_grad = data[f"step{k}_grad_prototypes"]
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-3,
                                   atol=1e-5 * np.abs(expected_grad).max(), err_msg=f"step {k}")
        np.testing.assert_allclose(newest_first(feature_bank, pixels), data[f"step{k}_queue_after"],
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(newest_first(logit_bank, pixels), data[f"step{k}_queue_out_after"],
                                   rtol=1e-6, atol=1e-7)
    assert bool(feature_bank.is_full()) and bool(logit_bank.is_full())


def test_three_steps_eager():
    run_three_steps(lambda fn: fn)


def test_three_steps_in_tf_function():
    run_three_steps(tf.function)
