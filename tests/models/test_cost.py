"""Float operations counted from the graph, against the figure Keras documents for MobileNetV3-Large."""

from __future__ import annotations

import keras

from cpsl_tf.models.cost import count_flops

# keras.applications' MobileNetV3 table: mobilenet_v3_large_1.0_224, 217 M multiply-adds.
MOBILENET_V3_LARGE_224_MACS = 217e6


def test_mobilenet_v3_large_costs_what_keras_documents():
    model = keras.applications.MobileNetV3Large(input_shape=(224, 224, 3), weights=None)
    flops = count_flops(model, (224, 224))
    # Two operations per multiply-add; the profiler also counts bias adds and activations (a few percent).
    assert 1.0 <= flops / (2 * MOBILENET_V3_LARGE_224_MACS) <= 1.05


def test_cost_grows_with_the_pixels():
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    small, large = count_flops(model, (16, 16)), count_flops(model, (32, 64))
    assert large == 8 * small
    assert small >= 2 * 16 * 16 * 4 * 27  # 27 multiply-adds per output value
