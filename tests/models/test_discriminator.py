"""The warm-up discriminator against a PyTorch transcription of the official FCDiscriminator."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cpsl_tf.models.discriminator import build_discriminator


def test_matches_the_official_layer_stack(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the official discriminator")
    nn = torch.nn
    width, classes = 8, 19
    convs = [nn.Conv2d(classes if i == 0 else width * 2 ** (i - 1), width * 2**i, 3, stride=2, padding=1)
             for i in range(4)]
    classifier = nn.Conv2d(8 * width, 1, 1)

    def official(x):
        for i, conv in enumerate(convs):
            x = nn.functional.leaky_relu(conv(x), 0.2) if i == 3 else torch.relu(conv(x))
        return classifier(x)

    model = build_discriminator(classes, width=width)
    for i, conv in enumerate([*convs, classifier]):
        name = "classifier" if i == 4 else f"conv{i + 1}"
        with torch.no_grad():
            conv.bias.normal_(0, 0.1)
        model.get_layer(name).set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                           conv.bias.detach().numpy()])
    # Even sizes: PyTorch's symmetric padding differs from Keras' "same" here.
    logits = rng.normal(size=(2, 64, 112, classes)).astype("float32")
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ours = keras.ops.convert_to_numpy(model(probabilities))
    with torch.no_grad():
        theirs = official(torch.from_numpy(probabilities).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape == (2, 4, 7, 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_width_scales_channels():
    model = build_discriminator(16, width=4)
    assert [model.get_layer(f"conv{i}").filters for i in range(1, 5)] == [4, 8, 16, 32]
    assert model.get_layer("leaky_relu").negative_slope == pytest.approx(0.2)
