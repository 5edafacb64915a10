"""Stage ``warmup``: source-only training (Eq. 3) or output-space adversarial warm-up (AdaptSegNet).

Both are ``keras.Model`` subclasses with their own ``train_step``, run by ``model.fit``. The adversarial
variant follows the official code (docs/official-code.md section 1.0): the generator loss is the source CE
on logits upsampled to the crop plus ``adversarial_weight`` x the LS-GAN loss asking the discriminator to
take the softmax of the upsampled target output for source (label 0); the discriminator is trained with
MSE(D(src), 0) + MSE(D(tgt), 1) by Adam (betas 0.9, 0.99) with a poly schedule.

The stage (:data:`WARMUP`) builds one of them and hands it to the trainer skeleton
(:func:`cpsl_tf.training.trainer.train_stage`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cpsl_tf.cpsl.losses import segmentation_cross_entropy
from cpsl_tf.data.pipeline import make_training_dataset
from cpsl_tf.gradients import pass_by_pass_gradients
from cpsl_tf.models.discriminator import build_discriminator
from cpsl_tf.resize import resize_bilinear
from cpsl_tf.training.builders import build_segmentation_optimizer, new_segmenter
from cpsl_tf.training.inputs import StageSamples
from cpsl_tf.training.optim import SegmentationOptimizer
from cpsl_tf.training.schedule import PolyDecay
from cpsl_tf.training.stage import RunContext, Stage
from cpsl_tf.training.strategy import synchronize_batch_norm, training_scope
from cpsl_tf.training.trainer import StageTraining, train_stage


def _replicas():
    """Gradients are summed across replicas, so each replica's loss is divided by their number."""
    return tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)


