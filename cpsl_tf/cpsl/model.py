"""CPSLModel: one adaptation step of paper Algorithm 1 (lines 3-22) as ``keras.Model.train_step``.

:meth:`CPSLModel.train_step` is the algorithm written once; the presets ``paper`` and ``official`` choose its
parts (:mod:`cpsl_tf.cpsl.parts`: teacher view, sampler, assignment, consistency term). Per iteration, for a
batch of source crops and target weak/strong crops with their stored P_ST:

1. The momentum network f'_SEG's view of the target (the teacher view), in the weak crop's frame at the
   target map resolution (crop / 4, the loss resolution of the official code).
2. P_SL from the momentum head f'_SL (Eq. 4) and the rectified labels Y = argmax(P_SL * P_ST) (Eq. 1).
   Where CutMix pasted a source box into the weak crop, the target loss takes the source labels there.
3. M pixels per image from the teacher view (the sampler: Eq. 8-9, or the official uniform sampling).
4. L^s_SEG, source cross-entropy at crop resolution (Eq. 3).
5. L^t_SEG of the network's weak-view logits against Y (Eq. 2; 0.1 CE + RCE for ``cpsl.target_loss=ce+rce``).
6. L_SL (Eq. 5) against the Sinkhorn assignment (Eq. 6, r of Eq. 12) of the samples with the memory bank(s)
   (the assignment), which trains f_SL; the bank(s) then take the samples of the global batch.
7. L_REG, the consistency of the network's strong view with the momentum network's weak view.
8. Total loss Eq. 14; the optimizer's step; EMA updates of f'_SEG and f'_SL; delta_pseudo follows Eq. 11.

The ablations of paper Table 3 are switches of :class:`cpsl_tf.config.CPSLConfig`.
Distribution (``tf.distribute`` Mirrored / MultiWorkerMirrored; build the models inside ``strategy.scope()``):
one step on R replicas equals one step on one device over the same global batch.

* Samples: every image draws its pixels with a seed folded from its index in the global batch; every
  replica all-gathers the samples and the per-image class distributions of the global batch, so the
  Sinkhorn input, the bank update and delta_pseudo are identical on every replica (the bank and
  delta_pseudo variables use ``only_first_replica`` aggregation besides).
* Losses: each masked mean (CE, RCE, consistency over valid pixels) is multiplied by
  :func:`cpsl_tf.cpsl.replicas.global_mean_share` of its pixel count, so the mean over replicas is the mean
  over the global batch even when replicas hold different numbers of valid pixels. The total is divided by
  R before the gradient because the optimizer sums gradients across replicas. The trackers receive these
  shared terms, and Keras' ``fit`` averages the per-replica metric results, so the logged losses are the
  global ones.
* EMA: the networks' weights are mirrored and the gradients all-reduced, so every replica holds the same
  f_SEG and W after the optimizer; each replica then writes the same EMA value into its copy of f'_SEG
  and W' (teacher variables take per-replica writes; W' is ``only_first_replica``), and BN statistics are
  copied from the student's, which Keras keeps mean-aggregated.
* BatchNorm computes per-replica statistics unless the layers are synchronised (``train.sync_batch_norm``);
  only then is the step identical to the one-device step.

The optimizer reaches the step through :class:`cpsl_tf.gradients.StepOptimizer` (:meth:`use_optimizer`).
Under gradient accumulation (``train.gradient_accumulation_steps`` = k) each ``train_step`` is one
micro-batch: the optimizer applies the mean gradient every k-th call, and the EMA of f'_SEG / f'_SL follows
only when it reports that the weights changed (per optimizer step; not after a step skipped by loss
scaling). The memory bank, delta_pseudo (Eq. 11 is applied image by image, so the sequence of updates is
the full batch's) and the sampling iteration advance per micro-batch: a later micro-batch's Sinkhorn sees
the samples of the earlier ones in the bank, where the full batch would see them as current rows.
BatchNorm batch statistics are per micro-batch.

Mixed precision (``train.mixed_precision``): the networks compute in float16/bfloat16 and return float32
logits and features; the head, Sinkhorn, the bank and every loss run in float32. For float16 the
optimizer scales the loss (:meth:`cpsl_tf.gradients.StepOptimizer.scale_loss`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cpsl_tf.config import CPSLConfig
from cpsl_tf.cpsl.distribution import image_class_distribution, momentum_update
from cpsl_tf.cpsl.head import SelfLabelingHead
from cpsl_tf.cpsl.losses import reverse_cross_entropy, segmentation_cross_entropy
from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.parts import official_parts, paper_parts
from cpsl_tf.cpsl.rectify import rectify, self_labeling_probabilities
from cpsl_tf.cpsl.replicas import gather_global_batch, global_mean_share
from cpsl_tf.data.cutmix import box_mask
from cpsl_tf.gradients import StepOptimizer, pass_by_pass_gradients, when_applied
from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import resize_bilinear, resize_nearest


def median(values):
    """The median of a 1-D tensor of static length."""
    ordered = tf.sort(values)
    n = values.shape[0]
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


class Latest(keras.metrics.Metric):
    """The last value given: for quantities that are a state of the model, not an average over steps."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", aggregation="mean", name="value")

    def update_state(self, value):
        self.value.assign(tf.cast(value, self.dtype))

    def result(self):
        return tf.convert_to_tensor(self.value)

    def reset_state(self):
        self.value.assign(0.0)


