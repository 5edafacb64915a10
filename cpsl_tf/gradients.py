"""Gradients of a step whose loss sums several forward passes, computed one pass at a time; and what a
training step needs from its optimizer (:class:`StepOptimizer`).

A CPSL step runs the student three times (source, weak target, strong target); a single tape keeps the
activations of all three alive until the one backward pass. Here each pass runs its forward and backward
before the next pass's forward starts (control dependencies order them inside a ``tf.function``), so a
step holds one pass's activations at a time. At batch 1 and a 512x896 crop, one pass of DeepLab-v2 R101
keeps about 6 GiB of activations, so this is what keeps the CPSL stage's peak memory near one pass's
(``benchmarks/real_size.py``). The sum is exact (the gradient of a sum is the sum of the gradients); only
the order of the floating-point additions changes. The compute is the same.

The training steps (the warm-up, CPSL and distillation models) reach their optimizer only through
:class:`StepOptimizer`: it scales the loss before the gradients are taken and applies them, saying whether
the weights changed. What applies them (learning-rate groups, coupled decay, gradient accumulation, loss
scaling: :class:`cpsl_tf.training.optim.SegmentationOptimizer`) is the trainer's choice, so the method in
:mod:`cpsl_tf.cpsl` imports nothing from :mod:`cpsl_tf.training`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import tensorflow as tf


class StepOptimizer(Protocol):
    def scale_loss(self, loss):
        """The loss to differentiate: ``loss`` times the loss scale, if there is one."""

    def apply(self, gradients: Sequence, variables: Sequence):
        """Apply the gradients of one step (one micro-batch under gradient accumulation) to ``variables``.

        Returns whether the variables changed: the Python bool True when every call changes them, else a
        boolean tensor (False on a micro-batch that only accumulates, or a step skipped by loss scaling).
        """


def when_applied(applied, update: Callable[[], None]) -> None:
    """Run ``update`` (e.g. an EMA of the weights) only if the optimizer changed the weights; ``applied`` is
    what :meth:`StepOptimizer.apply` returned."""
    if isinstance(applied, bool):
        if applied:
            update()
        return

    def run():
        update()
        return tf.constant(True)

    tf.cond(applied, run, lambda: tf.constant(False))


def _add(total, more):
    if total is None:
        return more
    return total if more is None else total + more


def pass_by_pass_gradients(passes: Sequence[Callable[[], tuple]], variables: Sequence,
                           scale: Callable = lambda loss: loss) -> tuple[list, list]:
    """The gradients of the sum of the passes' losses with respect to ``variables``, and each pass's outputs.

    Each pass is a callable returning ``(loss, outputs)``; ``scale`` maps its loss to what is
    differentiated (e.g. the loss scale and the replica share, which are linear). A variable no pass
    reaches gets ``None``, as with one tape, so optimizers leave it alone.
    """
    gradients: list = [None] * len(variables)
    outputs = []
    for run in passes:
        # One barrier op, not every gradient: each root op of the pass gets one control input.
        computed = [g for g in gradients if g is not None]
        with tf.control_dependencies([tf.group(*computed)] if computed else []), tf.GradientTape() as tape:
            loss, result = run()
            scaled = scale(loss)
        gradients = [_add(g, p) for g, p in zip(gradients, tape.gradient(scaled, variables))]
        outputs.append(result)
    return gradients, outputs
