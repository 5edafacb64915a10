"""Dilated ResNet backbone of DeepLab-v2 as the official code builds it (docs/official-code.md section 2),
plus the copy of ``keras.applications`` ImageNet weights into it.

* Caffe-style bottleneck (ResNet-50/101): the stride sits on the first 1x1 conv, the dilation on the 3x3.
  Basic blocks (ResNet-18/34) carry stride and dilation on their 3x3 convs.
* Stem conv7x7/s2/p3 -> BN -> ReLU -> max-pool 3x3/s2/p1 with PyTorch's ``ceil_mode=True``.
* layer2 stride 2, layer3 dilation 2, layer4 dilation 4: output stride 8 (512x896 -> 65x113,
  1024x2048 -> 129x257). ``dilated=False`` gives the classification ResNet (layer3/4 stride 2).
* The first block of every layer has a projection shortcut.

Layer names are the PyTorch module paths with dots replaced by underscores (``layer3.5.conv2`` ->
``layer3_5_conv2``, ``layer1.0.downsample.1`` -> ``layer1_0_downsample_1``), so a state-dict key maps to a
layer deterministically (``cpsl_tf.models.convert``). Padding is explicit wherever PyTorch's symmetric
padding differs from Keras' ``"same"`` (strided convs), so PyTorch weights give PyTorch outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from cpsl_tf.config import ModelConfig
from cpsl_tf.models.layers import CeilModeMaxPool2D, DilatedConv2D


@dataclass(frozen=True)
class ResNetSpec:
    blocks: tuple[int, int, int, int]
    bottleneck: bool

    @property
    def expansion(self) -> int:
        return 4 if self.bottleneck else 1


RESNET_SPECS = {
    "resnet18": ResNetSpec((2, 2, 2, 2), bottleneck=False),
    "resnet34": ResNetSpec((3, 4, 6, 3), bottleneck=False),
    "resnet50": ResNetSpec((3, 4, 6, 3), bottleneck=True),
    "resnet101": ResNetSpec((3, 4, 23, 3), bottleneck=True),
}

# (stride, dilation) of layer1..layer4.
DILATED_SCHEDULE = ((1, 1), (2, 1), (1, 2), (1, 4))
CLASSIFICATION_SCHEDULE = ((1, 1), (2, 1), (2, 1), (2, 1))

# keras.applications ResNets expect caffe preprocessing: BGR, 0..255, minus this mean (given here in RGB).
IMAGENET_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
# Model input is RGB in [0, 1]; these ModelConfig values reproduce the caffe preprocessing inside the model.
IMAGENET_CAFFE_INPUT_MEAN = tuple(m / 255.0 for m in IMAGENET_CAFFE_MEAN_RGB)
IMAGENET_CAFFE_INPUT_STD = (1.0 / 255.0,) * 3


def resnet_spec(backbone: str) -> ResNetSpec:
    if backbone not in RESNET_SPECS:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(RESNET_SPECS)}")
    return RESNET_SPECS[backbone]


def backbone_channels(model_cfg: ModelConfig) -> int:
    """Channels of the layer4 output (2048 for ResNet-50/101, 512 for ResNet-18/34 at base width 64)."""
    return 8 * model_cfg.base_width * resnet_spec(model_cfg.backbone).expansion


def _bn(cfg: ModelConfig, name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=cfg.bn_epsilon, momentum=cfg.bn_momentum, name=name)


def _conv(x, filters: int, kernel: int, stride: int, dilation: int, name: str):
    """A bias-free conv with PyTorch padding ``dilation * (kernel // 2)`` on every side."""
    pad = dilation * (kernel // 2)
    if stride > 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad else "valid"
    return DilatedConv2D(filters, kernel, strides=stride, dilation_rate=dilation, padding=padding,
                         use_bias=False, kernel_initializer="he_normal", name=name)(x)


def _bottleneck(x, cfg: ModelConfig, width: int, stride: int, dilation: int, project: bool, name: str):
    shortcut = x
    y = _conv(x, width, 1, stride, 1, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(_bn(cfg, f"{name}_bn1")(y))
    y = _conv(y, width, 3, 1, dilation, f"{name}_conv2")
    y = layers.ReLU(name=f"{name}_relu2")(_bn(cfg, f"{name}_bn2")(y))
    y = _conv(y, 4 * width, 1, 1, 1, f"{name}_conv3")
    y = _bn(cfg, f"{name}_bn3")(y)
    if project:
        shortcut = _conv(x, 4 * width, 1, stride, 1, f"{name}_downsample_0")
        shortcut = _bn(cfg, f"{name}_downsample_1")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _basic_block(x, cfg: ModelConfig, width: int, stride: int, dilation: int, project: bool, name: str):
    shortcut = x
    y = _conv(x, width, 3, stride, dilation, f"{name}_conv1")
    y = layers.ReLU(name=f"{name}_relu1")(_bn(cfg, f"{name}_bn1")(y))
    y = _conv(y, width, 3, 1, dilation, f"{name}_conv2")
    y = _bn(cfg, f"{name}_bn2")(y)
    if project:
        shortcut = _conv(x, width, 1, stride, 1, f"{name}_downsample_0")
        shortcut = _bn(cfg, f"{name}_downsample_1")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_features(x, model_cfg: ModelConfig, dilated: bool = True):
    """Apply the (dilated) ResNet to a normalised NHWC tensor; returns the layer4 output."""
    spec = resnet_spec(model_cfg.backbone)
    block = _bottleneck if spec.bottleneck else _basic_block
    base = model_cfg.base_width
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(base, 7, strides=2, use_bias=False, kernel_initializer="he_normal", name="conv1")(x)
    x = layers.ReLU(name="relu")(_bn(model_cfg, "bn1")(x))
    x = CeilModeMaxPool2D(name="maxpool")(x)
    schedule = DILATED_SCHEDULE if dilated else CLASSIFICATION_SCHEDULE
    for stage, (n_blocks, (stride, dilation)) in enumerate(zip(spec.blocks, schedule), start=1):
        width = base * 2 ** (stage - 1)
        for i in range(n_blocks):
            x = block(x, model_cfg, width, stride if i == 0 else 1, dilation, project=i == 0,
                      name=f"layer{stage}_{i}")
    return x


def build_resnet(model_cfg: ModelConfig, input_shape=(None, None, 3), dilated: bool = True,
                 name: str = "resnet") -> keras.Model:
    """The backbone alone (no input normalisation): NHWC image -> layer4 features."""
    inputs = keras.Input(input_shape, name="image")
    return keras.Model(inputs, resnet_features(inputs, model_cfg, dilated), name=name)


# --------------------------------------------------------------------------------------------------
# ImageNet initialisation from keras.applications


def _applications_layer_pairs(spec: ResNetSpec):
    """(our layer name, keras.applications layer name) for every weighted backbone layer."""
    yield "conv1", "conv1_conv"
    yield "bn1", "conv1_bn"
    for stage, n_blocks in enumerate(spec.blocks, start=1):
        for i in range(n_blocks):
            ours, theirs = f"layer{stage}_{i}", f"conv{stage + 1}_block{i + 1}"
            for k in (1, 2, 3):
                yield f"{ours}_conv{k}", f"{theirs}_{k}_conv"
                yield f"{ours}_bn{k}", f"{theirs}_{k}_bn"
            if i == 0:
                yield f"{ours}_downsample_0", f"{theirs}_0_conv"
                yield f"{ours}_downsample_1", f"{theirs}_0_bn"


def load_imagenet_backbone(model: keras.Model, backbone: str, source="imagenet") -> None:
    """Copy a ``keras.applications`` ResNet-50/101 into the backbone layers of ``model`` (a segmenter or a
    :func:`build_resnet` model), in place.

    ``source`` is a ``keras.applications.ResNet50/ResNet101`` model, a path to its weights file, or
    ``"imagenet"`` (Keras downloads the weights to ``~/.keras/models`` on first use; needs internet).

    The copy is exact, not approximate:

    * keras.applications convs have a bias and ours (official) do not; every conv there is followed by
      its BN, so the bias is folded into the BN moving mean (``mean - b``; batch statistics ignore it).
    * its BN epsilon is 1.001e-5, ours 1e-5: the difference is added to the moving variance.
    * it expects BGR input; the stem kernel's input channels are reversed so the model takes RGB.
      Its caffe preprocessing (0..255 minus the ImageNet mean) must be set in the ModelConfig:
      ``input_mean=IMAGENET_CAFFE_INPUT_MEAN``, ``input_std=IMAGENET_CAFFE_INPUT_STD``.
    """
    spec = resnet_spec(backbone)
    if not spec.bottleneck:
        raise ValueError(f"keras.applications has no {backbone}; "
                         "ImageNet weights exist for resnet50/resnet101")
    if isinstance(source, keras.Model):
        reference = source
    else:
        constructor = keras.applications.ResNet50 if backbone == "resnet50" else keras.applications.ResNet101
        reference = constructor(include_top=False, weights=str(source), input_shape=(None, None, 3))
    if model.get_layer("conv1").filters != 64:
        raise ValueError(f"ImageNet weights need model.base_width 64, the model has "
                         f"{model.get_layer('conv1').filters}")
    for ours_name, theirs_name in _applications_layer_pairs(spec):
        try:
            theirs = reference.get_layer(theirs_name)
        except ValueError as err:
            raise ValueError(f"{reference.name} has no layer {theirs_name!r}: not a keras.applications "
                             f"{backbone}") from err
        ours = model.get_layer(ours_name)
        if isinstance(ours, layers.Conv2D):
            kernel, bias = theirs.get_weights()
            if ours_name == "conv1":
                kernel = kernel[:, :, ::-1, :]
            ours.set_weights([kernel])
            pending_bias = bias
        else:
            gamma, beta, mean, var = theirs.get_weights()
            var = var + (theirs.epsilon - ours.epsilon)
            ours.set_weights([gamma, beta, mean - pending_bias, np.maximum(var, 0.0)])
