"""Pseudo-label rectification (paper Eq. 1) with the self-labeling head's probabilities (Eq. 4).

All maps are channels-last. ``full_to_weak`` brings a feature map of the un-augmented full image into the
frame of the weak crop the way the official ``full2weak`` does (``docs/official-code.md`` section 7.2).
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import resize_bilinear

__all__ = ["cosine_scores", "self_labeling_probabilities", "rectify", "full_to_weak"]


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


def self_labeling_probabilities(features, prototypes, tau: float = 0.08):
    """P_SL = softmax(f_SL(z) / tau) with the cosine classifier f_SL (Eq. 4).

    features (..., D) channels-last, prototypes (K, D) -> probabilities (..., K).
    """
    return tf.nn.softmax(cosine_scores(features, prototypes) / tau, axis=-1)


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


def _full_to_weak_single(feature_map, resized_size, crop_offset, crop_size, flip):
    resized = resize_bilinear(feature_map, resized_size // 4)
    crop = tf.slice(resized, tf.concat([crop_offset // 4, [0]], axis=0),
                    tf.concat([crop_size // 4, [-1]], axis=0))
    return tf.cond(flip, lambda: tf.reverse(crop, axis=[1]), lambda: crop)


def full_to_weak(feature_maps, resized_sizes, crop_boxes, flips):
    """Map full-image maps at 1/4 scale into the frame of each weak crop at 1/4 scale (official full2weak).

    Per image: align-corners bilinear resize of the (B, H/4, W/4, C) map to (floor(h/4), floor(w/4)) where
    (h, w) is the RandomSized size, crop rows floor(y1/4) .. + floor((y2-y1)/4) and columns
    floor(x1/4) .. + floor((x2-x1)/4), then flip horizontally if the weak view was flipped.

    Args:
        feature_maps: (B, H/4, W/4, C) float.
        resized_sizes: (B, 2) int, (h, w) of the RandomSized step in pixels.
        crop_boxes: (B, 4) int, (y1, y2, x1, x2) of the RandomCrop in pixels of the resized image; all
            crops must have the same size (the crop size of the pipeline).
        flips: (B,) bool, horizontal flip of the weak view.

    Returns:
        (B, crop_h/4, crop_w/4, C) maps in the weak-crop frame.
    """
    feature_maps = tf.convert_to_tensor(feature_maps)
    resized_sizes = tf.cast(resized_sizes, tf.int32)
    crop_boxes = tf.cast(crop_boxes, tf.int32)
    flips = tf.cast(flips, tf.bool)
    crop_offsets = tf.stack([crop_boxes[:, 0], crop_boxes[:, 2]], axis=1)
    crop_sizes = tf.stack([crop_boxes[:, 1] - crop_boxes[:, 0], crop_boxes[:, 3] - crop_boxes[:, 2]], axis=1)
    tf.debugging.assert_equal(crop_sizes, tf.broadcast_to(crop_sizes[:1], tf.shape(crop_sizes)),
                              message="full_to_weak: crop boxes (y1, y2, x1, x2) differ in size")
    crop_size = crop_sizes[0]
    return tf.map_fn(
        lambda args: _full_to_weak_single(args[0], args[1], args[2], crop_size, args[3]),
        (feature_maps, resized_sizes, crop_offsets, flips),
        fn_output_signature=tf.TensorSpec([None, None, feature_maps.shape[-1]], feature_maps.dtype))
