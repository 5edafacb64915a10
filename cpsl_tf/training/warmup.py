"""Stage ``warmup``: source-only training (Eq. 3) or output-space adversarial warm-up (AdaptSegNet).

Both are ``keras.Model`` subclasses with their own ``train_step``, run by ``model.fit``. The adversarial
variant follows the official code (docs/official-code.md section 1.0): the generator loss is the source CE
on logits upsampled to the crop plus ``adversarial_weight`` x the LS-GAN loss asking the discriminator to
take the softmax of the upsampled target output for source (label 0); the discriminator is trained with
MSE(D(src), 0) + MSE(D(tgt), 1) by Adam (betas 0.9, 0.99) with a poly schedule.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cpsl_tf.config import Config
from cpsl_tf.cpsl.head import SELF_LABELING_PREFIX
from cpsl_tf.cpsl.losses import segmentation_cross_entropy
from cpsl_tf.data.pipeline import make_training_dataset
from cpsl_tf.evaluation.evaluate import evaluate_model
from cpsl_tf.gradients import pass_by_pass_gradients
from cpsl_tf.labels import class_names
from cpsl_tf.models.checkpoint import save_model_checkpoint
from cpsl_tf.models.discriminator import build_discriminator
from cpsl_tf.models.resnet import load_imagenet_backbone
from cpsl_tf.models.segmenter import build_segmenter, is_head_variable
from cpsl_tf.resize import resize_bilinear
from cpsl_tf.training.callbacks import StageEvaluation
from cpsl_tf.training.inputs import stage_samples
from cpsl_tf.training.loop import fit_resumable
from cpsl_tf.training.optim import GroupedSGD, make_sgd
from cpsl_tf.training.schedule import PolyDecay
from cpsl_tf.training.stages import RunContext, StageError, stage_fingerprint
from cpsl_tf.training.strategy import synchronize_batch_norm, training_scope


def _replicas():
    """Gradients are summed across replicas, so each replica's loss is divided by their number."""
    return tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)


class SupervisedSegmentation(keras.Model):
    """Supervised training on labelled crops (source-only warm-up, or the oracle on target labels)."""

    def __init__(self, segmenter: keras.Model, optimizer: GroupedSGD, align_corners: bool = True,
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

    def __init__(self, segmenter: keras.Model, discriminator: keras.Model, optimizer: GroupedSGD,
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


def build_segmentation_optimizer(cfg: Config, lr: float, head_lr: float, total_steps: int,
                                 variables, self_labeling_lr: float | None = None) -> GroupedSGD:
    """SGD groups of the official code: backbone at ``lr``, segmentation head at ``head_lr`` and, for CPSL,
    the self-labeling head's W at ``self_labeling_lr``; coupled weight decay on all of them; gradient
    accumulation and float16 loss scaling from ``cfg.train``."""
    t = cfg.train
    k = t.gradient_accumulation_steps
    groups = {"backbone": make_sgd(lr, total_steps, t.momentum, t.poly_power, "sgd_backbone", k),
              "head": make_sgd(head_lr, total_steps, t.momentum, t.poly_power, "sgd_head", k)}
    if self_labeling_lr is not None:
        groups["self_labeling"] = make_sgd(self_labeling_lr, total_steps, t.momentum, t.poly_power,
                                           "sgd_self_labeling", k)

    def assign(variable) -> str:
        if variable.path.startswith(SELF_LABELING_PREFIX):
            return "self_labeling"
        return "head" if is_head_variable(variable) else "backbone"

    grouped = GroupedSGD(groups, assign, weight_decay=t.weight_decay,
                         loss_scaling=t.mixed_precision == "mixed_float16")
    grouped.build(variables)
    return grouped


def new_segmenter(cfg: Config) -> keras.Model:
    """A segmenter for the config, with the ImageNet backbone when ``model.imagenet_weights`` is set."""
    segmenter = build_segmenter(cfg.model, cfg.data.num_classes)
    if cfg.model.imagenet_weights:
        try:
            load_imagenet_backbone(segmenter, cfg.model.backbone)
        except Exception as err:  # download or file problems surface with the fix in the message
            raise StageError(
                f"could not load ImageNet weights for model.backbone={cfg.model.backbone}: {err}. They are "
                "downloaded by keras.applications on first use (~/.keras/models); without internet copy the "
                "file there, or run with --set model.imagenet_weights=false") from err
    return segmenter


def checkpoint_meta(cfg: Config, stage: str) -> dict:
    """The sidecar of a stage's network; ``fingerprint`` lets the stages that load it check it was trained
    under their config; ``input_size`` (H, W) feeds it in evaluate and predict away from its run folder."""
    return {"model": cfg.model, "num_classes": cfg.data.num_classes,
            "class_names": list(class_names(cfg.data.num_classes)), "stage": stage, "config": cfg.name,
            "fingerprint": stage_fingerprint(cfg, stage), "input_size": list(cfg.data.target_size)}


def evaluate_on_target(segmenter: keras.Model, cfg: Config, samples, progress: bool | None = None) -> dict:
    """Target-val scores in the shape of ``results.json`` (fractions; per-class lists)."""
    result = evaluate_model(segmenter, samples, cfg.data.num_classes, image_size=cfg.data.target_size,
                            batch_size=cfg.eval.batch_size, align_corners=cfg.model.align_corners,
                            subsets=cfg.eval.report_subsets or None,
                            class_names=class_names(cfg.data.num_classes), progress=progress)
    return {"miou": result["miou"], "mpa": result["mpa"], "pa": result["pa"],
            "iou": [c["iou"] for c in result["classes"]], "acc": [c["acc"] for c in result["classes"]],
            **({"subsets": result["subsets"]} if result.get("subsets") else {})}


def run_warmup_stage(ctx: RunContext) -> dict:
    """Train the warm-up model (source-only or adversarial), save it, and evaluate it on target val."""
    cfg = ctx.cfg
    stage_dir = ctx.stage_dir("warmup")
    samples = stage_samples(cfg)
    keras.utils.set_random_seed(cfg.train.seed)
    w = cfg.warmup
    with training_scope(cfg.train):
        segmenter = synchronize_batch_norm(new_segmenter(cfg), cfg.train.sync_batch_norm)
        # The official warm-up trains the head at 10x the backbone's learning rate.
        grouped = build_segmentation_optimizer(cfg, w.lr, 10 * w.lr, w.iterations,
                                               segmenter.trainable_variables)
        state = {"segmenter": segmenter, **grouped.groups}
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
        trainer.compile(optimizer=grouped.groups["backbone"])

    def make_dataset(start_batch: int):
        # The adversarial warm-up (AdaptSegNet) sees the target images as they are: no CutMix.
        return make_training_dataset(samples.source, target, cfg, cfg.train.seed, start_batch=start_batch,
                                     cutmix_prob=0.0)

    with_labels = all(s.label is not None for s in samples.target_val)
    # One evaluation at the end of the stage: the periodic one of the last step, if there was one.
    evaluation = StageEvaluation(
        lambda progress: evaluate_on_target(segmenter, cfg, samples.target_val, progress=progress))

    fit_resumable(trainer, make_dataset, w.iterations, stage_dir, state, cfg.train.checkpoint_every,
                  cfg.train.eval_every, evaluation if with_labels else None,
                  log_every=cfg.train.log_every, fingerprint=stage_fingerprint(cfg, "warmup"))
    save_model_checkpoint(segmenter, ctx.model_checkpoint("warmup"), checkpoint_meta(cfg, "warmup"))
    return evaluation.final() if with_labels else None
