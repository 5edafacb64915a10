"""Loss terms of CPSL (paper Eq. 2, 3, 5, 13) and of the official code (RCE, cosine consistency, KD).

Channels-last: logits and probability maps are (..., K), label maps (...). All reductions are done in
float32 whatever the input dtype (mixed precision).
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.cpsl.rectify import cosine_scores
from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import resize_bilinear

__all__ = [
    "segmentation_cross_entropy",
    "reverse_cross_entropy",
    "self_labeling_loss",
    "symmetric_kl_consistency",
    "masked_kl_consistency",
    "official_prototype_consistency",
    "distillation_kl",
]


def _valid_and_labels(labels, ignore_index: int):
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_index)
    return valid, tf.where(valid, labels, tf.zeros_like(labels))


def _masked_mean(values, valid):
    valid = tf.cast(valid, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * valid), tf.reduce_sum(valid))


def segmentation_cross_entropy(logits, labels, ignore_index: int = IGNORE_INDEX):
    """Pixel-wise cross-entropy with hard labels, source Eq. 3 and target Eq. 2.

    Averaged over the pixels whose label is not ``ignore_index`` (0 when there are none), as PyTorch's
    ``cross_entropy(ignore_index=...)`` with mean reduction. logits (..., K), labels (...).
    """
    valid, safe_labels = _valid_and_labels(labels, ignore_index)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels,
                                                               logits=tf.cast(logits, tf.float32))
    return _masked_mean(per_pixel, valid)


def reverse_cross_entropy(logits, labels, ignore_index: int = IGNORE_INDEX):
    """Reverse cross-entropy of symmetric CE as coded officially (docs/official-code.md section 8 step 8).

    mean over valid pixels of -sum_k clamp(p_k, 1e-7, 1) * log clamp(onehot_k, 1e-4, 1)
    = -log(1e-4) * sum_{k != y} clamp(p_k, 1e-7, 1)  (-log 1e-4 = 9.2103).
    """
    valid, safe_labels = _valid_and_labels(labels, ignore_index)
    probabilities = tf.clip_by_value(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), 1e-7, 1.0)
    num_classes = tf.shape(probabilities)[-1]
    log_clamped_onehot = tf.math.log(tf.clip_by_value(tf.one_hot(safe_labels, num_classes), 1e-4, 1.0))
    per_pixel = -tf.reduce_sum(probabilities * log_clamped_onehot, axis=-1)
    return _masked_mean(per_pixel, valid)


def self_labeling_loss(targets, scores, tau: float = 0.08):
    """L_SL = -1/M sum_m sum_c q_m^(c) log p_m^(c) with p = softmax(scores / tau) (Eq. 5, p from Eq. 4).

    targets: (M, K) Sinkhorn assignment Q_cur of the current samples (treated as constants).
    scores: (M, K) cosine scores f_SL(z) of the same samples.
    """
    targets = tf.stop_gradient(tf.cast(targets, tf.float32))
    log_p = tf.nn.log_softmax(tf.cast(scores, tf.float32) / tau, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(targets * log_p, axis=-1))


def _kl(log_p, log_q):
    """sum_k p_k (log p_k - log q_k) from log-probabilities, (..., K) -> (...)."""
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def symmetric_kl_consistency(weak_logits, strong_logits, valid_mask=None):
    """L_REG = KL(P_w || P_s) + KL(P_s || P_w) per pixel (Eq. 13), averaged over valid pixels and classes.

    weak_logits: (..., K) of the weak view through the momentum network (no gradient is taken through it).
    strong_logits: (..., K) of the strong view through the network, pixel-aligned with the weak map.
    valid_mask: (...) bool, False outside the replayed image or inside the cutout; None = all valid.
    The paper sums over pixels. The mean over pixels and over the K classes is the reduction of the
    official code's masked consistency (its mask covers all K channels), under which lambda_2 = 5 was tuned:
    with the per-pixel sum over classes the term is K times larger and swamps the segmentation losses.
    """
    log_w = tf.stop_gradient(tf.nn.log_softmax(tf.cast(weak_logits, tf.float32), axis=-1))
    log_s = tf.nn.log_softmax(tf.cast(strong_logits, tf.float32), axis=-1)
    num_classes = tf.cast(tf.shape(log_s)[-1], tf.float32)
    per_pixel = (_kl(log_w, log_s) + _kl(log_s, log_w)) / num_classes
    if valid_mask is None:
        return tf.reduce_mean(per_pixel)
    return _masked_mean(per_pixel, valid_mask)


def masked_kl_consistency(teacher, student_log_probs, mask):
    """The official one-way consistency sum(mask * t * (log t - log s)) / sum(mask)
    (docs/official-code.md section 8.11).

    teacher: (..., K) probabilities; student_log_probs: (..., K); mask: (..., K) element mask (the official
    mask covers all K channels, so this is the per-pixel KL over K times the number of valid pixels).
    """
    teacher = tf.cast(teacher, tf.float32)
    mask = tf.cast(mask, tf.float32)
    elementwise = tf.math.xlogy(teacher, teacher) - teacher * tf.cast(student_log_probs, tf.float32)
    elementwise = tf.where(mask > 0, elementwise, tf.zeros_like(elementwise))
    return tf.math.divide_no_nan(tf.reduce_sum(mask * elementwise), tf.reduce_sum(mask))


def official_prototype_consistency(teacher, mask, student_features, prototypes, tau: float = 0.08):
    """The official L_REG: teacher prototype distribution vs the student's, on the student's features.

    student_features (B, h, w, D) are resized (align corners) to the teacher's (B, H, W) size, scored by
    cosine against the (EMA) prototypes and turned into log_softmax(cos / tau); then masked_kl_consistency.
    """
    size = tf.shape(teacher)[1:3]
    student = resize_bilinear(student_features, size)
    log_student = tf.nn.log_softmax(tf.cast(cosine_scores(student, prototypes), tf.float32) / tau, axis=-1)
    return masked_kl_consistency(teacher, log_student, mask)


def distillation_kl(student_logits, teacher_logits):
    """Knowledge-distillation KL(P_teacher || P_student) (self-distillation rounds, docs/official-code.md
    section 1.5).

    Reduced as F.kl_div's default 'mean' (over all pixels and classes) so the official weight 1.0 keeps
    its scale; unlike the official code it is given log-probabilities, i.e. the actual KL divergence.
    """
    log_s = tf.nn.log_softmax(tf.cast(student_logits, tf.float32), axis=-1)
    log_t = tf.stop_gradient(tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32), axis=-1))
    return tf.reduce_mean(tf.exp(log_t) * (log_t - log_s))
