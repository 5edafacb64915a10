"""Preset ``official``: the public CPSL code's step where it departs from the paper (docs/official-code.md
sections 0, 8, 14).

* The momentum network runs in **training mode** (batch statistics, active dropout) on the
  **un-augmented full target image**; its features are mapped into the weak crop (``full2weak``) for P_SL.
* r is the **fixed** class distribution of Eq. 10 (no Eq. 11).
* L_SL: **uniform sampling** of M pixels (one permutation shared by the batch) from the full-image map,
  **two banks** (L2-normalised features scored against the un-normalised W, and L2-normalised logits),
  the two Sinkhorn targets summed (``official_sl.official_two_bank_sl_loss``).
* Target loss 0.1 CE + 1.0 RCE; **CutMix** of a source box (the pipeline pastes the image, here the source
  labels are pasted into the rectified labels at 1/4 scale).
* L_REG: **one-way** KL from the teacher's prototype distribution (cosine to W' / tau in the weak frame,
  replayed into the strong frame) to the student's prototype distribution of its strong-view features.

Where the official code has plain bugs, the correct behaviour is implemented (each documented in README):
the strong-view replay uses the true geometry (the official TranslateX replay shifts by W/H too far), and
the supervised contrastive term (weight 0.001, whose labels are misaligned with its features in the
official code, so it trains on noise) is left out.

As in the official code (one process), the two banks take each image's samples one after the other. Under
``tf.distribute`` the samples of the global batch are gathered first, so every replica runs the same
sequence as one device would, and the pixel means are over the global batch (as in the paper preset).
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.cpsl.losses import official_prototype_consistency
from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.model import CPSLModel, gather_global_batch, global_mean_share
from cpsl_tf.cpsl.official_sl import official_two_bank_sl_loss, uniform_official_samples
from cpsl_tf.cpsl.rectify import cosine_scores, rectify
from cpsl_tf.data.cutmix import paste_box
from cpsl_tf.data.replay import replay_to_strong
from cpsl_tf.data.views import weak_soft_map
from cpsl_tf.gradients import pass_by_pass_gradients
from cpsl_tf.resize import resize_nearest


class OfficialCPSLModel(CPSLModel):
    """CPSLModel with the official code's step (see the module docstring)."""

    METRIC_NAMES = ("loss", "loss_src", "loss_tgt", "loss_sl", "loss_reg", "rectified_changed", "head_travel")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logit_bank = MemoryBank(max(self.cpsl.bank_size, 1), self.num_classes, name="logit_bank")

    def _full_to_weak(self, full_maps, weak_params, crop_size, stride):
        """Each image's full-image map into its weak crop frame at crop / stride (official full2weak)."""
        def one(args):
            feature_map, scaled, box, flip = args
            params = {"scaled_size": scaled, "crop_box": box, "flip": flip}
            return weak_soft_map(feature_map, params, crop_size, stride)

        return tf.map_fn(one, (full_maps, weak_params["scaled_size"], weak_params["crop_box"],
                               weak_params["flip"]), fn_output_signature=tf.float32)

    def train_step(self, data):
        c = self.cpsl
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        source, source_labels = data["source_image"], data["source_label"]
        weak, strong = data["target_image"], data["target_strong"]
        p_st = tf.cast(data["target_soft"], tf.float32)
        map_size = tf.shape(p_st)[1:3]
        crop_size = weak.shape[1:3]
        stride = crop_size[0] // p_st.shape[1]

        teacher = self.teacher(data["target_full"], training=True)
        full_features, full_logits = teacher["features"], teacher["logits"]
        weak_features = self._full_to_weak(full_features, data["weak_params"], crop_size, stride)
        teacher_scores = cosine_scores(weak_features, tf.convert_to_tensor(self.head.momentum_prototypes))
        p_sl = tf.nn.softmax(teacher_scores / c.tau, axis=-1)
        labels = rectify(p_sl, p_st, c.rectify_threshold)
        changed = tf.reduce_mean(tf.cast(
            tf.not_equal(labels, tf.argmax(p_st, axis=-1, output_type=tf.int32)), tf.float32))
        source_quarter = tf.cast(resize_nearest(source_labels[..., tf.newaxis], map_size)[..., 0], tf.int32)
        labels = paste_box(labels, source_quarter, data["cutmix_box"], scale=stride)

        pixels = tf.shape(full_features)[1] * tf.shape(full_features)[2]
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.iteration)])
        permutation = tf.math.top_k(tf.random.stateless_uniform([pixels], seed), k=c.pixels_per_image,
                                    sorted=False).indices
        feature_samples, logit_samples = uniform_official_samples(full_features, full_logits, permutation,
                                                                  c.pixels_per_image)
        feature_samples = gather_global_batch(feature_samples)
        logit_samples = gather_global_batch(logit_samples)
        def weak_pass():
            weak_logits = self._resize(self.student(weak, training=True)["logits"], map_size)
            loss = self._target_loss(weak_logits, labels)
            return loss, {"loss_tgt": loss}

        def self_labeling_pass():
            loss, _ = official_two_bank_sl_loss(
                feature_samples, logit_samples, self.head.prototypes, self.bank, self.logit_bank,
                self.delta_start, c.tau, c.epsilon, c.sinkhorn_iterations)
            return c.lambda_sl * loss, {"loss_sl": loss}

        def strong_pass():
            replayed, valid = replay_to_strong(teacher_scores, data["strong_params"])
            teacher_probs = tf.nn.softmax(replayed / c.tau, axis=-1)
            mask = tf.broadcast_to(valid[..., tf.newaxis], tf.shape(teacher_probs))
            student_features = self.student(strong, training=True)["features"]
            loss = official_prototype_consistency(
                teacher_probs, mask, student_features, tf.convert_to_tensor(self.head.momentum_prototypes),
                c.tau) * global_mean_share(tf.reduce_sum(tf.cast(mask, tf.float32)))
            return c.lambda_reg * loss, {"loss_reg": loss}

        variables = self.trainable_for_step
        passes = (lambda: self._source_pass(source, source_labels), weak_pass, self_labeling_pass,
                  strong_pass)
        gradients, outputs = pass_by_pass_gradients(
            passes, variables, lambda loss: self.grouped.scale_loss(loss / tf.cast(replicas, tf.float32)))
        terms = {key: value for result in outputs for key, value in result.items()}
        total = (terms["loss_src"] + terms["loss_tgt"] + c.lambda_sl * terms["loss_sl"]
                 + c.lambda_reg * terms["loss_reg"])
        applied = self.grouped.apply(gradients, variables)
        self._update_momentum_networks(applied)
        self.iteration.assign_add(1)

        values = {"loss": total, **terms, "rectified_changed": changed}
        return self._record(values)
