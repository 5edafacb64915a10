"""The segmentation network: input normalisation -> dilated ResNet -> (optional bn_pretrain) -> ProDA head.

``build_segmenter(model_cfg, num_classes)`` is a functional ``keras.Model`` taking RGB float32 in [0, 1]
(B, H, W, 3) and returning ``{"logits": (B, h, w, K), "features": (B, h, w, head_channels)}`` at output
stride 8 (h = ceil-mode arithmetic of the official network, e.g. 512x896 -> 65x113). Both outputs are
float32 even under a mixed-precision policy. Logits are not upsampled inside the model; callers resize
them with :func:`cpsl_tf.resize.resize_bilinear` (align corners, as the official checkpoints).

Outside training steps, run a segmenter on images only through :func:`inference_function`, never eagerly
(``model(x)``): eager execution keeps the whole forward pass's intermediates alive, and the R101 network on
one 1024x2048 image is killed above 23 GB that way, against a 1.9 GB peak compiled. Output sizes come from
:func:`output_size`, which reads them from the traced graph without running the network.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import layers

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.deeplab_v2 import proda_head
from cpsl_tf.models.layers import Standardize
from cpsl_tf.models.resnet import resnet_features

# Layers trained with the head learning rate (official ``get_10x_lr_params``: layer5 and bn_pretrain; the
# real-time student's LR-ASPP head likewise, ``cpsl_tf.models.lraspp``).
HEAD_LAYER_PREFIXES = ("layer5_", "bn_pretrain", "lraspp_")


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


# model -> {(H, W): compiled inference pass}. Weak keys, and the functions hold the model weakly, so a model
# that is no longer used is freed with its functions.
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_function(model: keras.Model, input_size: Sequence[int]):
    """``model(images, training=False)`` as a ``tf.function`` for float32 (B, H, W, 3) batches at
    ``input_size`` = (H, W), any batch size B. Built and traced once per model and size, then reused by
    every caller (evaluation, pseudo labels, reports), so nothing retraces from one evaluation to the next.
    Returns the model's outputs as they are (for a segmenter, the ``logits``/``features`` dict)."""
    size = tuple(int(v) for v in input_size)
    if len(size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}")
    try:
        functions = _INFERENCE.setdefault(model, {})
    except TypeError:  # a callable that cannot be weakly referenced: compiled, but not kept
        return _compile(lambda: model, size)
    if size not in functions:
        functions[size] = _compile(weakref.ref(model), size)
    return functions[size]


def _forward(get_model, images):
    return get_model()(images, training=False)


def _compile(get_model, size: tuple[int, int]):
    # A partial, not a closure: TensorFlow counts the tracings of all functions that share a code object
    # together, so closures for five models traced once each warned of "excessive retracing"; a partial has
    # no code object of its own and is counted alone.
    return tf.function(functools.partial(_forward, get_model),
                       input_signature=[tf.TensorSpec((None, *size, 3), tf.float32, name="images")])


def output_size(model: keras.Model, input_size: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the model's logits for an input of ``input_size`` = (H, W), read from the graph of
    :func:`inference_function` (traced once, and reused by the forward passes that follow): the network is
    not run."""
    outputs = inference_function(model, input_size).get_concrete_function().structured_outputs
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    height, width = logits.shape[1:3]
    if height is None or width is None:
        raise ValueError(f"{model.name}: the output size for input {tuple(input_size)} is not static "
                         f"({logits.shape})")
    return int(height), int(width)
