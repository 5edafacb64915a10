"""Stages ``distill1`` / ``distill2``: self-distillation into a fresh student (paper 4.2,
docs/official-code.md section 1.5).

Per iteration: source CE; hard pseudo labels from the previous stage's model (eval mode) on the weak
target crop, averaged with its prediction on the flipped crop, kept where the confidence reaches
``distill.threshold`` (0.95) and replayed into the strong frame; the student on the strong view is
trained with CE against them plus ``kd_weight`` x KL(teacher || student) on the strong view. The KL is
the correct one (log-probabilities in), not the official softmax-input quirk.

The labels are computed on the fly from the teacher instead of being written to PNG files first: the
same labels, without a pass over the data set and its storage.

Each round is a stage (:data:`DISTILL_ROUNDS`) reading the network of the one before it; it builds its
trainer and hands it to the trainer skeleton (:func:`cpsl_tf.training.trainer.train_stage`).

The student is the teacher's architecture (the paper's rounds) or, with ``distill.student``, a real-time
network (:mod:`cpsl_tf.models.lraspp`). Both networks' logits are resized to the stride-8 map of the crop
(``crop // 8``) with the project's resize convention before the labels and the KL are taken, so a student
of another output size is trained on the same targets; at sizes that are multiples of 8 that map is the
student's own output size.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from cpsl_tf.config import Config
from cpsl_tf.cpsl.losses import distillation_kl, segmentation_cross_entropy
from cpsl_tf.data.pipeline import make_training_dataset
from cpsl_tf.data.replay import replay_to_strong
from cpsl_tf.gradients import pass_by_pass_gradients
from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.models.checkpoint import build_architecture, load_segmenter
from cpsl_tf.resize import resize_bilinear
from cpsl_tf.training.adapt import CPSL
from cpsl_tf.training.builders import (
    TARGET_MAP_STRIDE,
    build_segmentation_optimizer,
    load_stage_model,
    new_segmenter,
    teacher_record,
)
from cpsl_tf.training.inputs import StageSamples
from cpsl_tf.training.optim import SegmentationOptimizer
from cpsl_tf.training.stage import RunContext, Stage, StageError
from cpsl_tf.training.strategy import synchronize_batch_norm, training_scope
from cpsl_tf.training.trainer import StageTraining, train_stage


def confident_labels(teacher: keras.Model, images, size, threshold: float, align_corners: bool,
                     flip: bool = True):
    """Argmax of the teacher's softmax (averaged with its prediction on the mirrored image when ``flip``);
    255 where the confidence is below ``threshold``."""
    probs = tf.nn.softmax(resize_bilinear(teacher(images, training=False)["logits"], size, align_corners))
    if flip:
        mirrored = tf.reverse(teacher(tf.reverse(images, axis=[2]), training=False)["logits"], axis=[2])
        probs = 0.5 * (probs + tf.nn.softmax(resize_bilinear(mirrored, size, align_corners)))
    labels = tf.argmax(probs, axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_max(probs, axis=-1) >= threshold, labels, IGNORE_INDEX)


class Distillation(keras.Model):
    def __init__(self, student: keras.Model, teacher: keras.Model, optimizer: SegmentationOptimizer,
                 threshold: float, kd_weight: float, align_corners: bool = True, flip: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.grouped = optimizer
        self.threshold = threshold
        self.kd_weight = kd_weight
        self.align_corners = align_corners
        self.flip = flip
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "loss_src", "loss_tgt", "loss_kd", "labelled")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.student(images, training=training)

    def train_step(self, data):
        source, source_labels = data["source_image"], data["source_label"]
        weak, strong = data["target_image"], data["target_strong"]
        size = tf.shape(weak)[1:3] // TARGET_MAP_STRIDE
        labels = confident_labels(self.teacher, weak, size, self.threshold, self.align_corners, self.flip)
        strong_labels, _ = replay_to_strong(labels[..., tf.newaxis], data["strong_params"])
        strong_labels = strong_labels[..., 0]
        teacher_strong = resize_bilinear(self.teacher(strong, training=False)["logits"], size,
                                         self.align_corners)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.student.trainable_variables

        def source_pass():
            source_logits = resize_bilinear(self.student(source, training=True)["logits"],
                                            tf.shape(source)[1:3], self.align_corners)
            loss = segmentation_cross_entropy(source_logits, source_labels)
            return loss, loss

        def target_pass():
            student_strong = resize_bilinear(self.student(strong, training=True)["logits"], size,
                                             self.align_corners)
            loss_tgt = segmentation_cross_entropy(student_strong, strong_labels)
            loss_kd = distillation_kl(student_strong, teacher_strong)
            return loss_tgt + self.kd_weight * loss_kd, (loss_tgt, loss_kd)

        gradients, (loss_src, (loss_tgt, loss_kd)) = pass_by_pass_gradients(
            (source_pass, target_pass), variables,
            lambda loss: self.grouped.scale_loss(loss / tf.cast(replicas, tf.float32)))
        total = loss_src + loss_tgt + self.kd_weight * loss_kd
        self.grouped.apply(gradients, variables)
        labelled = tf.reduce_mean(tf.cast(tf.not_equal(strong_labels, IGNORE_INDEX), tf.float32))
        for name, value in (("loss", total), ("loss_src", loss_src), ("loss_tgt", loss_tgt),
                            ("loss_kd", loss_kd), ("labelled", labelled)):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def student_architecture(cfg: Config) -> dict | None:
    """How the student's sidecar names its network; None for the teacher's architecture."""
    d = cfg.distill
    if d.student == "teacher":
        return None
    return {"name": d.student, "width": d.student_width, "head_channels": d.student_head_channels,
            "bn_momentum": cfg.model.bn_momentum}


def new_student_network(cfg: Config) -> keras.Model:
    """A freshly initialised student of ``distill.student`` (ImageNet weights when model.imagenet_weights
    is set)."""
    architecture = student_architecture(cfg)
    if architecture is None:
        return new_segmenter(cfg)
    try:
        return build_architecture(architecture, cfg.data.num_classes,
                                  imagenet_weights=cfg.model.imagenet_weights, name="student")
    except Exception as err:  # a width without ImageNet weights, or a failed download, named with the fix
        raise StageError(f"distill.student={cfg.distill.student} with model.imagenet_weights="
                         f"{cfg.model.imagenet_weights}: {err}. ImageNet weights are downloaded by "
                         "keras.applications on first use; without internet run with "
                         "--set model.imagenet_weights=false") from err


def _same_shapes(a: keras.Model, b: keras.Model) -> bool:
    return [tuple(w.shape) for w in a.weights] == [tuple(w.shape) for w in b.weights]


def new_student(cfg: Config, teacher_stage_model: keras.Model) -> keras.Model:
    """The student's initialisation (``distill.student_init``): its own initialisation ("imagenet", i.e.
    ImageNet when model.imagenet_weights is set), the teacher's weights ("teacher", when the student has the
    teacher's architecture: the second round of a real-time student starts from the first round's; a first
    round into another architecture starts from the student's own initialisation), or a checkpoint path."""
    init = cfg.distill.student_init
    if init == "imagenet":
        return new_student_network(cfg)
    if init == "teacher":
        student = new_student_network(cfg)
        if _same_shapes(student, teacher_stage_model):
            student.set_weights(teacher_stage_model.get_weights())
        return student
    try:
        student, meta = load_segmenter(init)
    except Exception as err:
        raise StageError(f"distill.student_init={init!r} is neither 'imagenet', 'teacher' nor a loadable "
                         f"segmenter checkpoint: {err}") from err
    if meta["num_classes"] != cfg.data.num_classes:
        raise StageError(f"distill.student_init {init} has {meta['num_classes']} classes, the config "
                         f"{cfg.data.num_classes}")
    return student


