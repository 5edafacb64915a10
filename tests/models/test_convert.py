"""Official PyTorch checkpoint -> Keras: outputs must match the reference PyTorch network (eval mode)."""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest

from tests.conftest import REFERENCE, REPO

torch = pytest.importorskip("torch", reason="checkpoint conversion needs PyTorch "
                            "(pip install 'cpsl-tf[convert]')")

from cpsl_tf.config import ModelConfig  # noqa: E402
from cpsl_tf.models.checkpoint import load_segmenter  # noqa: E402
from cpsl_tf.models.convert import (  # noqa: E402
    ConversionError,
    assign_state_dict,
    read_official_checkpoint,
    segmenter_from_state_dict,
)
from cpsl_tf.models.segmenter import build_segmenter  # noqa: E402

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
    sys.path.insert(0, str(REFERENCE))
    try:
        import official_dlv2_torch
    finally:
        sys.path.pop(0)
    return official_dlv2_torch


@pytest.fixture(scope="module")
def stage2_state(reference):
    """A random stage-2 state dict (with bn_pretrain); 8 s to make, so made once."""
    return reference.random_state_dict(seed=1, bn_clr=True)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)


def _keras_outputs(model: keras.Model, image: np.ndarray) -> dict:
    out = model(image, training=False)
    return {"out": keras.ops.convert_to_numpy(out["logits"]).transpose(0, 3, 1, 2),
            "feat": keras.ops.convert_to_numpy(out["features"]).transpose(0, 3, 1, 2)}


def _assert_matches(actual: dict, expected: dict) -> None:
    for key in ("out", "feat"):
        assert actual[key].shape == expected[key].shape
        assert np.abs(expected[key]).max() > 0.5  # the reference weights give O(1) outputs
        diff = np.abs(actual[key] - expected[key]).max()
        assert diff <= TOLERANCE, f"{key}: max abs diff {diff:.3g} > {TOLERANCE}"


def test_stage2_checkpoint_with_bn_pretrain_through_the_script(reference, stage2_state, image, tmp_path):
    state = stage2_state
    source = tmp_path / "stage2_best_model.pkl"
    reference.save_checkpoint(str(source), state, seed=1)
    destination = tmp_path / "stage2.weights.h5"

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import convert_checkpoint
    finally:
        sys.path.pop(0)
    assert convert_checkpoint.main([str(source), str(destination)]) == 0

    meta = json.loads((tmp_path / "stage2.json").read_text())
    assert meta["bn_pretrain"] is True and meta["num_classes"] == 19
    assert meta["model"]["backbone"] == "resnet101" and meta["model"]["base_width"] == 64
    assert meta["official_iter"] == 1234 and meta["official_best_iou"] == 0.5
    prototypes = np.load(tmp_path / "stage2.prototypes.npy")
    expected_prototypes = reference.make_checkpoint(state, seed=1)["ResNet101"]["prototypes_ema"]
    np.testing.assert_array_equal(prototypes, expected_prototypes.numpy())

    model, _ = load_segmenter(destination, num_classes=19)
    x_nchw = image.transpose(0, 3, 1, 2)
    expected = reference.reference_forward(state, x_nchw)
    assert expected["out"].shape == (1, 19, *reference.output_hw(64, 96))
    _assert_matches(_keras_outputs(model, image), expected)


def test_warmup_state_dict_without_bn_pretrain_and_16_classes(reference, stage2_state, image):
    state = {k: v.numpy() for k, v in stage2_state.items()
             if not k.endswith("num_batches_tracked") and not k.startswith("bn_pretrain.")}
    state["layer5.head.1.weight"] = state["layer5.head.1.weight"][:16]
    model, model_cfg, num_classes = segmenter_from_state_dict(state)
    assert num_classes == 16 and not any(layer.name == "bn_pretrain" for layer in model.layers)
    assert model_cfg.input_mean == [0.0, 0.0, 0.0] and model_cfg.input_std == [1.0, 1.0, 1.0]
    expected = reference.reference_forward(state, image.transpose(0, 3, 1, 2))
    _assert_matches(_keras_outputs(model, image), expected)

    # A wrong epsilon is caught by the tolerance (the reference README measures 1e-2 for 1e-3).
    for layer in model.layers:
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.epsilon = 1e-3
    with pytest.raises(AssertionError, match="max abs diff"):
        _assert_matches(_keras_outputs(model, image), expected)


def test_module_prefix_and_bare_state_dict(tmp_path):
    state = {"conv1.weight": torch.randn(64, 3, 7, 7), "bn1.running_var": torch.rand(64),
             "bn1.num_batches_tracked": torch.tensor(7)}
    path = tmp_path / "bare.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    read, prototypes, info = read_official_checkpoint(path)
    assert prototypes is None and info == {}
    assert list(read) == ["conv1.weight", "bn1.running_var"]
    np.testing.assert_array_equal(read["conv1.weight"], state["conv1.weight"].numpy())


def test_mismatched_state_dicts_are_named(stage2_state):
    narrow_cfg = ModelConfig(backbone="resnet18", base_width=8, head_channels=32, aspp_rates=[2])
    narrow = build_segmenter(narrow_cfg, 19)
    with pytest.raises(ConversionError, match="with no Keras layer"):
        assign_state_dict(narrow, {k: v.numpy() for k, v in stage2_state.items()})
    bad = {k: v.numpy() for k, v in stage2_state.items()}
    del bad["layer5.conv2d_list.4.0.weight"], bad["layer5.conv2d_list.4.0.bias"]
    del bad["layer5.conv2d_list.4.1.weight"], bad["layer5.conv2d_list.4.1.bias"]
    with pytest.raises(ConversionError, match="4 branches"):
        segmenter_from_state_dict(bad)
