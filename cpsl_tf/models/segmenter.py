"""The segmentation network: input normalisation -> dilated ResNet -> (optional bn_pretrain) -> ProDA head.

``build_segmenter(model_cfg, num_classes)`` is a functional ``keras.Model`` taking RGB float32 in [0, 1]
(B, H, W, 3) and returning ``{"logits": (B, h, w, K), "features": (B, h, w, head_channels)}`` at output
stride 8 (h = ceil-mode arithmetic of the official network, e.g. 512x896 -> 65x113). Both outputs are
float32 even under a mixed-precision policy. Logits are not upsampled inside the model; use
:func:`upsample_logits`.
"""

from __future__ import annotations

import keras
from keras import layers

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.deeplab_v2 import proda_head
from cpsl_tf.models.layers import Standardize
from cpsl_tf.models.resnet import resnet_features
from cpsl_tf.resize import resize_bilinear

# Layers trained with the head learning rate (official ``get_10x_lr_params``: layer5 and bn_pretrain).
HEAD_LAYER_PREFIXES = ("layer5_", "bn_pretrain")


def build_segmenter(model_cfg: ModelConfig, num_classes: int, input_shape=(None, None, 3),
                    name: str = "segmenter", bn_pretrain: bool = False) -> keras.Model:
    """DeepLab-v2 + ProDA head. ``bn_pretrain=True`` adds the BatchNorm after layer4 that the official
    stage-2/3 checkpoints carry (``--bn_clr``)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    inputs = keras.Input(input_shape, name="image")
    x = Standardize(model_cfg.input_mean, model_cfg.input_std, name="standardize")(inputs)
    x = resnet_features(x, model_cfg, dilated=True)
    if bn_pretrain:
        x = layers.BatchNormalization(epsilon=model_cfg.bn_epsilon, momentum=model_cfg.bn_momentum,
                                      name="bn_pretrain")(x)
    features, logits = proda_head(x, model_cfg, num_classes)
    outputs = {
        "logits": layers.Activation("linear", dtype="float32", name="logits")(logits),
        "features": layers.Activation("linear", dtype="float32", name="features")(features),
    }
    return keras.Model(inputs, outputs, name=name)


def is_head_variable(variable) -> bool:
    """True for variables of the head group (10x learning rate in the official code)."""
    return variable.path.startswith(HEAD_LAYER_PREFIXES)


def has_bn_pretrain(model: keras.Model) -> bool:
    return any(layer.name == "bn_pretrain" for layer in model.layers)


def upsample_logits(logits, size, align_corners: bool = True):
    """Bilinear upsampling of (B, h, w, C) logits or features to ``size`` = (H, W), the project's one
    resize convention (:func:`cpsl_tf.resize.resize_bilinear`; official checkpoints use align_corners)."""
    return resize_bilinear(logits, size, align_corners=align_corners)
