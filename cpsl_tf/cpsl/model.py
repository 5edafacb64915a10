"""CPSLModel: one adaptation step of paper Algorithm 1 (lines 3-22) as ``keras.Model.train_step``.

Per iteration, for a batch of source crops and target weak/strong crops with their stored P_ST:

1. L^s_SEG, source cross-entropy at crop resolution (Eq. 3).
2. The momentum network f'_SEG on the weak target crop; its features, L2-normalised, at the target
   map resolution (crop / 4, the loss resolution of the official code).
3. P_SL from the momentum head f'_SL (Eq. 4) and the rectified labels Y = argmax(P_SL * P_ST) (Eq. 1).
4. Class-balanced sampling of M pixels per image from Y (Eq. 8-9).
5. Sinkhorn (Eq. 6) over memory bank + current samples, r = delta_pseudo (Eq. 12); L_SL on the current
   rows only (Eq. 5) trains f_SL.
6. L^t_SEG of the network's weak-view logits against Y (Eq. 2); L_REG, the symmetric KL between the
   momentum network's weak prediction replayed into the strong frame and the network's strong-view
   prediction (Eq. 13), over valid pixels.
7. Total loss Eq. 14; SGD with the paper's learning-rate groups; EMA updates of f'_SEG and f'_SL; the
   bank takes the samples of the global batch; delta_pseudo follows Eq. 11.

The ablations of paper Table 3 are switches of :class:`cpsl_tf.config.CPSLConfig`.
Distribution (``tf.distribute`` Mirrored / MultiWorkerMirrored; build the models inside ``strategy.scope()``):
one step on R replicas equals one step on one device over the same global batch.

* Samples: every image draws its pixels with a seed folded from its index in the global batch; every
  replica all-gathers the samples and the per-image class distributions of the global batch, so the
  Sinkhorn input, the bank update and delta_pseudo are identical on every replica (the bank and
  delta_pseudo variables use ``only_first_replica`` aggregation besides).
* Losses: each masked mean (CE, RCE, consistency over valid pixels) is multiplied by
  :func:`global_mean_share` of its pixel count, so the mean over replicas is the mean over the global batch
  even when replicas hold different numbers of valid pixels. The total is divided by R before the
  gradient because the optimizer sums gradients across replicas. The trackers receive these shared
  terms, and Keras' ``fit`` averages the per-replica metric results, so the logged losses are the global ones.
* EMA: the networks' weights are mirrored and the gradients all-reduced, so every replica holds the same
  f_SEG and W after the optimizer; each replica then writes the same EMA value into its copy of f'_SEG
  and W' (teacher variables take per-replica writes; W' is ``only_first_replica``), and BN statistics are
  copied from the student's, which Keras keeps mean-aggregated.
* BatchNorm computes per-replica statistics unless the layers are synchronised
  (``train.sync_batch_norm``, :func:`cpsl_tf.training.strategy.synchronize_batch_norm`); only then is the
  step identical to the one-device step.

Gradient accumulation (``train.gradient_accumulation_steps`` = k, :mod:`cpsl_tf.training.optim`): each
``train_step`` is one micro-batch. The optimizer applies the mean gradient every k-th call and the EMA of
f'_SEG / f'_SL follows only then (per optimizer step). The memory bank, delta_pseudo (Eq. 11 is applied
image by image, so the sequence of updates is the full batch's) and the sampling iteration advance per
micro-batch: a later micro-batch's Sinkhorn sees the samples of the earlier ones in the bank, where the
full batch would see them as current rows. BatchNorm batch statistics are per micro-batch.

Mixed precision (``train.mixed_precision``): the networks compute in float16/bfloat16 and return float32
logits and features; the head, Sinkhorn, the bank and every loss run in float32. For float16 the loss is
scaled by :meth:`cpsl_tf.training.optim.GroupedSGD.scale_loss`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from cpsl_tf.config import CPSLConfig
from cpsl_tf.cpsl.assignment import online_assignment_with_marginal
from cpsl_tf.cpsl.distribution import image_class_distribution, momentum_update
from cpsl_tf.cpsl.head import SelfLabelingHead
from cpsl_tf.cpsl.losses import (
    reverse_cross_entropy,
    segmentation_cross_entropy,
    self_labeling_loss,
    symmetric_kl_consistency,
)
from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.rectify import rectify
from cpsl_tf.cpsl.sampling import class_balanced_sample_indices, uniform_sample_indices
from cpsl_tf.data.cutmix import box_mask
from cpsl_tf.data.replay import replay_to_strong
from cpsl_tf.gradients import pass_by_pass_gradients
from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import resize_bilinear, resize_nearest

if TYPE_CHECKING:
    from cpsl_tf.training.optim import GroupedSGD


def gather_global_batch(x):
    """Every replica's ``x`` concatenated along the batch axis in replica order (``x`` on one device)."""
    context = tf.distribute.get_replica_context()
    gathered = context.all_gather(x, axis=0)
    if x.shape[0] is not None:  # all_gather forgets the static batch size
        gathered = tf.ensure_shape(gathered, [x.shape[0] * context.num_replicas_in_sync, *x.shape[1:]])
    return gathered


