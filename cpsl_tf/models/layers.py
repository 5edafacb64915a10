"""The networks' custom Keras layers: input standardisation, PyTorch ceil-mode max-pool, a dilated conv
that runs as one native convolution, and a bilinear resize to another tensor's size."""

from __future__ import annotations

import keras
from keras import layers, ops

from cpsl_tf.resize import resize_bilinear


@keras.saving.register_keras_serializable(package="cpsl_tf")
class Standardize(layers.Layer):
    """``(x - mean) / std`` per channel, constants from the ModelConfig (official: mean 0, std 1)."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, x):
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="cpsl_tf")
class ResizeLike(layers.Layer):
    """Bilinear resize of the first input to the spatial size of the second, with the project's resize
    convention (:func:`cpsl_tf.resize.resize_bilinear`)."""

    def __init__(self, align_corners: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, like = inputs
        return resize_bilinear(x, ops.shape(like)[1:3], align_corners=self.align_corners)

    def compute_output_shape(self, input_shapes):
        x, like = input_shapes
        return (x[0], like[1], like[2], x[3])

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}


@keras.saving.register_keras_serializable(package="cpsl_tf")
class CeilModeMaxPool2D(layers.Layer):
    """PyTorch ``MaxPool2d(3, stride=2, padding=1, ceil_mode=True)``.

    Padding top/left by 1 and bottom/right by 2 with -inf and pooling 'valid' gives
    ``ceil((n - 1) / 2) + 1`` outputs for both odd and even ``n``, the PyTorch size, with the same windows.
    """

    def call(self, x):
        x = ops.pad(x, [[0, 0], [1, 2], [1, 2], [0, 0]], constant_values=float("-inf"))
        return ops.max_pool(x, pool_size=3, strides=2, padding="valid")


@keras.saving.register_keras_serializable(package="cpsl_tf")
class DilatedConv2D(layers.Conv2D):
    """``Conv2D`` whose dilated convolution is one native ``Conv2D`` op on TensorFlow.

    Keras lowers dilation through ``tf.nn.convolution``, which on CPU becomes SpaceToBatch + conv +
    BatchToSpace: 8x slower for the head's rate-24 branches on a 33x65 map and 150x on 9x17 (forward +
    backward, measured here). ``tf.nn.conv2d(dilations=...)`` computes the same thing directly.
    """

    def convolution_op(self, inputs, kernel):
        if keras.backend.backend() != "tensorflow" or max(self.dilation_rate) == 1:
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return tf.nn.conv2d(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                            dilations=list(self.dilation_rate), data_format="NHWC")
