"""The official code's self-labeling loss with two memory banks (preset ``official``; docs/official-code.md
sections 4, 5, 8 step 9 and 14.2-14.3).

Where it departs from the paper's single-bank L_SL (Eq. 5 with Sinkhorn Eq. 6 on bank + current samples):

* pixels are sampled uniformly: one permutation of the positions of the full-image EMA map, shared by
  all images of the batch, its first M entries used (no class-balanced sampling);
* two banks: bank A of L2-normalised EMA features, scored against the **un-normalised** prototypes, and
  bank B of L2-normalised EMA logits used directly as Sinkhorn scores; both targets are trained against
  the same log_softmax(cos(f, W) / tau) and the two losses are summed;
* images are processed one after the other: image i is enqueued before image i+1 is scored, so image i
  sees images 0..i-1 of its batch in the banks; the bank rows enter Sinkhorn only once the bank is full.
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.cpsl.assignment import online_assignment
from cpsl_tf.cpsl.losses import self_labeling_loss
from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.rectify import cosine_scores

__all__ = ["uniform_official_samples", "official_two_bank_sl_loss"]


def uniform_official_samples(feature_map, logit_map, permutation, pixels_per_image: int):
    """Uniform sampling of the official code: the first M positions of one permutation shared by the batch.

    feature_map (B, H, W, D) and logit_map (B, H, W, K) are the EMA network's maps of the full image;
    permutation (>= M,) indexes the H*W raster positions. Returns L2-normalised features (B, M, D) and
    L2-normalised logits (B, M, K).
    """
    feature_map = tf.convert_to_tensor(feature_map)
    logit_map = tf.convert_to_tensor(logit_map)
    positions = tf.cast(permutation, tf.int32)[:pixels_per_image]
    batch = tf.shape(feature_map)[0]
    flat_features = tf.reshape(feature_map, [batch, -1, feature_map.shape[-1]])
    flat_logits = tf.reshape(logit_map, [batch, -1, logit_map.shape[-1]])
    features = tf.gather(flat_features, positions, axis=1)
    logits = tf.gather(flat_logits, positions, axis=1)
    return (tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1, epsilon=1e-24),
            tf.math.l2_normalize(tf.cast(logits, tf.float32), axis=-1, epsilon=1e-24))


def official_two_bank_sl_loss(feature_samples, logit_samples, prototypes, feature_bank: MemoryBank,
                              logit_bank: MemoryBank, class_marginal, tau: float = 0.08,
                              epsilon: float = 0.05, iterations: int = 3, log_domain: bool = False):
    """The official L_SL (adaptation_modelv2.py:258-298): sum over both banks, mean over images.

    Args:
        feature_samples: (B, M, D) L2-normalised EMA features of the sampled pixels.
        logit_samples: (B, M, K) L2-normalised EMA logits of the same pixels.
        prototypes: (K, D) the self-labeling head's weights W (the gradient flows to them only).
        feature_bank, logit_bank: banks A (width D) and B (width K); both are updated (M rows per image).
        class_marginal: (K,) the fixed class distribution r.
        log_domain: Sinkhorn in the log domain (``cpsl.sinkhorn_log_domain``; the official code's is not).

    Returns:
        (total, logit_bank_part): the summed loss and its bank-B part, both means over the B images.
    """
    feature_samples = tf.convert_to_tensor(feature_samples)
    logit_samples = tf.convert_to_tensor(logit_samples)
    batch = feature_samples.shape[0]
    if batch is None:
        raise ValueError("official_two_bank_sl_loss: the batch size must be static (images are processed "
                         "one after the other)")
    prototypes = tf.convert_to_tensor(prototypes)
    raw_prototypes = tf.stop_gradient(tf.cast(prototypes, tf.float32))
    feature_part, logit_part = 0.0, 0.0
    for image in range(batch):
        features, logits = feature_samples[image], logit_samples[image]
        scores = cosine_scores(features, prototypes)
        # Bank A rows are scored against the un-normalised W (official line 267), current rows against W/|W|.
        targets_a = online_assignment(tf.stop_gradient(scores), feature_bank,
                                       lambda bank: tf.linalg.matmul(bank, raw_prototypes, transpose_b=True),
                                       class_marginal, epsilon, iterations, log_domain)
        feature_bank.enqueue(features)
        targets_b = online_assignment(logits, logit_bank, lambda bank: bank, class_marginal, epsilon,
                                       iterations, log_domain)
        logit_bank.enqueue(logits)
        feature_part += self_labeling_loss(targets_a, scores, tau)
        logit_part += self_labeling_loss(targets_b, scores, tau)
    return (feature_part + logit_part) / batch, logit_part / batch
