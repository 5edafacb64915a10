"""Poly learning-rate decay, as in the official code: lr_i = base * max(0, 1 - i / total) ** power."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cpsl_tf")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Polynomial decay to 0 at ``total_steps``, stepped once per optimizer update."""

    def __init__(self, base_lr: float, total_steps: int, power: float = 0.9):
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.power = float(power)

    def __call__(self, step):
        progress = ops.cast(step, "float32") / float(max(self.total_steps, 1))
        return self.base_lr * ops.power(ops.maximum(0.0, 1.0 - progress), self.power)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "power": self.power}