class SupervisedSegmentation(keras.Model):
    """Supervised training on labelled crops (source-only warm-up, or the oracle on target labels)."""

    def __init__(self, segmenter: keras.Model, optimizer: SegmentationOptimizer, align_corners: bool = True,
                 image_key: str = "source_image", label_key: str = "source_label", **kwargs):
        super().__init__(**kwargs)
        self.segmenter = segmenter
        self.grouped = optimizer
        self.align_corners = align_corners
        self.image_key = image_key
        self.label_key = label_key
        self.loss_tracker = keras.metrics.Mean(name="loss_src")

    def call(self, images, training=False):
        return self.segmenter(images, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def _upsampled_logits(self, images, training):
        logits = self.segmenter(images, training=training)["logits"]
        return resize_bilinear(logits, tf.shape(images)[1:3], self.align_corners)

    def train_step(self, data):
        images, labels = data[self.image_key], data[self.label_key]
        variables = self.segmenter.trainable_variables
        with tf.GradientTape() as tape:
            loss = segmentation_cross_entropy(self._upsampled_logits(images, True), labels)
            scaled = self.grouped.scale_loss(loss / _replicas())
        self.grouped.apply(tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        return {"loss_src": self.loss_tracker.result()}


class AdversarialWarmup(SupervisedSegmentation):
    """Output-space adversarial warm-up: source CE + LS-GAN alignment of target softmax outputs."""

    def __init__(self, segmenter: keras.Model, discriminator: keras.Model, optimizer: SegmentationOptimizer,
                 discriminator_optimizer: keras.Optimizer, adversarial_weight: float = 0.01,
                 align_corners: bool = True, **kwargs):
        super().__init__(segmenter, optimizer, align_corners, **kwargs)
        self.discriminator = discriminator
        self.discriminator_optimizer = discriminator_optimizer
        self.adversarial_weight = adversarial_weight
        self.adv_tracker = keras.metrics.Mean(name="loss_adv")
        self.disc_tracker = keras.metrics.Mean(name="loss_disc")

    @property
    def metrics(self):
        return [self.loss_tracker, self.adv_tracker, self.disc_tracker]

    def train_step(self, data):
        source, labels, target = data["source_image"], data["source_label"], data["target_image"]
        seg_vars = self.segmenter.trainable_variables

        def source_pass():
            source_logits = self._upsampled_logits(source, True)
            loss = segmentation_cross_entropy(source_logits, labels)
            return loss, (loss, source_logits)

        def target_pass():
            target_prob = tf.nn.softmax(self._upsampled_logits(target, True))
            loss = tf.reduce_mean(tf.square(self.discriminator(target_prob, training=False)))
            return self.adversarial_weight * loss, (loss, target_prob)

        gradients, ((loss_src, source_logits), (loss_adv, target_prob)) = pass_by_pass_gradients(
            (source_pass, target_pass), seg_vars, lambda loss: self.grouped.scale_loss(loss / _replicas()))
        self.grouped.apply(gradients, seg_vars)

        disc_vars = self.discriminator.trainable_variables
        source_prob = tf.stop_gradient(tf.nn.softmax(source_logits))
        target_prob = tf.stop_gradient(target_prob)
        with tf.GradientTape() as tape:
            d_source = self.discriminator(source_prob, training=True)
            d_target = self.discriminator(target_prob, training=True)
            loss_disc = tf.reduce_mean(tf.square(d_source)) + tf.reduce_mean(tf.square(d_target - 1.0))
            scaled_disc = loss_disc / _replicas()
        grads = tape.gradient(scaled_disc, disc_vars)
        self.discriminator_optimizer.apply_gradients(zip(grads, disc_vars))

        self.loss_tracker.update_state(loss_src)
        self.adv_tracker.update_state(loss_adv)
        self.disc_tracker.update_state(loss_disc)
        return {m.name: m.result() for m in self.metrics}


# --------------------------------------------------------------------------------------------------
# The stage


def run_warmup_stage(ctx: RunContext) -> dict | None:
    """Train the warm-up model (source-only or adversarial), save it, and evaluate it on target val."""
    cfg = ctx.cfg
    w = cfg.warmup

    def build(samples: StageSamples) -> StageTraining:
        with training_scope(cfg.train):
            segmenter = synchronize_batch_norm(new_segmenter(cfg), cfg.train.sync_batch_norm)
            # The official warm-up trains the head at 10x the backbone's learning rate.
            grouped = build_segmentation_optimizer(cfg, w.lr, 10 * w.lr, w.iterations,
                                                   segmenter.trainable_variables)
            state = {"segmenter": segmenter, "optimizer": grouped.optimizer}
            if w.mode == "source_only":
                trainer = SupervisedSegmentation(segmenter, grouped, cfg.model.align_corners)
                target = None
            else:
                discriminator = build_discriminator(cfg.data.num_classes)
                disc_schedule = PolyDecay(w.discriminator_lr, w.iterations, cfg.train.poly_power)
                disc_optimizer = keras.optimizers.Adam(disc_schedule, beta_1=0.9, beta_2=0.99,
                                                       name="adam_discriminator")
                disc_optimizer.build(discriminator.trainable_variables)
                trainer = AdversarialWarmup(segmenter, discriminator, grouped, disc_optimizer,
                                            w.adversarial_weight, cfg.model.align_corners)
                state.update(discriminator=discriminator, adam_discriminator=disc_optimizer)
                target = samples.target_train
            trainer.compile(optimizer=grouped.optimizer)

        def make_dataset(start_batch: int):
            # The adversarial warm-up (AdaptSegNet) sees the target images as they are: no CutMix.
            return make_training_dataset(samples.source, target, cfg, cfg.train.seed, start_batch=start_batch,
                                         cutmix_prob=0.0)

        return StageTraining(trainer, segmenter, state, make_dataset, w.iterations)

    return train_stage(ctx, WARMUP, cfg.train.seed, build)


# The warm-up reads the data, the network, the training settings and its own section; every stage that
# reports scores evaluates on eval.split (+ report_subsets), so those are the warm-up's and every later
# stage's.
WARMUP = Stage("warmup", needs=(),
               reads=("data", "model", "train", "warmup", "eval.split", "eval.report_subsets"),
               run=run_warmup_stage)
