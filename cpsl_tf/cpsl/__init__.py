"""CPSL adaptation core: Sinkhorn self-labeling, rectification, class balance, memory bank, losses.

``model.CPSLModel.train_step`` is paper Algorithm 1 written once; ``parts`` holds what the presets
``paper`` and ``official`` choose between (teacher view, sampler, assignment with one bank or two,
consistency term); ``replicas`` makes a step on R replicas equal to one step on one device. The optimizer
reaches the step through ``cpsl_tf.gradients.StepOptimizer``: nothing here imports ``cpsl_tf.training``.
Each equation of the paper is one function whose docstring cites it.

``sinkhorn`` and ``rectify`` are the public functions (the submodules of the same name are reachable
with ``from cpsl_tf.cpsl.sinkhorn import ...``; the package attributes are the functions).
"""

from cpsl_tf.cpsl.rectify import rectify
from cpsl_tf.cpsl.sinkhorn import sinkhorn

__all__ = ["rectify", "sinkhorn"]
