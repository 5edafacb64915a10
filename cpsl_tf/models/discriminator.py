"""Output-space discriminator of the adversarial warm-up (ProDA's ``FCDiscriminator``, docs/official-code.md
section 1.0).

Four 3x3 stride-2 convs (pad 1, bias) with ``width``, 2x, 4x, 8x channels (64 -> 512 officially); ReLU
after the first three, LeakyReLU(0.2) after the fourth; then a 1x1 conv to one channel: a patch map of
"is this a target output" scores (LS-GAN targets: source 0, target 1). Input: softmax probabilities
(B, H, W, num_classes).
"""

from __future__ import annotations

import keras
from keras import layers


def build_discriminator(num_classes: int, width: int = 64, input_shape=None,
                        name: str = "discriminator") -> keras.Model:
    inputs = keras.Input(input_shape or (None, None, num_classes), name="probabilities")
    x = inputs
    for i in range(4):
        # PyTorch pads a stride-2 conv symmetrically; Keras "same" would pad bottom/right only.
        x = layers.ZeroPadding2D(1, name=f"conv{i + 1}_pad")(x)
        x = layers.Conv2D(width * 2**i, 3, strides=2, name=f"conv{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name="leaky_relu")(x) if i == 3 else layers.ReLU(name=f"relu{i + 1}")(x)
    outputs = layers.Conv2D(1, 1, name="classifier", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
