"""The parts of the CPSL step that the presets choose between.

:meth:`cpsl_tf.cpsl.model.CPSLModel.train_step` is Algorithm 1 written once. Where the ``official`` preset
(the public code, official-code-notes sections 0, 8 and 14) departs from the paper, the step calls a part:

============  =============================================  ============================================
part          ``paper``                                      ``official``
============  =============================================  ============================================
teacher view  :class:`WeakCropTeacher`: f'_SEG in inference  :class:`FullImageTeacher`: f'_SEG in training
              mode on the weak crop                          mode on the un-augmented full image, mapped
                                                             into the crop (full2weak)
sampler       :class:`PerImageSampler`: M pixels per image,  :class:`SharedPermutationSampler`: the first
              class-balanced (Eq. 8-9) or uniform (w/o CB)   M of one permutation shared by the batch
assignment    :class:`OneBankAssignment`: Sinkhorn over one  :class:`TwoBankAssignment`: a bank of
              bank of features, L_SL (Eq. 5, 6, 12)          features and one of logits, L_SL summed
consistency   :class:`SymmetricKL`: Eq. 13 between the       :class:`PrototypeKL`: one-way KL of the
              replayed weak and the strong logits            prototype distributions
============  =============================================  ============================================

The other differences are config values the preset sets (``cpsl_tf.config.OFFICIAL_PRESET``) for switches
of the shared step: the target loss (CE, Eq. 2, or the official 0.1 CE + RCE: ``cpsl.target_loss``), the
CutMix label paste (``cpsl.cutmix_prob``) and r of Eq. 12 fixed at Eq. 10 (``cpsl.alignment_momentum`` 1,
where the paper's delta_pseudo follows Eq. 11). ``cpsl_tf.config.validate`` refuses, under the official
preset, the Table 3 switches its parts ignore.

Every part runs inside the step's ``tf.function``; under ``tf.distribute`` it runs on each replica, and
what must be the same on every replica (the Sinkhorn input, the banks) is computed from the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from cpsl_tf.config import CPSLConfig
from cpsl_tf.cpsl.assignment import online_assignment_with_marginal
from cpsl_tf.cpsl.head import SelfLabelingHead
from cpsl_tf.cpsl.losses import official_prototype_consistency, self_labeling_loss, symmetric_kl_consistency
from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.official_sl import official_two_bank_sl_loss, uniform_official_samples
from cpsl_tf.cpsl.replicas import gather_global_batch, global_mean_share
from cpsl_tf.cpsl.sampling import class_balanced_sample_indices, gather_pixels, uniform_sample_indices
from cpsl_tf.data.replay import replay_to_strong
from cpsl_tf.data.views import full_to_weak
from cpsl_tf.resize import resize_bilinear

# --------------------------------------------------------------------------------------------------
# Teacher view: what the momentum network f'_SEG gives the step (Algorithm 1 lines 7 and 16).


@dataclass
class TeacherView:
    """The momentum network's outputs for one step.

    ``features`` (B, h, w, D) are in the weak crop's frame at the target map (h, w), where f'_SL scores them
    for P_SL (Eq. 4); ``sample_maps`` are the maps the sampler draws pixels from; ``logits`` (B, h, w, K) in
    the same frame, for the consistency term that needs them (else None).
    """

    features: tf.Tensor
    sample_maps: dict
    logits: tf.Tensor | None = None


class WeakCropTeacher:
    """Paper: f'_SEG in inference mode on the weak crop; features and logits resized (align corners) to the
    target map, features L2-normalised (Algorithm 1 line 8).

    The weak crop holds the CutMix box when the pipeline pasted one, so there the teacher saw source
    pixels: the box is left out of what describes the target (``sees_cutmix_box``)."""

    sees_cutmix_box = True

    def __init__(self, network: keras.Model, align_corners: bool):
        self.network = network
        self.align_corners = align_corners

    def __call__(self, data, map_size) -> TeacherView:
        outputs = self.network(data["target_image"], training=False)
        logits = resize_bilinear(outputs["logits"], map_size, self.align_corners)
        features = tf.math.l2_normalize(resize_bilinear(outputs["features"], map_size, self.align_corners),
                                        axis=-1)
        return TeacherView(features=features, sample_maps={"features": features}, logits=logits)


class FullImageTeacher:
    """Official: f'_SEG in training mode (batch statistics, active dropout) on the un-augmented full target
    image; its features are mapped into the weak crop by the official full2weak
    (:func:`cpsl_tf.data.views.full_to_weak`), and the sampler draws from the full-image maps.

    The full image is not CutMix'ed, so the teacher never sees the box."""

    sees_cutmix_box = False

    def __init__(self, network: keras.Model):
        self.network = network

    def __call__(self, data, map_size) -> TeacherView:
        full = data["target_full"]
        outputs = self.network(full, training=True)
        crop_size = data["target_image"].shape[1:3]
        stride = crop_size[0] // data["target_soft"].shape[1]
        features = full_to_weak(outputs["features"], data["weak_params"], full.shape[1:3], crop_size, stride)
        return TeacherView(features=features,
                           sample_maps={"features": outputs["features"], "logits": outputs["logits"]})


