"""ProDA's DeepLab-v2 head (``Classifier_Module2``, docs/official-code.md section 2), the ``layer5`` of the
official network.

Five parallel branches on the backbone map (a 1x1 conv and 3x3 convs at the ASPP rates), each conv (bias)
-> GroupNorm(32) -> ReLU; concatenation; squeeze-excitation; 3x3 conv (bias) -> GroupNorm (no ReLU);
spatial dropout, whose output is the ``features`` map the self-labeling head uses; a bias-free 1x1
classifier gives the ``logits``.

Layer names are the PyTorch module paths with dots replaced by underscores (``layer5.conv2d_list.3.1`` ->
``layer5_conv2d_list_3_1``), as in :mod:`cpsl_tf.models.resnet`.
"""

from __future__ import annotations

import keras
from keras import layers

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.layers import DilatedConv2D

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPSILON = 1e-5
# The official code initialises every conv with N(0, 0.01) (it overrides the head's intended 0.001).
HEAD_INITIALIZER_STDDEV = 0.01


def _head_conv(filters: int, kernel: int, dilation: int, use_bias: bool, name: str) -> layers.Conv2D:
    return DilatedConv2D(filters, kernel, dilation_rate=dilation, padding="same" if kernel > 1 else "valid",
                         use_bias=use_bias, name=name,
                         kernel_initializer=keras.initializers.RandomNormal(stddev=HEAD_INITIALIZER_STDDEV))


def _group_norm(name: str) -> layers.GroupNormalization:
    return layers.GroupNormalization(groups=GROUP_NORM_GROUPS, epsilon=GROUP_NORM_EPSILON, name=name)


def squeeze_excitation(x, channels: int, reduction: int, name: str):
    """Global average pool -> Dense(C/r) -> ReLU -> Dense(C) -> sigmoid -> channel scaling."""
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    gate = layers.Dense(channels // reduction, activation="relu", name=f"{name}_se_0")(gate)
    gate = layers.Dense(channels, activation="sigmoid", name=f"{name}_se_2")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


def proda_head(x, model_cfg: ModelConfig, num_classes: int) -> tuple:
    """Apply the head to the backbone map; returns ``(features, logits)``."""
    width = model_cfg.head_channels
    branches = []
    for i, rate in enumerate([None, *model_cfg.aspp_rates]):
        name = f"layer5_conv2d_list_{i}"
        kernel, dilation = (1, 1) if rate is None else (3, rate)
        y = _head_conv(width, kernel, dilation, True, f"{name}_0")(x)
        y = _group_norm(f"{name}_1")(y)
        branches.append(layers.ReLU(name=f"{name}_2")(y))
    y = layers.Concatenate(name="layer5_concat")(branches)
    y = squeeze_excitation(y, width * len(branches), model_cfg.se_reduction, "layer5_bottleneck_0")
    y = _head_conv(width, 3, 1, True, "layer5_bottleneck_1")(y)
    y = _group_norm("layer5_bottleneck_2")(y)
    features = layers.SpatialDropout2D(model_cfg.dropout, name="layer5_head_0")(y)
    logits = _head_conv(num_classes, 1, 1, False, "layer5_head_1")(features)
    return features, logits