def total_loss(terms: dict, lambda_sl: float, lambda_reg: float):
    """L = L^s_SEG + L^t_SEG + lambda_1 L_SL + lambda_2 L_REG (Eq. 14) from the step's named terms."""
    return (terms["loss_src"] + terms["loss_tgt"] + lambda_sl * terms["loss_sl"]
            + lambda_reg * terms["loss_reg"])


def valid_pixel_count(labels):
    """Pixels whose label is not the ignore index."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tf.cast(labels, tf.int32), IGNORE_INDEX), tf.float32))


class CPSLModel(keras.Model):
    """The network f_SEG, its momentum copy f'_SEG, the self-labeling head f_SL (+ f'_SL), the memory bank(s)
    and delta_pseudo, trained by :meth:`train_step` with the parts of ``cpsl.preset``."""

    LOSS_NAMES = ("loss", "loss_src", "loss_tgt", "loss_sl", "loss_reg", "rectified_changed")
    # Metrics that describe the model's state (the value after the last step, not a mean over steps):
    # head_travel, the median over classes of the angle in degrees between W' and its initial direction;
    # delta_shift, the L1 distance of delta_pseudo from its start (Eq. 10).
    STATE_METRICS = ("delta_shift", "head_travel")

    def __init__(self, student: keras.Model, teacher: keras.Model, prototypes, class_distribution,
                 cpsl: CPSLConfig, align_corners: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.cpsl = cpsl
        self.align_corners = align_corners
        self.seed = seed
        num_classes = student.output["logits"].shape[-1]
        dim = student.output["features"].shape[-1]
        self.num_classes = num_classes
        self.head = SelfLabelingHead(num_classes, dim, prototypes if cpsl.prototype_init else None, seed=seed)
        self.bank = MemoryBank(max(cpsl.bank_size, 1), dim, name="memory_bank")
        start = np.asarray(class_distribution, np.float32)
        if start.shape != (num_classes,):
            raise ValueError(f"class distribution has shape {start.shape}, expected ({num_classes},)")
        self.delta_start = tf.constant(start)
        self.delta_pseudo = self.add_weight(shape=(num_classes,),
                                            initializer=keras.initializers.Constant(start),
                                            trainable=False, aggregation="only_first_replica",
                                            name="delta_pseudo")
        self.iteration = self.add_weight(shape=(), initializer="zeros", dtype="int64", trainable=False,
                                         aggregation="only_first_replica", name="cpsl_iteration")
        if cpsl.preset == "official":
            self.logit_bank = MemoryBank(max(cpsl.bank_size, 1), num_classes, name="logit_bank")
            self.parts = official_parts(student, teacher, self.head, self.bank, self.logit_bank, cpsl)
        else:
            self.parts = paper_parts(student, teacher, self.head, self.bank, cpsl, num_classes, align_corners)
        names = self.LOSS_NAMES + self.parts.assignment.diagnostics + self.STATE_METRICS
        self.trackers = {name: Latest(name) if name in self.STATE_METRICS else keras.metrics.Mean(name=name)
                         for name in names}
        # Every sub-network is built; without this, fit under a strategy would try a symbolic build by
        # calling the model on the training-data dict.
        self.built = True

    def use_optimizer(self, optimizer: StepOptimizer) -> None:
        """Set the optimizer (built on :attr:`trainable_for_step`) that :meth:`train_step` applies."""
        self.grouped = optimizer

    @property
    def trainable_for_step(self) -> list:
        """The variables one step updates: the network f_SEG and the self-labeling head's W."""
        return self.student.trainable_variables + [self.head.prototypes]

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.student(images, training=training)

    @property
    def momentum(self) -> float:
        return self.cpsl.ema_momentum if self.cpsl.use_momentum else 0.0

    # ----------------------------------------------------------------------------------------------
    # Pieces of the step

    def _class_marginal(self):
        """r of Eq. 12: delta_pseudo (for ``cpsl.marginal=ground_truth`` it holds the fixed ground-truth
        distribution it was started from), or the uniform distribution for equal partition."""
        if self.cpsl.equal_partition or not self.cpsl.class_balanced:
            return tf.fill([self.num_classes], 1.0 / self.num_classes)
        return tf.convert_to_tensor(self.delta_pseudo)

    def _aligns_distribution(self) -> bool:
        """Whether delta_pseudo follows Eq. 11 in this configuration."""
        c = self.cpsl
        return (c.use_self_labeling and c.class_balanced and not c.equal_partition and c.marginal == "pseudo"
                and c.alignment_momentum < 1)

    def _source_loss(self, source, source_labels):
        """The student's source cross-entropy (Eq. 3), weighted so that the replicas' means add up to the mean
        over the global batch."""
        logits = resize_bilinear(self.student(source, training=True)["logits"], tf.shape(source)[1:3],
                                 self.align_corners)
        return segmentation_cross_entropy(logits, source_labels) * global_mean_share(
            valid_pixel_count(source_labels))

    def _target_loss(self, logits, labels):
        """The target loss on the rectified labels (Eq. 2; 0.1 CE + RCE for ``ce+rce``), weighted as
        :meth:`_source_loss`."""
        if self.cpsl.target_loss == "ce+rce":
            loss = 0.1 * segmentation_cross_entropy(logits, labels) + reverse_cross_entropy(logits, labels)
        else:
            loss = segmentation_cross_entropy(logits, labels)
        return loss * global_mean_share(valid_pixel_count(labels))

    def _update_momentum_networks(self) -> None:
        """EMA of f'_SEG and f'_SL towards f_SEG and f_SL (Algorithm 1 lines 15 and 19)."""
        m = self.momentum
        for t, s in zip(self.teacher.weights, self.student.weights):
            if s.trainable:
                t.assign(m * tf.convert_to_tensor(t) + (1.0 - m) * tf.convert_to_tensor(s))
            else:  # BatchNorm statistics are copied, as the official code copies buffers.
                t.assign(s)
        self.head.update_momentum(m)

    def _record(self, values: dict) -> dict:
        """Update the metric trackers with this step's values and the head's travel; the logs ``train_step``
        returns."""
        values = {**values, "head_travel": median(self.head.travel_degrees())}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _targets(self, data, p_sl, p_st):
        """The labels of the step from P_SL and P_ST (Eq. 1, or an ablation's), on the target map.

        Where CutMix pasted a source box into the weak crop, the box holds source pixels: the target loss
        takes the source labels there (nearest-resized, the official paste-then-downsample). If the teacher
        view saw the box, it is left out of everything that describes the target (sampling, Eq. 11, the
        changed share, L_REG).

        Returns (labels for the target loss, target-only labels, the box the teacher saw (B, h, w) bool).
        """
        c = self.cpsl
        if c.use_self_labeling and c.use_self_training:
            rectified = rectify(p_sl, p_st, c.rectify_threshold)
        elif c.use_self_labeling:  # w/o ST: the cluster assignment alone
            rectified = rectify(p_sl, tf.ones_like(p_sl), c.rectify_threshold)
        else:  # w/o SL: plain self-training on the stored pseudo labels
            rectified = rectify(tf.ones_like(p_st), p_st, c.rectify_threshold)
        nowhere = tf.zeros(tf.shape(rectified), tf.bool)
        box = data.get("cutmix_box")
        if box is None:
            return rectified, rectified, nowhere
        map_size = tf.shape(p_st)[1:3]
        stride = data["target_image"].shape[1] // p_st.shape[1]
        in_box = box_mask(box, map_size[0], map_size[1], scale=stride)
        source_labels = resize_nearest(tf.cast(data["source_label"], tf.int32)[..., tf.newaxis], map_size)
        labels = tf.where(in_box, source_labels[..., 0], rectified)
        if not self.parts.teacher_view.sees_cutmix_box:
            return labels, rectified, nowhere
        return labels, tf.where(in_box, IGNORE_INDEX, rectified), in_box

    # ----------------------------------------------------------------------------------------------

    def train_step(self, data):
        c, parts = self.cpsl, self.parts
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        p_st = tf.cast(data["target_soft"], tf.float32)
        map_size = tf.shape(p_st)[1:3]

        # Lines 16-17: the momentum networks' P_SL (Eq. 4) rectifies P_ST into the labels Y (Eq. 1).
        view = parts.teacher_view(data, map_size)
        scores = self.head(view.features, momentum=True)
        labels, target_labels, hidden = self._targets(data, self_labeling_probabilities(scores, c.tau), p_st)
        visible = tf.cast(tf.logical_not(hidden), tf.float32)
        st_labels = tf.argmax(p_st, axis=-1, output_type=tf.int32)
        changed = tf.math.divide_no_nan(
            tf.reduce_sum(tf.cast(tf.not_equal(target_labels, st_labels), tf.float32) * visible),
            tf.reduce_sum(visible))

        # Lines 7-9: the normalised features of M sampled pixels per image.
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.iteration)])
        samples = parts.sampler(view, target_labels, step_seed) if c.use_self_labeling else None
        consistency_on_weak_view = c.lambda_reg > 0 and not c.strong_augmentation  # w/o Aug

        def source_pass():  # line 5: L^s_SEG (Eq. 3)
            loss = self._source_loss(data["source_image"], data["source_label"])
            return loss, {"loss_src": loss}

        def target_pass():  # line 18: L^t_SEG (Eq. 2) on the weak view
            weak_logits = resize_bilinear(self.student(data["target_image"], training=True)["logits"],
                                          map_size, self.align_corners)
            terms = {"loss_tgt": self._target_loss(weak_logits, labels)}
            if consistency_on_weak_view:
                terms["loss_reg"] = parts.consistency.on_weak_view(view, weak_logits, hidden)
                return terms["loss_tgt"] + c.lambda_reg * terms["loss_reg"], terms
            return terms["loss_tgt"], terms

        def self_labeling_pass():  # lines 10-14: Sinkhorn with the memory bank(s), L_SL (Eq. 5)
            loss, diagnostics = parts.assignment(samples, self._class_marginal())
            return c.lambda_sl * loss, {"loss_sl": loss, **diagnostics}

        def consistency_pass():  # L_REG on the strong view
            loss = parts.consistency(data, view, scores, hidden, map_size)
            return c.lambda_reg * loss, {"loss_reg": loss}

        passes = [source_pass, target_pass]
        if c.use_self_labeling:
            passes.append(self_labeling_pass)
        if c.lambda_reg > 0 and c.strong_augmentation:
            passes.append(consistency_pass)
        variables = self.trainable_for_step
        gradients, outputs = pass_by_pass_gradients(
            passes, variables, lambda loss: self.grouped.scale_loss(loss / tf.cast(replicas, tf.float32)))
        zero = tf.constant(0.0)
        terms = {"loss_sl": zero, "loss_reg": zero, **{name: zero for name in parts.assignment.diagnostics}}
        for result in outputs:
            terms.update(result)
        total = total_loss(terms, c.lambda_sl, c.lambda_reg)

        # Lines 15 and 19: the optimizer's step, then the EMA of f'_SL and f'_SEG if it changed the weights.
        when_applied(self.grouped.apply(gradients, variables), self._update_momentum_networks)
        values = {"loss": total, **terms, "rectified_changed": changed}
        if self._aligns_distribution():  # Eq. 11, image by image over the global batch
            per_image = gather_global_batch(image_class_distribution(target_labels, self.num_classes))
            self.delta_pseudo.assign(momentum_update(tf.convert_to_tensor(self.delta_pseudo), per_image,
                                                     c.alignment_momentum))
        delta = tf.convert_to_tensor(self.delta_pseudo)
        values["delta_shift"] = tf.reduce_sum(tf.abs(delta - self.delta_start))
        self.iteration.assign_add(1)
        return self._record(values)
