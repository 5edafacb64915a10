"""Online cluster assignment with a memory bank (paper section 3.2, "Online Cluster Assignment").

Q_aug is computed by Sinkhorn (Eq. 6, marginals Eq. 12) over the bank rows and the current samples, and
only the current rows Q_cur are returned, for L_SL (Eq. 5). The bank rows enter once the bank is full, as
in the official code: a bank that grows step by step would give Sinkhorn a new input shape (and XLA a new
compilation) at every step until it is full.
"""

from __future__ import annotations

import tensorflow as tf

from cpsl_tf.cpsl.memory_bank import MemoryBank
from cpsl_tf.cpsl.sinkhorn import sinkhorn

__all__ = ["online_assignment", "online_assignment_with_marginal"]


def online_assignment_with_marginal(current_scores, bank: MemoryBank, bank_scores_fn, class_marginal,
                                    epsilon: float = 0.05, iterations: int = 3, log_domain: bool = False):
    """Q_cur: the current rows of Sinkhorn over [bank_scores_fn(bank rows); current_scores] (Eq. 5, 6, 12),
    and the class marginal of the whole Q_aug (its mean row), which only approaches r in 3 iterations.

    Args:
        current_scores: (M, K) scores of the current samples (e.g. cosine to the prototypes).
        bank: the memory bank; read, not updated.
        bank_scores_fn: maps the bank contents (N, D) to (N, K) scores (e.g. cosine to the prototypes).
        class_marginal: (K,) r = delta_pseudo (Eq. 12).

    Returns:
        (M, K) float32 targets and (K,) marginal, without gradient; Sinkhorn over the current rows alone
        until the bank is full.
    """
    current_scores = tf.cast(current_scores, tf.float32)
    count = tf.shape(current_scores)[0]

    def with_bank():
        bank_scores = tf.cast(bank_scores_fn(tf.convert_to_tensor(bank.features)), tf.float32)
        scores = tf.concat([bank_scores, current_scores], axis=0)
        q = sinkhorn(scores, class_marginal, epsilon, iterations, log_domain)
        return q[-count:], tf.reduce_mean(q, axis=0)

    def current_only():
        q = sinkhorn(current_scores, class_marginal, epsilon, iterations, log_domain)
        return q, tf.reduce_mean(q, axis=0)

    q_current, marginal = tf.cond(bank.is_full(), with_bank, current_only)
    return tf.stop_gradient(q_current), tf.stop_gradient(marginal)


def online_assignment(current_scores, bank: MemoryBank, bank_scores_fn, class_marginal,
                      epsilon: float = 0.05, iterations: int = 3, log_domain: bool = False):
    """Q_cur of :func:`online_assignment_with_marginal`."""
    return online_assignment_with_marginal(current_scores, bank, bank_scores_fn, class_marginal, epsilon,
                                           iterations, log_domain)[0]