# --------------------------------------------------------------------------------------------------
# Sampler: the pixels Z-hat of Algorithm 1 line 9.


class PerImageSampler:
    """M normalised features per image from the target map: class-balanced on the rectified labels (Eq. 8-9)
    or, for ``w/o CB``, uniform.

    Each image draws with its own seed, folded from its index in the global batch, so the samples do not
    depend on how the global batch is split across replicas. Returns this replica's samples (B * M, D)."""

    def __init__(self, pixels_per_image: int, num_classes: int, class_balanced: bool):
        self.pixels_per_image = pixels_per_image
        self.num_classes = num_classes
        self.class_balanced = class_balanced

    def __call__(self, view: TeacherView, labels, step_seed) -> dict:
        features = view.sample_maps["features"]
        batch = tf.shape(labels)[0]
        flat_labels = tf.reshape(labels, [batch, -1])
        first = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32) * batch
        m = self.pixels_per_image

        def indices_of(args):
            index, image_labels = args
            seed = tf.random.experimental.stateless_fold_in(step_seed, first + index)
            if self.class_balanced:
                return class_balanced_sample_indices(image_labels[tf.newaxis], m, self.num_classes, seed)[0]
            return uniform_sample_indices(tf.shape(image_labels)[0], m, seed)

        indices = tf.map_fn(indices_of, (tf.range(batch), flat_labels),
                            fn_output_signature=tf.TensorSpec([m], tf.int32))
        return {"features": tf.reshape(gather_pixels(features, indices), [-1, features.shape[-1]])}


class SharedPermutationSampler:
    """The official sampling: the first M positions of one random permutation of the full-image map,
    shared by every image (the labels are not used). Returns this replica's L2-normalised features
    (B, M, D) and logits (B, M, K) of those pixels."""

    def __init__(self, pixels_per_image: int):
        self.pixels_per_image = pixels_per_image

    def __call__(self, view: TeacherView, labels, step_seed) -> dict:
        features, logits = view.sample_maps["features"], view.sample_maps["logits"]
        pixels = tf.shape(features)[1] * tf.shape(features)[2]
        permutation = uniform_sample_indices(pixels, self.pixels_per_image, step_seed)
        features, logits = uniform_official_samples(features, logits, permutation, self.pixels_per_image)
        return {"features": features, "logits": logits}


# --------------------------------------------------------------------------------------------------
# Assignment: Sinkhorn with the memory bank(s) and L_SL (Algorithm 1 lines 10-14).


class OneBankAssignment:
    """L_SL (Eq. 5) of this replica's samples against Q_cur, the current rows of Sinkhorn (Eq. 6, r of
    Eq. 12) over the global batch's samples and, once it is full, the memory bank (as the official code: a
    bank that grows every step would change the Sinkhorn shape, and so recompile it, at every step until it
    is full). The bank then takes the global batch's samples (none with ``cpsl.bank_size`` = 0)."""

    diagnostics = ("q_entropy", "q_marginal_gap")

    def __init__(self, head: SelfLabelingHead, bank: MemoryBank, cpsl: CPSLConfig):
        self.head = head
        self.bank = bank
        self.cpsl = cpsl

    def __call__(self, samples: dict, class_marginal) -> tuple:
        c = self.cpsl
        local = samples["features"]
        everyone = gather_global_batch(local)
        q_everyone, q_marginal = online_assignment_with_marginal(
            self.head(everyone), self.bank, self.head, class_marginal, c.epsilon, c.sinkhorn_iterations,
            c.sinkhorn_log_domain)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        count = tf.shape(local)[0]
        start = tf.cast(replica, tf.int32) * count
        q_current = q_everyone[start:start + count]
        loss = self_labeling_loss(q_current, self.head(local), c.tau)
        if c.bank_size > 0:
            self.bank.enqueue(everyone)
        entropy = -tf.reduce_mean(tf.reduce_sum(tf.math.xlogy(q_current, q_current), axis=-1))
        return loss, {"q_entropy": entropy,
                      "q_marginal_gap": 0.5 * tf.reduce_sum(tf.abs(q_marginal - class_marginal))}


