"""CPSL adaptation core: Sinkhorn self-labeling, rectification, class balance, memory bank, losses.

``sinkhorn`` and ``rectify`` are the public functions (the submodules of the same name are reachable
with ``from cpsl_tf.cpsl.sinkhorn import ...``; the package attributes are the functions).
"""

from cpsl_tf.cpsl.rectify import rectify
from cpsl_tf.cpsl.sinkhorn import sinkhorn

__all__ = ["rectify", "sinkhorn"]
