"""One warm-up step of each kind, checked against an independent computation of its loss and update."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.config import load_config, shrink
from cpsl_tf.models.discriminator import build_discriminator
from cpsl_tf.models.segmenter import build_segmenter, is_head_variable
from cpsl_tf.training.warmup import AdversarialWarmup, SupervisedSegmentation, build_segmentation_optimizer

LR, HEAD_LR, DECAY = 1e-2, 1e-1, 2e-4


@pytest.fixture(scope="module")
def cfg():
    base = shrink(load_config(None))
    # No dropout: the independent recomputation must see the same forward pass.
    return dataclasses.replace(base, model=dataclasses.replace(base.model, dropout=0.0),
                               train=dataclasses.replace(base.train, weight_decay=DECAY, poly_power=0.0))


def _batch(rng):
    return {"source_image": rng.random((2, 32, 48, 3)).astype(np.float32),
            "source_label": rng.integers(0, 19, (2, 32, 48)).astype(np.uint8),
            "target_image": rng.random((2, 32, 48, 3)).astype(np.float32)}


def _ce(model, images, labels):
    logits = tf.compat.v1.image.resize_bilinear(model(images, training=True)["logits"], images.shape[1:3],
                                                align_corners=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits))


def test_source_only_step_is_sgd_with_two_learning_rates_and_coupled_decay(cfg):
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    segmenter = build_segmenter(cfg.model, 19)
    reference = build_segmenter(cfg.model, 19, name="reference")
    reference.set_weights(segmenter.get_weights())
    with tf.GradientTape() as tape:
        expected_loss = _ce(reference, batch["source_image"], batch["source_label"])
    grads = tape.gradient(expected_loss, reference.trainable_variables)
    before = [v.numpy() for v in segmenter.trainable_variables]
    trainer = SupervisedSegmentation(segmenter, build_segmentation_optimizer(
        cfg, LR, HEAD_LR, 100, segmenter.trainable_variables))
    trainer.compile(optimizer=trainer.grouped.optimizer)
    history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0).history
    assert history["loss_src"][0] == pytest.approx(float(expected_loss), rel=1e-5)
    # First SGD step with momentum: w <- w - lr * (g + decay * w); lr by group.
    for w0, g, v in zip(before, grads, segmenter.trainable_variables):
        lr = HEAD_LR if is_head_variable(v) else LR
        np.testing.assert_allclose(v.numpy(), w0 - lr * (g.numpy() + DECAY * w0), atol=1e-6, err_msg=v.path)


def test_adversarial_step_losses_follow_the_ls_gan_definitions(cfg):
    rng = np.random.default_rng(1)
    batch = _batch(rng)
    segmenter = build_segmenter(cfg.model, 19)
    discriminator = build_discriminator(19, width=8)
    d_before = [w.numpy() for w in discriminator.weights]
    # Independent LS-GAN losses with the weights before the step.
    source_prob = tf.nn.softmax(tf.compat.v1.image.resize_bilinear(
        segmenter(batch["source_image"], training=True)["logits"], (32, 48), align_corners=True))
    target_prob = tf.nn.softmax(tf.compat.v1.image.resize_bilinear(
        segmenter(batch["target_image"], training=True)["logits"], (32, 48), align_corners=True))
    expected_adv = float(tf.reduce_mean(discriminator(target_prob) ** 2))
    expected_disc = float(tf.reduce_mean(discriminator(source_prob) ** 2)
                          + tf.reduce_mean((discriminator(target_prob) - 1.0) ** 2))
    disc_optimizer = keras.optimizers.Adam(1e-3)
    disc_optimizer.build(discriminator.trainable_variables)
    trainer = AdversarialWarmup(segmenter, discriminator, build_segmentation_optimizer(
        cfg, LR, HEAD_LR, 100, segmenter.trainable_variables), disc_optimizer, adversarial_weight=0.01)
    trainer.compile(optimizer=trainer.grouped.optimizer)
    history = trainer.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0).history
    assert history["loss_adv"][0] == pytest.approx(expected_adv, rel=1e-4)
    assert history["loss_disc"][0] == pytest.approx(expected_disc, rel=1e-4)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(d_before, discriminator.weights))
