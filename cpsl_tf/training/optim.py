"""SGD with learning-rate groups, coupled L2 weight decay, gradient accumulation and loss scaling.

PyTorch's SGD adds ``weight_decay * w`` to the gradient (coupled L2) and keeps ``buf = m * buf + g;
w -= lr * buf``. Keras' ``weight_decay`` is decoupled, so the decay is added to the gradients here
instead. Keras' velocity form ``v = m * v - lr * g; w += v`` equals PyTorch's update for a constant
learning rate; under poly decay the two differ by the lr ratio of consecutive steps (< 1e-5 relative per
step at 90k steps), which we accept and document.

Gradient accumulation (``train.gradient_accumulation_steps`` = k, a virtual batch of k x
``train.batch_size``): every group optimizer uses Keras' own ``gradient_accumulation_steps``, so each call of
:meth:`GroupedSGD.apply` is one micro-batch and every k-th call applies the mean of the k gradients (the
gradient of the mean loss over the k micro-batches, i.e. of the full batch when every micro-batch weighs
the same). The coupled decay ``weight_decay * w`` is the same in every micro-batch (w does not change
between updates), so it enters once. Keras' schedules would count micro-batches; the learning rate here
counts optimizer steps (:class:`PerOptimizerStep`). What is not a gradient is the caller's choice;
:meth:`GroupedSGD.apply` returns whether the variables changed, so the CPSL step updates its EMA networks
once per optimizer step (:func:`cpsl_tf.gradients.when_applied`). ``GroupedSGD`` is the
:class:`cpsl_tf.gradients.StepOptimizer` the training steps are given.

Loss scaling (``mixed_float16``): one dynamic scale for all groups, as
``keras.optimizers.LossScaleOptimizer`` keeps per optimizer: a step whose unscaled gradients are not all
finite is skipped by every group and halves the scale; 2000 finite steps in a row double it. Wrapping each
group in its own LossScaleOptimizer would let one group skip a step the others take.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from cpsl_tf.training.schedule import PolyDecay

INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_INTERVAL = 2000


@keras.saving.register_keras_serializable(package="cpsl_tf")
class PerOptimizerStep(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` evaluated at the optimizer step (micro-batch count // ``accumulation_steps``)."""

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, accumulation_steps: int):
        self.schedule = schedule
        self.accumulation_steps = int(accumulation_steps)

    def __call__(self, step):
        return self.schedule(keras.ops.floor_divide(step, self.accumulation_steps))

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "accumulation_steps": self.accumulation_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["accumulation_steps"])


def make_sgd(base_lr: float, total_steps: int, momentum: float, power: float, name: str,
             accumulation_steps: int = 1) -> keras.Optimizer:
    """SGD with poly decay over ``total_steps`` optimizer steps; with ``accumulation_steps`` > 1 one optimizer
    step per ``accumulation_steps`` calls."""
    if accumulation_steps < 1:
        raise ValueError(f"train.gradient_accumulation_steps must be >= 1, got {accumulation_steps}")
    schedule = PolyDecay(base_lr, total_steps, power)
    if accumulation_steps == 1:
        return keras.optimizers.SGD(learning_rate=schedule, momentum=momentum, name=name)
    return keras.optimizers.SGD(learning_rate=PerOptimizerStep(schedule, accumulation_steps),
                                momentum=momentum, gradient_accumulation_steps=accumulation_steps, name=name)


def with_coupled_decay(grads: Sequence, variables: Sequence, weight_decay: float) -> list:
    """Add ``weight_decay * w`` to every gradient (PyTorch's coupled L2); None gradients stay None."""
    if not weight_decay:
        return list(grads)
    return [None if g is None else g + weight_decay * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]