def global_mean_share(count):
    """``replicas * count / (sum of count over replicas)``: a replica's mean over its ``count`` pixels times
    this share, averaged over the replicas, is the mean over every pixel of the global batch (1 on one
    device)."""
    context = tf.distribute.get_replica_context()
    count = tf.cast(count, tf.float32)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.math.divide_no_nan(count * context.num_replicas_in_sync, total)


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


def valid_pixel_count(labels):
    """Pixels whose label is not the ignore index."""
    return tf.reduce_sum(tf.cast(tf.not_equal(tf.cast(labels, tf.int32), IGNORE_INDEX), tf.float32))


class CPSLModel(keras.Model):
    """The network f_SEG, its momentum copy f'_SEG, the self-labeling head f_SL (+ f'_SL), the memory bank
    and delta_pseudo, trained by :meth:`train_step`."""

    METRIC_NAMES = ("loss", "loss_src", "loss_tgt", "loss_sl", "loss_reg", "rectified_changed", "q_entropy",
                    "q_marginal_gap", "delta_shift", "head_travel")
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
        self.trackers = {name: Latest(name) if name in self.STATE_METRICS else keras.metrics.Mean(name=name)
                         for name in self.METRIC_NAMES}
        # Every sub-network is built; without this, fit under a strategy would try a symbolic build by
        # calling the model on the training-data dict.
        self.built = True

    def use_optimizer(self, optimizer: GroupedSGD) -> None:
        """Set the grouped SGD (built on :attr:`trainable_for_step`) that :meth:`train_step` applies."""
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

    def _resize(self, x, size):
        return resize_bilinear(x, size, self.align_corners)

    def _class_marginal(self):
        """r of Eq. 12: delta_pseudo (for ``cpsl.marginal=ground_truth`` it holds the fixed ground-truth
        distribution it was started from), or the uniform distribution for equal partition."""
        if self.cpsl.equal_partition or not self.cpsl.class_balanced:
            return tf.fill([self.num_classes], 1.0 / self.num_classes)
        return tf.convert_to_tensor(self.delta_pseudo)

    def _sample(self, labels, features):
        """M normalised features per image: Eq. 8-9 class-balanced, or uniform (``w/o CB``).

        Each image draws with its own seed, folded from its index in the global batch, so the samples do not
        depend on how the global batch is split across replicas."""
        batch = tf.shape(labels)[0]
        flat_labels = tf.reshape(labels, [batch, -1])
        step_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.iteration)])
        first = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int32) * batch
        m = self.cpsl.pixels_per_image

        def indices_of(args):
            index, image_labels = args
            seed = tf.random.experimental.stateless_fold_in(step_seed, first + index)
            if self.cpsl.class_balanced:
                return class_balanced_sample_indices(image_labels[tf.newaxis], m, self.num_classes, seed)[0]
            return uniform_sample_indices(tf.shape(image_labels)[0], m, seed)

        indices = tf.map_fn(indices_of, (tf.range(batch), flat_labels),
                            fn_output_signature=tf.TensorSpec([m], tf.int32))
        flat_features = tf.reshape(features, [batch, -1, features.shape[-1]])
        return tf.reshape(tf.gather(flat_features, indices, batch_dims=1), [-1, features.shape[-1]])

    def _self_labeling(self, samples):
        """L_SL (Eq. 5) of this replica's samples, Q_cur from Sinkhorn (Eq. 6) over the global batch's samples
        and, once it is full, the memory bank (as the official code: a bank that grows every step would
        change the Sinkhorn shape, and so recompile it, at every step until it is full)."""
        everyone = gather_global_batch(samples)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        local = tf.shape(samples)[0]
        r = self._class_marginal()
        q_everyone, q_marginal = online_assignment_with_marginal(
            self.head(everyone), self.bank, self.head, r, self.cpsl.epsilon, self.cpsl.sinkhorn_iterations,
            self.cpsl.sinkhorn_log_domain)
        start = tf.cast(replica, tf.int32) * local
        q_current = q_everyone[start:start + local]
        loss = self_labeling_loss(q_current, self.head(samples), self.cpsl.tau)
        entropy = -tf.reduce_mean(tf.reduce_sum(tf.math.xlogy(q_current, q_current), axis=-1))
        diagnostics = {"q_entropy": entropy, "q_marginal_gap": 0.5 * tf.reduce_sum(tf.abs(q_marginal - r))}
        return loss, diagnostics, everyone

    def _source_loss(self, source, source_labels):
        """The student's source cross-entropy (Eq. 3), weighted so that the replicas' means add up to the mean
        over the global batch."""
        logits = self._resize(self.student(source, training=True)["logits"], tf.shape(source)[1:3])
        return segmentation_cross_entropy(logits, source_labels) * global_mean_share(
            valid_pixel_count(source_labels))

    def _source_pass(self, source, source_labels):
        """The source forward pass of a step: (its loss, its named terms)."""
        loss = self._source_loss(source, source_labels)
        return loss, {"loss_src": loss}

    def _target_loss(self, logits, labels):
        """The target loss on the rectified labels (Eq. 2; 0.1 CE + RCE for ``ce+rce``), weighted as
        :meth:`_source_loss`."""
        if self.cpsl.target_loss == "ce+rce":
            loss = 0.1 * segmentation_cross_entropy(logits, labels) + reverse_cross_entropy(logits, labels)
        else:
            loss = segmentation_cross_entropy(logits, labels)
        return loss * global_mean_share(valid_pixel_count(labels))

    def _update_momentum_networks(self, applied=None):
        """EMA of f'_SEG and f'_SL towards f_SEG and f_SL; with ``applied`` (a boolean tensor from the
        optimizer) only when the optimizer changed the weights, i.e. once per optimizer step under gradient
        accumulation, and not after a step skipped by loss scaling."""
        if applied is not None and (self.grouped.accumulation_steps > 1 or self.grouped.loss_scaling):
            tf.cond(applied, lambda: self._update_momentum_networks() or tf.constant(True),
                    lambda: tf.constant(False))
            return
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
        takes the source labels there (nearest-resized, the official paste-then-downsample), and the box is
        left out of everything that describes the target (sampling, Eq. 11, the changed share, L_REG).

        Returns (labels for the target loss, target-only labels with the box ignored, box mask (B, h, w)).
        """
        c = self.cpsl
        if c.use_self_labeling and c.use_self_training:
            rectified = rectify(p_sl, p_st, c.rectify_threshold)
        elif c.use_self_labeling:  # w/o ST: the cluster assignment alone
            rectified = rectify(p_sl, tf.ones_like(p_sl), c.rectify_threshold)
        else:  # w/o SL: plain self-training on the stored pseudo labels
            rectified = rectify(tf.ones_like(p_st), p_st, c.rectify_threshold)
        box = data.get("cutmix_box")
        if box is None:
            return rectified, rectified, tf.zeros(tf.shape(rectified), tf.bool)
        map_size = tf.shape(p_st)[1:3]
        stride = data["target_image"].shape[1] // p_st.shape[1]
        in_box = box_mask(box, map_size[0], map_size[1], scale=stride)
        target_labels = tf.where(in_box, IGNORE_INDEX, rectified)
        source_labels = resize_nearest(tf.cast(data["source_label"], tf.int32)[..., tf.newaxis], map_size)
        return tf.where(in_box, source_labels[..., 0], rectified), target_labels, in_box

    # ----------------------------------------------------------------------------------------------

    def train_step(self, data):
        c = self.cpsl
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        source, source_labels = data["source_image"], data["source_label"]
        weak, strong = data["target_image"], data["target_strong"]
        p_st = tf.cast(data["target_soft"], tf.float32)
        map_size = tf.shape(p_st)[1:3]

        teacher = self.teacher(weak, training=False)
        teacher_logits = self._resize(teacher["logits"], map_size)
        teacher_features = tf.math.l2_normalize(self._resize(teacher["features"], map_size), axis=-1)
        p_sl = tf.nn.softmax(self.head(teacher_features, momentum=True) / c.tau, axis=-1)
        st_labels = tf.argmax(p_st, axis=-1, output_type=tf.int32)
        labels, target_labels, in_box = self._targets(data, p_sl, p_st)
        outside = tf.cast(tf.logical_not(in_box), tf.float32)
        changed = tf.math.divide_no_nan(
            tf.reduce_sum(tf.cast(tf.not_equal(target_labels, st_labels), tf.float32) * outside),
            tf.reduce_sum(outside))

        samples = self._sample(target_labels, teacher_features) if c.use_self_labeling else None

        def weak_pass():
            weak_logits = self._resize(self.student(weak, training=True)["logits"], map_size)
            terms = {"loss_tgt": self._target_loss(weak_logits, labels)}
            if c.lambda_reg > 0 and not c.strong_augmentation:  # w/o Aug: the two networks on the weak view
                valid = tf.logical_not(in_box)
                terms["loss_reg"] = symmetric_kl_consistency(teacher_logits, weak_logits, valid) * (
                    global_mean_share(tf.reduce_sum(tf.cast(valid, tf.float32))))
                return terms["loss_tgt"] + c.lambda_reg * terms["loss_reg"], terms
            return terms["loss_tgt"], terms

        def self_labeling_pass():
            loss, assignment, gathered = self._self_labeling(samples)
            return c.lambda_sl * loss, {"loss_sl": loss, "gathered": gathered, **assignment}

        def strong_pass():
            box_channel = tf.cast(in_box, tf.float32)[..., tf.newaxis]
            replayed, valid = replay_to_strong(tf.concat([teacher_logits, box_channel], axis=-1),
                                               data["strong_params"])
            valid = valid & (replayed[..., -1] < 0.5)
            strong_logits = self._resize(self.student(strong, training=True)["logits"], map_size)
            loss = symmetric_kl_consistency(replayed[..., :-1], strong_logits, valid) * global_mean_share(
                tf.reduce_sum(tf.cast(valid, tf.float32)))
            return c.lambda_reg * loss, {"loss_reg": loss}

        passes = [lambda: self._source_pass(source, source_labels), weak_pass]
        if c.use_self_labeling:
            passes.append(self_labeling_pass)
        if c.lambda_reg > 0 and c.strong_augmentation:
            passes.append(strong_pass)
        variables = self.trainable_for_step
        gradients, outputs = pass_by_pass_gradients(
            passes, variables, lambda loss: self.grouped.scale_loss(loss / tf.cast(replicas, tf.float32)))
        zero = tf.constant(0.0)
        terms = {"loss_sl": zero, "loss_reg": zero, "q_entropy": zero, "q_marginal_gap": zero}
        for result in outputs:
            terms.update(result)
        gathered = terms.pop("gathered", None)
        total = (terms["loss_src"] + terms["loss_tgt"] + c.lambda_sl * terms["loss_sl"]
                 + c.lambda_reg * terms["loss_reg"])
        applied = self.grouped.apply(gradients, variables)
        self._update_momentum_networks(applied)

        if c.use_self_labeling and c.bank_size > 0:
            self.bank.enqueue(gathered)
        if (c.use_self_labeling and c.class_balanced and not c.equal_partition and c.marginal == "pseudo"
                and c.alignment_momentum < 1):
            per_image = gather_global_batch(image_class_distribution(target_labels, self.num_classes))
            self.delta_pseudo.assign(momentum_update(tf.convert_to_tensor(self.delta_pseudo), per_image,
                                                     c.alignment_momentum))
        self.iteration.assign_add(1)

        shift = tf.reduce_sum(tf.abs(tf.convert_to_tensor(self.delta_pseudo) - self.delta_start))
        values = {"loss": total, **terms, "rectified_changed": changed, "delta_shift": shift}
        return self._record(values)
