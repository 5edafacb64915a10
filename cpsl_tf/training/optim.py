"""SGD with two learning-rate groups and coupled L2 weight decay, as the official code trains.

PyTorch's SGD adds ``weight_decay * w`` to the gradient (coupled L2) and keeps ``buf = m * buf + g;
w -= lr * buf``. Keras' ``weight_decay`` is decoupled, so the decay is added to the gradients here
instead. Keras' velocity form ``v = m * v - lr * g; w += v`` equals PyTorch's update for a constant
learning rate; under poly decay the two differ by the lr ratio of consecutive steps (< 1e-5 relative per
step at 90k steps), which we accept and document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from cpsl_tf.training.schedule import PolyDecay


def make_sgd(base_lr: float, total_steps: int, momentum: float, power: float, name: str) -> keras.Optimizer:
    return keras.optimizers.SGD(learning_rate=PolyDecay(base_lr, total_steps, power), momentum=momentum,
                                name=name)


def with_coupled_decay(grads: Sequence, variables: Sequence, weight_decay: float) -> list:
    """Add ``weight_decay * w`` to every gradient (PyTorch's coupled L2); None gradients stay None."""
    if not weight_decay:
        return list(grads)
    return [None if g is None else g + weight_decay * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]


class GroupedSGD:
    """Applies one optimizer per variable group; every group's optimizer steps once per call.

    ``groups`` maps a group name to its optimizer; ``assign`` maps a variable to a group name.
    """

    def __init__(self, groups: dict[str, keras.Optimizer], assign: Callable[[object], str],
                 weight_decay: float):
        self.groups = groups
        self.assign = assign
        self.weight_decay = weight_decay

    def apply(self, grads: Sequence, variables: Sequence) -> None:
        grads = with_coupled_decay(grads, variables, self.weight_decay)
        split: dict[str, tuple[list, list]] = {name: ([], []) for name in self.groups}
        for g, v in zip(grads, variables):
            if g is None:
                continue
            gs, vs = split[self.assign(v)]
            gs.append(g)
            vs.append(v)
        for name, optimizer in self.groups.items():
            gs, vs = split[name]
            if vs:
                optimizer.apply_gradients(zip(gs, vs))

    @property
    def optimizers(self) -> list[keras.Optimizer]:
        return list(self.groups.values())

    def build(self, variables: Sequence) -> None:
        """Create every group's slots now, so a checkpoint restore finds them."""
        for name, optimizer in self.groups.items():
            optimizer.build([v for v in variables if self.assign(v) == name])