class GroupedSGD:
    """Applies one optimizer per variable group; every group's optimizer steps once per call.

    ``groups`` maps a group name to its optimizer; ``assign`` maps a variable to a group name. The
    optimizers must share ``gradient_accumulation_steps`` (see the module docstring). ``loss_scaling``
    turns on dynamic loss scaling for float16 training: scale the loss with :meth:`scale_loss` before
    taking gradients.
    """

    def __init__(self, groups: dict[str, keras.Optimizer], assign: Callable[[object], str],
                 weight_decay: float, loss_scaling: bool = False):
        steps = {optimizer.gradient_accumulation_steps or 1 for optimizer in groups.values()}
        if len(steps) != 1:
            raise ValueError(f"GroupedSGD: the group optimizers accumulate over different step counts "
                             f"{sorted(steps)}")
        self.groups = groups
        self.assign = assign
        self.weight_decay = weight_decay
        self.accumulation_steps = steps.pop()
        self.loss_scaling = loss_scaling
        self.loss_scale = self.finite_steps = None

    def scale_loss(self, loss):
        """The loss times the current loss scale (the loss itself without loss scaling)."""
        if not self.loss_scaling:
            return loss
        return loss * tf.cast(tf.convert_to_tensor(self.loss_scale), loss.dtype)

    def _is_update_step(self, optimizer: keras.Optimizer):
        if self.accumulation_steps == 1:
            return True
        return tf.equal((tf.convert_to_tensor(optimizer._iterations) + 1) % self.accumulation_steps, 0)

    def apply(self, grads: Sequence, variables: Sequence):
        """Apply one micro-batch's gradients; returns whether the variables changed (an optimizer step with
        finite gradients): the Python bool True when every call is one (no accumulation, no loss scaling),
        else a boolean tensor."""
        if self.loss_scaling:
            inverse = 1.0 / tf.convert_to_tensor(self.loss_scale)
            grads = [None if g is None else g * tf.cast(inverse, g.dtype) for g in grads]
        grads = with_coupled_decay(grads, variables, self.weight_decay)
        split: dict[str, tuple[list, list]] = {name: ([], []) for name in self.groups}
        for g, v in zip(grads, variables):
            if g is None:
                continue
            gs, vs = split[self.assign(v)]
            gs.append(g)
            vs.append(v)
        applied = [name for name in self.groups if split[name][1]]
        if not applied:
            return False
        updated = self._is_update_step(self.groups[applied[0]])

        def apply_all():
            for name in applied:
                self.groups[name].apply_gradients(zip(*split[name]))
            return tf.constant(True)

        if not self.loss_scaling:
            apply_all()
            return updated
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                for name in applied for g in split[name][0]])
        tf.cond(finite, apply_all, lambda: tf.constant(False))
        self._update_loss_scale(finite)
        return tf.logical_and(updated, finite)

    def _update_loss_scale(self, finite) -> None:
        streak = tf.convert_to_tensor(self.finite_steps) + 1
        grow = tf.logical_and(finite, streak >= LOSS_SCALE_GROWTH_INTERVAL)
        scale = tf.convert_to_tensor(self.loss_scale)
        self.loss_scale.assign(tf.where(finite, tf.where(grow, 2.0 * scale, scale), 0.5 * scale))
        self.finite_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                          streak, tf.zeros_like(streak)))

    @property
    def optimizers(self) -> list[keras.Optimizer]:
        return list(self.groups.values())

    def build(self, variables: Sequence) -> None:
        """Create every group's slots (and the loss-scale state) now, so a checkpoint restore finds them."""
        for name, optimizer in self.groups.items():
            optimizer.build([v for v in variables if self.assign(v) == name])
        if self.loss_scaling and self.loss_scale is None:
            # Stored on the first group's optimizer so that checkpoints of the optimizers carry it.
            holder = next(iter(self.groups.values()))
            self.loss_scale = holder.add_variable(
                (), initializer=keras.initializers.Constant(INITIAL_LOSS_SCALE), dtype="float32",
                aggregation="only_first_replica", name="loss_scale")
            self.finite_steps = holder.add_variable((), initializer="zeros", dtype="int64",
                                                    aggregation="only_first_replica", name="finite_steps")