class TwoBankAssignment:
    """The official L_SL (:func:`cpsl_tf.cpsl.official_sl.official_two_bank_sl_loss`) over the global
    batch's samples: a bank of features and a bank of logits, each image enqueued before the next is
    scored, the two losses summed. Every replica runs the sequence one device would."""

    diagnostics = ()

    def __init__(self, head: SelfLabelingHead, feature_bank: MemoryBank, logit_bank: MemoryBank,
                 cpsl: CPSLConfig):
        self.head = head
        self.feature_bank = feature_bank
        self.logit_bank = logit_bank
        self.cpsl = cpsl

    def __call__(self, samples: dict, class_marginal) -> tuple:
        c = self.cpsl
        loss, _ = official_two_bank_sl_loss(
            gather_global_batch(samples["features"]), gather_global_batch(samples["logits"]),
            self.head.prototypes, self.feature_bank, self.logit_bank, class_marginal, c.tau, c.epsilon,
            c.sinkhorn_iterations, c.sinkhorn_log_domain)
        return loss, {}


# --------------------------------------------------------------------------------------------------
# Consistency: L_REG between the momentum network's weak view and the network's strong view.


class SymmetricKL:
    """L_REG (Eq. 13): the symmetric KL between the momentum network's weak-crop logits, replayed into the
    strong view's frame, and the network's strong-view logits, over the pixels valid in both (not outside
    the replayed crop, not in the cutout, not in a CutMix box the teacher saw). For ``w/o Aug``
    (``cpsl.strong_augmentation`` false) the network's weak-view logits take the strong view's place
    (:meth:`on_weak_view`).

    Each mean over pixels is weighted by :func:`global_mean_share` of its pixel count."""

    def __init__(self, student: keras.Model, align_corners: bool):
        self.student = student
        self.align_corners = align_corners

    def __call__(self, data, view: TeacherView, scores, hidden, map_size):
        box_channel = tf.cast(hidden, tf.float32)[..., tf.newaxis]
        replayed, valid = replay_to_strong(tf.concat([view.logits, box_channel], axis=-1),
                                           data["strong_params"])
        valid = valid & (replayed[..., -1] < 0.5)
        strong = self.student(data["target_strong"], training=True)
        strong_logits = resize_bilinear(strong["logits"], map_size, self.align_corners)
        return symmetric_kl_consistency(replayed[..., :-1], strong_logits, valid) * global_mean_share(
            tf.reduce_sum(tf.cast(valid, tf.float32)))

    def on_weak_view(self, view: TeacherView, weak_logits, hidden):
        valid = tf.logical_not(hidden)
        return symmetric_kl_consistency(view.logits, weak_logits, valid) * global_mean_share(
            tf.reduce_sum(tf.cast(valid, tf.float32)))


class PrototypeKL:
    """The official L_REG: one-way KL from the teacher's prototype distribution (cosine to W' / tau in the
    weak frame, replayed into the strong frame) to the student's prototype distribution of its strong-view
    features (:func:`cpsl_tf.cpsl.losses.official_prototype_consistency`)."""

    def __init__(self, student: keras.Model, head: SelfLabelingHead, tau: float):
        self.student = student
        self.head = head
        self.tau = tau

    def __call__(self, data, view: TeacherView, scores, hidden, map_size):
        replayed, valid = replay_to_strong(scores, data["strong_params"])
        teacher_probs = tf.nn.softmax(replayed / self.tau, axis=-1)
        mask = tf.broadcast_to(valid[..., tf.newaxis], tf.shape(teacher_probs))
        student_features = self.student(data["target_strong"], training=True)["features"]
        return official_prototype_consistency(
            teacher_probs, mask, student_features, tf.convert_to_tensor(self.head.momentum_prototypes),
            self.tau) * global_mean_share(tf.reduce_sum(tf.cast(mask, tf.float32)))


# --------------------------------------------------------------------------------------------------


@dataclass
class StepParts:
    """The parts of one preset."""

    teacher_view: WeakCropTeacher | FullImageTeacher
    sampler: PerImageSampler | SharedPermutationSampler
    assignment: OneBankAssignment | TwoBankAssignment
    consistency: SymmetricKL | PrototypeKL


def paper_parts(student, teacher, head, bank, cpsl: CPSLConfig, num_classes: int,
                align_corners: bool) -> StepParts:
    return StepParts(WeakCropTeacher(teacher, align_corners),
                     PerImageSampler(cpsl.pixels_per_image, num_classes, cpsl.class_balanced),
                     OneBankAssignment(head, bank, cpsl), SymmetricKL(student, align_corners))


def official_parts(student, teacher, head, bank, logit_bank, cpsl: CPSLConfig) -> StepParts:
    return StepParts(FullImageTeacher(teacher), SharedPermutationSampler(cpsl.pixels_per_image),
                     TwoBankAssignment(head, bank, logit_bank, cpsl), PrototypeKL(student, head, cpsl.tau))