def run_distill_stage(ctx: RunContext, round_index: int) -> dict | None:
    cfg = ctx.cfg
    d = cfg.distill
    stage = DISTILL_ROUNDS[round_index - 1]
    previous, = stage.needs

    def build(samples: StageSamples) -> StageTraining:
        with training_scope(cfg.train):
            teacher = load_stage_model(ctx, previous)
            student = synchronize_batch_norm(new_student(cfg, teacher), cfg.train.sync_batch_norm)
            grouped = build_segmentation_optimizer(cfg, d.lr, d.head_lr, d.iterations,
                                                   student.trainable_variables)
            trainer = Distillation(student, teacher, grouped, d.threshold, d.kd_weight,
                                   cfg.model.align_corners, d.flip)
            trainer.compile(optimizer=grouped.optimizer)

        def make_dataset(start_batch: int):
            return make_training_dataset(samples.source, samples.target_train, cfg,
                                         cfg.train.seed + round_index, start_batch=start_batch)

        return StageTraining(trainer, student, {"student": student, "optimizer": grouped.optimizer},
                             make_dataset, d.iterations, architecture=student_architecture(cfg),
                             distilled_from=teacher_record(ctx, previous))

    return train_stage(ctx, stage, cfg.train.seed + round_index, build)


def _distill_round(round_index: int, teacher: Stage) -> Stage:
    return Stage(f"distill{round_index}", needs=(teacher,), reads=("distill",),
                 run=functools.partial(run_distill_stage, round_index=round_index))


# Round 1 distils the CPSL network, round 2 the network of round 1 (distill.rounds says how many run).
DISTILL1 = _distill_round(1, CPSL)
DISTILL2 = _distill_round(2, DISTILL1)
DISTILL_ROUNDS = (DISTILL1, DISTILL2)
