"""A full disk is one message naming the file and the space it needs, and the failed write leaves nothing
behind: no temporary, no partial checkpoint; the previous file and the last good checkpoint stay, and the
same command run again (space freed) finishes. The full disk is simulated: the
write raises ENOSPC as the kernel would, or the free space reads as too small."""

from __future__ import annotations

import errno
import os
import pathlib
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf import io_utils
from cpsl_tf.config import ModelConfig
from cpsl_tf.io_utils import DiskFullError, atomic_write_bytes
from cpsl_tf.labels import class_names
from cpsl_tf.models.checkpoint import load_segmenter, save_model_checkpoint
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.training.cli import main
from cpsl_tf.training.loop import fit_resumable
from tests.faults.conftest import copy_run

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
TINY_MODEL = ModelConfig(backbone="resnet18", base_width=8, head_channels=32, aspp_rates=[1, 2],
                         imagenet_weights=False)


def fill_disk_for(monkeypatch, names: str) -> None:
    """Writes (``Path.write_bytes``) to files whose name matches the regular expression ``names`` fail with
    ENOSPC."""
    write_bytes = pathlib.Path.write_bytes

    def write_until_full(self, data):
        if re.search(names, self.name):
            raise NO_SPACE
        return write_bytes(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_until_full)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith("_temp"))


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_bytes(path, b"previous")
    fill_disk_for(monkeypatch, r"results\.json")
    with pytest.raises(DiskFullError, match=rf"^no space left on the device for {path} \(it needs 8 bytes, "
                       r"[\d.]+ [kMG]?B\w* free there\); free some space and run the same command again$"):
        atomic_write_bytes(path, b"replaced")
    assert path.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_a_write_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(io_utils, "_free_bytes", lambda path: 1000)
    with pytest.raises(DiskFullError, match=r"it needs 2\.5 kB, 1 kB free there"):
        atomic_write_bytes(tmp_path / "shard.bin", bytes(2500))
    assert list(tmp_path.iterdir()) == []


def test_a_model_on_a_full_disk_is_one_error_and_no_file(tmp_path, monkeypatch, rng):
    """HDF5 writing to a full disk used to end in a segmentation fault at exit: the weights file is now built
    in memory, and only its plain write meets the disk."""
    model = build_segmenter(TINY_MODEL, 19)
    meta = {"model": TINY_MODEL, "num_classes": 19, "class_names": list(class_names(19))}
    path = tmp_path / "warmup" / "model.weights.h5"
    with monkeypatch.context() as patch:
        fill_disk_for(patch, r"model\.weights\.h5")
        with pytest.raises(DiskFullError, match=rf"no space left on the device for {path} \(it needs "):
            save_model_checkpoint(model, path, meta)
    assert list(path.parent.iterdir()) == []
    save_model_checkpoint(model, path, meta)
    loaded, _ = load_segmenter(path, 19)
    x = rng.random((1, 32, 48, 3), dtype=np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)["logits"]),
                                  keras.ops.convert_to_numpy(model(x)["logits"]))


class OneWeight(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = self.add_weight(shape=(1000,), initializer="ones", name="w")

    def train_step(self, data):
        self.w.assign(self.w * 0.5)
        return {"loss": tf.constant(1.0)}


def test_a_checkpoint_on_a_full_disk_leaves_the_last_good_one(tmp_path, monkeypatch):
    """TensorFlow reports ENOSPC as a ResourceExhaustedError after writing part of ``ckpt-<N>_temp/``."""
    save = tf.train.CheckpointManager.save

    def save_until_full(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:
            partial = Path(manager.directory) / "ckpt-4_temp"
            partial.mkdir()
            (partial / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_bytes(b"partial")
            raise tf.errors.ResourceExhaustedError(None, None, f"{partial}/part-0: No space left on device")
        return save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_until_full)
    trainer = OneWeight()
    trainer.compile(optimizer="sgd")
    checkpoints = tmp_path / "checkpoints"
    expected = rf"^no space left on the device for {checkpoints / 'ckpt-4'} \(it needs 4 kB, "
    with pytest.raises(DiskFullError, match=expected):
        fit_resumable(trainer, lambda start: tf.data.Dataset.from_tensors(0.0).repeat(), 6, tmp_path,
                      {"trainer": trainer}, checkpoint_every=2, verbose=0)
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-2")
    assert leftovers(tmp_path) == [] and not list(checkpoints.glob("ckpt-4*"))


def test_a_store_shard_on_a_full_disk_is_named_and_the_rerun_finishes(trained_run, tmp_path, monkeypatch,
                                                                      capsys):
    config, run = trained_run
    run = copy_run(run, tmp_path / "run")
    store = run / "pseudo" / "soft"
    command = ["--config", str(config), "--run-dir", str(run), "--stage", "pseudo"]
    with monkeypatch.context() as patch:
        fill_disk_for(patch, r"^\.shard-")
        assert main(command) == 2
    err = capsys.readouterr().err
    assert re.search(rf"error: no space left on the device for {store}/shard-\w+-00000\.bin \(it needs "
                     r"[\d.]+ kB, [\d.]+ [kMG]B free there\); free some space and run the same command again",
                     err), err
    assert "Traceback" not in err
    assert leftovers(run) == [] and not (store / "index.json").exists()
    assert main(command) == 0
    assert (store / "index.json").is_file() and leftovers(run) == []
