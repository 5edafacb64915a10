"""Pseudo-label rectification (paper Eq. 1) with the self-labeling head's probabilities (Eq. 4).

All maps are channels-last. (The official ``full2weak``, which brings the momentum network's map of the
full image into the weak crop for the ``official`` preset, is :func:`cpsl_tf.data.views.full_to_weak`;
``docs/official-code.md`` section 7.2.)
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.labels import IGNORE_INDEX

__all__ = ["cosine_scores", "self_labeling_probabilities", "rectify"]


def cosine_scores(features, prototypes):
    """The cosine classifier without bias f_SL(z) = <z/|z|, W_c/|W_c|> used in Eq. 4.

    features (..., D), prototypes (K, D) -> (..., K) in the features' dtype.
    """
    features = tf.convert_to_tensor(features)
    prototypes = tf.cast(prototypes, features.dtype)
    if features.shape[-1] is not None and prototypes.shape[-1] is not None \
            and features.shape[-1] != prototypes.shape[-1]:
        raise ValueError(f"cosine_scores: features have D={features.shape[-1]} channels but prototypes are "
                         f"{prototypes.shape}; expected (K, D)")
    unit_features = tf.math.l2_normalize(features, axis=-1, epsilon=1e-24)
    unit_prototypes = tf.math.l2_normalize(prototypes, axis=-1, epsilon=1e-24)
    return tf.einsum("...d,kd->...k", unit_features, unit_prototypes)


def self_labeling_probabilities(scores, tau: float = 0.08):
    """P_SL = softmax(f_SL(z) / tau) (Eq. 4) from the cosine scores f_SL(z) (..., K) of :func:`cosine_scores`
    (the momentum head f'_SL in the training step)."""
    return tf.nn.softmax(scores / tau, axis=-1)


def rectify(p_sl, p_st, threshold: float = 0.0, ignore_index: int = IGNORE_INDEX):
    """Rectified hard pseudo labels Y = argmax_c(P_SL * P_ST) (Eq. 1).

    Args:
        p_sl: (..., K) self-labeling probabilities (Eq. 4).
        p_st: (..., K) stored soft pseudo labels of the warm-up model, in the same frame.
        threshold: where the product renormalised over the classes has its maximum below this value the
            label becomes ``ignore_index`` (the official ``train_thred``; 0 keeps every pixel).
        ignore_index: label of ignored pixels.

    Returns:
        int32 labels of shape (...).
    """
    p_sl = tf.convert_to_tensor(p_sl)
    p_st = tf.cast(p_st, p_sl.dtype)
    if p_sl.shape.is_fully_defined() and p_st.shape.is_fully_defined() and p_sl.shape != p_st.shape:
        raise ValueError(f"rectify: p_sl {p_sl.shape} and p_st {p_st.shape} must have the same shape")
    product = tf.cast(p_sl, tf.float32) * tf.cast(p_st, tf.float32)
    labels = tf.argmax(product, axis=-1, output_type=tf.int32)
    if not isinstance(threshold, (int, float)) or threshold > 0.0:  # a tensor threshold is always applied
        confidence = tf.reduce_max(product, axis=-1) / tf.reduce_sum(product, axis=-1)
        labels = tf.where(confidence < threshold, tf.constant(ignore_index, tf.int32), labels)
    return labels
