"""Segmenter checkpoints: weights + sidecar round trip and the errors for bad files."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from cpsl_tf.config import ModelConfig
from cpsl_tf.labels import class_names
from cpsl_tf.models.checkpoint import CheckpointError, load_segmenter, save_model_checkpoint
from cpsl_tf.models.segmenter import build_segmenter

NARROW = ModelConfig(backbone="resnet18", base_width=8, head_channels=32, aspp_rates=[2, 3],
                     input_mean=[0.1, 0.2, 0.3])


def _meta(num_classes: int) -> dict:
    return {"model": NARROW, "num_classes": num_classes, "class_names": list(class_names(num_classes)),
            "stage": "warmup"}


def test_round_trip_rebuilds_model_and_weights(tmp_path, rng):
    model = build_segmenter(NARROW, 16, bn_pretrain=True)
    path = tmp_path / "run" / "warmup.weights.h5"
    save_model_checkpoint(model, path, _meta(16))
    sidecar = json.loads((tmp_path / "run" / "warmup.json").read_text())
    assert sidecar["model"] == dataclasses.asdict(NARROW) and sidecar["bn_pretrain"] is True
    assert [p.name for p in (tmp_path / "run").iterdir()] and not list((tmp_path / "run").glob(".*tmp*"))

    loaded, meta = load_segmenter(path, num_classes=16)
    assert meta["stage"] == "warmup" and meta["class_names"][0] == "road"
    x = rng.random((1, 64, 96, 3), dtype=np.float32)
    for key in ("logits", "features"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)[key]),
                                      keras.ops.convert_to_numpy(model(x)[key]))


def test_missing_files_and_class_mismatches_are_clear(tmp_path):
    model = build_segmenter(NARROW, 19)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_segmenter(tmp_path / "nothing.weights.h5")
    with pytest.raises(CheckpointError, match="lacks class_names"):
        save_model_checkpoint(model, tmp_path / "a.weights.h5", {"model": NARROW, "num_classes": 19})
    with pytest.raises(CheckpointError, match="num_classes=16 but the model has 19"):
        save_model_checkpoint(model, tmp_path / "a.weights.h5", _meta(16))

    path = tmp_path / "a.weights.h5"
    save_model_checkpoint(model, path, _meta(19))
    with pytest.raises(CheckpointError, match="19 classes, 16 were expected"):
        load_segmenter(path, num_classes=16)

    sidecar = tmp_path / "a.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "num_classes": 16,
                                   "class_names": list(class_names(16))}))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_segmenter(path)
    sidecar.unlink()
    with pytest.raises(CheckpointError, match="sidecar"):
        load_segmenter(path)
