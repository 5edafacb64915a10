"""SGD with learning-rate groups and coupled L2 weight decay, as one Keras optimizer; Keras' gradient
accumulation and loss scaling.

:class:`GroupedSGD` is one ``keras.optimizers.SGD``: its schedule is poly decay from 1 and every variable's
learning rate is that times its group's base rate (backbone, head, self-labeling head), so every group
decays alike and one set of optimizer variables (momentums, iterations) serves all groups.

PyTorch's SGD adds ``weight_decay * w`` to the gradient (coupled L2) and keeps ``buf = m * buf + g;
w -= lr * buf``. Keras' ``weight_decay`` is decoupled, so :meth:`GroupedSGD.apply` adds the decay to the
gradients instead. Under ``tf.distribute`` each replica's gradients are summed across replicas (the steps
divide their losses by the replica count), so each replica adds 1/N of the decay: the sum is the decay once,
not N times. Keras' velocity form ``v = m * v - lr * g; w += v`` equals PyTorch's update for a constant
learning rate; under poly decay the two differ by the lr ratio of consecutive steps (< 1e-5 relative per
step at 90k steps), which we accept and document.

Gradient accumulation (``train.gradient_accumulation_steps`` = k, a virtual batch of k x
``train.batch_size``): Keras' own ``gradient_accumulation_steps``, so each call of
:meth:`SegmentationOptimizer.apply` is one micro-batch and every k-th call applies the mean of the k
gradients (the gradient of the mean loss over the k micro-batches, i.e. of the full batch when every
micro-batch weighs the same). The coupled decay ``weight_decay * w`` is the same in every micro-batch (w
does not change between updates), so it enters once. Keras' schedules would count micro-batches; the
learning rate here counts optimizer steps (:class:`PerOptimizerStep`).

Loss scaling (``mixed_float16``): ``keras.optimizers.LossScaleOptimizer`` around the one SGD, so one
dynamic scale serves every group: a step whose gradients are not all finite is skipped by every group and
halves the scale; 2000 finite steps in a row double it.

:class:`SegmentationOptimizer` is the :class:`cpsl_tf.gradients.StepOptimizer` the training steps are
given: it scales the loss, applies the gradients and returns whether the variables changed, so the CPSL
step updates its EMA networks once per optimizer step (:func:`cpsl_tf.gradients.when_applied`). What is
not a gradient is the caller's choice. Its Keras optimizer (:attr:`SegmentationOptimizer.optimizer`) is
what checkpoints hold.
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


def with_coupled_decay(grads: Sequence, variables: Sequence, weight_decay: float) -> list:
    """Add ``weight_decay * w`` to every gradient (PyTorch's coupled L2); None gradients stay None."""
    if not weight_decay:
        return list(grads)
    return [None if g is None else g + weight_decay * tf.cast(v, g.dtype) for g, v in zip(grads, variables)]


def replicas_summed() -> int:
    """How many replicas' gradients the optimizer will sum: the replica count in a replica context of a
    distribution strategy, else 1."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


class GroupedSGD(keras.optimizers.SGD):
    """SGD whose learning rate is poly decay over ``total_steps`` optimizer steps times the base rate of the
    variable's group (``group_rates`` by name; ``group_of`` maps a variable to its group's name), with coupled
    ``weight_decay``; with ``accumulation_steps`` > 1 one optimizer step per ``accumulation_steps`` calls
    (see the module docstring)."""

    def __init__(self, group_rates: dict[str, float], group_of: Callable[[object], str], weight_decay: float,
                 total_steps: int, momentum: float, power: float, accumulation_steps: int = 1,
                 name: str = "grouped_sgd"):
        if accumulation_steps < 1:
            raise ValueError(f"train.gradient_accumulation_steps must be >= 1, got {accumulation_steps}")
        schedule = PolyDecay(1.0, total_steps, power)
        if accumulation_steps > 1:
            schedule = PerOptimizerStep(schedule, accumulation_steps)
        super().__init__(learning_rate=schedule, momentum=momentum,
                         gradient_accumulation_steps=accumulation_steps if accumulation_steps > 1 else None,
                         name=name)
        self.group_rates = dict(group_rates)
        self.group_of = group_of
        # Not Keras' ``weight_decay``, which would decay decoupled as well.
        self.coupled_weight_decay = weight_decay
        self.accumulation_steps = accumulation_steps
        self._variable_rates: list[float] = []

    def build(self, variables):
        if not self.built:
            self._variable_rates = [self.group_rates[self.group_of(v)] for v in variables]
        super().build(variables)

    def learning_rates(self) -> dict[str, float]:
        """The learning rate of each group at the next optimizer step."""
        decay = float(self.learning_rate)
        return {name: decay * rate for name, rate in self.group_rates.items()}

    def apply(self, grads, trainable_variables=None):
        variables = self._trainable_variables if trainable_variables is None else trainable_variables
        super().apply(with_coupled_decay(grads, variables, self.coupled_weight_decay / replicas_summed()),
                      trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        rate = self._variable_rates[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * rate)


class SegmentationOptimizer:
    """The :class:`cpsl_tf.gradients.StepOptimizer` of the segmentation networks: ``sgd``, inside a
    ``keras.optimizers.LossScaleOptimizer`` when ``loss_scaling`` (float16 training: scale the loss with
    :meth:`scale_loss` before taking gradients). ``optimizer`` is the Keras optimizer to compile with and to
    checkpoint."""

    def __init__(self, sgd: GroupedSGD, loss_scaling: bool = False):
        self.sgd = sgd
        self.loss_scaling = loss_scaling
        self.optimizer: keras.Optimizer = sgd
        if loss_scaling:
            self.optimizer = keras.optimizers.LossScaleOptimizer(
                sgd, initial_scale=INITIAL_LOSS_SCALE, dynamic_growth_steps=LOSS_SCALE_GROWTH_INTERVAL)

    @property
    def accumulation_steps(self) -> int:
        return self.sgd.accumulation_steps

    @property
    def loss_scale(self) -> keras.Variable:
        """The current dynamic loss scale (with ``loss_scaling``)."""
        return self.optimizer.dynamic_scale

    def scale_loss(self, loss):
        """The loss times the current loss scale (the loss itself without loss scaling)."""
        return self.optimizer.scale_loss(loss)

    def apply(self, grads: Sequence, variables: Sequence):
        """Apply one micro-batch's gradients; returns whether the variables changed (an optimizer step with
        finite gradients): the Python bool True when every call is one (no accumulation, no loss scaling),
        else a boolean tensor. Variables without a gradient (None) are left alone."""
        present = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not present:
            return False
        grads, variables = (list(side) for side in zip(*present))
        k = self.accumulation_steps
        updated = True if k == 1 else tf.equal((tf.convert_to_tensor(self.sgd._iterations) + 1) % k, 0)
        if not self.loss_scaling:
            self.optimizer.apply(grads, variables)
            return updated
        finite = self.optimizer.check_finite(grads)
        self.optimizer.apply(grads, variables)
        return tf.logical_and(updated, finite)

    def build(self, variables: Sequence) -> None:
        """Create the optimizer's variables (and the loss-scale state) now, so a checkpoint restore finds
        them."""
        self.optimizer.build(list(variables))
