"""What a network costs to run: floating-point operations at a given input size, counted from its graph.

:func:`count_flops` traces the model's inference pass at a fixed size (batch 1), freezes its variables into
constants and asks TensorFlow's profiler for the graph's float operations (``ProfileOptionBuilder
.float_operation``: a multiply-accumulate counts as 2; elementwise operations such as bias adds and
activations count too). Nothing runs, so the count at 1024x2048 costs the same few seconds as at 64x128.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def count_flops(model: keras.Model, input_size: Sequence[int]) -> int:
    """Float operations of one forward pass of ``model`` on one (H, W, 3) image, ``input_size`` = (H, W)."""
    height, width = (int(v) for v in input_size)

    def forward(images):
        return model(images, training=False)

    concrete = tf.function(forward, autograph=False).get_concrete_function(
        tf.TensorSpec((1, height, width, 3), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)
