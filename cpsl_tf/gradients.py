"""Gradients of a step whose loss sums several forward passes, computed one pass at a time.

A CPSL step runs the student three times (source, weak target, strong target); a single tape keeps the
activations of all three alive until the one backward pass. Here each pass runs its forward and backward
before the next pass's forward starts (control dependencies order them inside a ``tf.function``), so a
step holds one pass's activations at a time. At batch 1 and a 512x896 crop, one pass of DeepLab-v2 R101
keeps about 6 GiB of activations, so this is what keeps the CPSL stage's peak memory near one pass's
(``benchmarks/real_size.py``). The sum is exact (the gradient of a sum is the sum of the gradients); only
the order of the floating-point additions changes. The compute is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


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
