"""A real-time student: MobileNetV3-Large from ``keras.applications`` with the LR-ASPP head.

The design is torchvision's ``lraspp_mobilenet_v3_large`` (Howard et al., "Searching for MobileNetV3",
section 6.3), built on Keras' own maintained backbone rather than a hand-written one:

- backbone: ``keras.applications.MobileNetV3Large(include_top=False)``, which takes inputs in [-1, 1]
  (its ``include_preprocessing`` rescaling is off; the model rescales RGB [0, 1] itself, so the exported
  graph holds the whole preprocessing, as the teacher's does). ``width`` is Keras' ``alpha``; ImageNet
  weights exist for widths 0.75 and 1.0 only (downloaded by Keras, so they need internet);
- low-level features: the output of block ``expanded_conv_5`` (stride 8, 40 channels at width 1);
- high-level features: the backbone's last activation (stride 32, 960 channels at width 1). torchvision
  dilates the last stage to stride 16 instead; ``keras.applications`` offers no dilation, and the head
  upsamples either way;
- LR-ASPP: ``relu(bn(conv1x1(high))) * sigmoid(conv1x1(global_avg_pool(high)))``, upsampled bilinearly to
  the low-level size with the project's resize convention (align_corners, as everywhere else here;
  torchvision does not align corners), then ``conv1x1(low) + conv1x1(that)`` gives the logits at stride 8.

Batch normalisation: Keras' MobileNetV3 builds its BatchNormalization layers with momentum 0.999, a moving
average over about 1000 steps. A student distilled for a few hundred steps from random initialisation then
evaluates with statistics far from the ones it trained with (on the benchmark: 33 % pixel accuracy in
inference mode against 70 % with batch statistics, after 500 steps). ``bn_momentum`` sets every BN layer of
the student, backbone and head, to the momentum the teacher trains with (``model.bn_momentum``).

``build_lraspp_student`` returns a functional model with the segmenter's contract for inference: RGB float32
in [0, 1], output ``{"logits": (B, h, w, K)}`` in float32 at stride 8, not upsampled. h = H / 8 when H is a
multiple of 8; otherwise ``ceil(H / 2) // 4``, since Keras' MobileNetV3 pads its stem "same" and its later
stride-2 convolutions for even sizes (the teacher's ceil-mode arithmetic differs: distillation targets are
resized to the student's size).
"""

from __future__ import annotations

import keras
from keras import layers

from cpsl_tf.models.layers import ResizeLike

LOW_LEVEL_BLOCK = "expanded_conv_5_add"
# The normalisation inside the graph, as the project's (x - mean) / std: x * 2 - 1.
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
IMAGENET_WIDTHS = (0.75, 1.0)


def build_lraspp_student(num_classes: int, *, width: float = 1.0, head_channels: int = 128,
                         bn_momentum: float = 0.999, imagenet_weights: bool = False,
                         input_shape=(None, None, 3), name: str = "student") -> keras.Model:
    """MobileNetV3-Large + LR-ASPP for ``num_classes`` classes (see the module docstring)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if imagenet_weights and width not in IMAGENET_WIDTHS:
        raise ValueError(f"ImageNet weights of MobileNetV3-Large exist for widths {IMAGENET_WIDTHS}, "
                         f"not {width}")
    inputs = keras.Input(input_shape, name="image")
    scaled = layers.Rescaling(2.0, offset=-1.0, name="to_unit_range")(inputs)
    backbone = keras.applications.MobileNetV3Large(
        input_tensor=scaled, alpha=width, include_top=False, include_preprocessing=False,
        weights="imagenet" if imagenet_weights else None)
    low = backbone.get_layer(LOW_LEVEL_BLOCK).output
    high = backbone.output

    branch = layers.Conv2D(head_channels, 1, use_bias=False, name="lraspp_cbr_conv")(high)
    branch = layers.BatchNormalization(name="lraspp_cbr_bn")(branch)
    branch = layers.ReLU(name="lraspp_cbr_relu")(branch)
    scale = layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_scale_pool")(high)
    scale = layers.Conv2D(head_channels, 1, use_bias=False, activation="sigmoid",
                          name="lraspp_scale_conv")(scale)
    attended = layers.Multiply(name="lraspp_attention")([branch, scale])
    attended = ResizeLike(name="lraspp_upsample")([attended, low])
    logits = layers.Add(name="lraspp_sum")([
        layers.Conv2D(num_classes, 1, name="lraspp_low_classifier")(low),
        layers.Conv2D(num_classes, 1, name="lraspp_high_classifier")(attended)])
    outputs = {"logits": layers.Activation("linear", dtype="float32", name="logits")(logits)}
    model = keras.Model(inputs, outputs, name=name)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    return model
