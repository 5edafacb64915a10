"""evaluate, export and predict take what they need from the checkpoint's run (its config.json beside the
stage folder, else the sidecar): input size, target dataset, root and split; flags override; one line says
what was used. A run folder is read from any working folder, and a target without labels is not scored."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from cpsl_tf.config import Config, save_config
from cpsl_tf.evaluation.cli import main as evaluate
from cpsl_tf.labels import CITYSCAPES_IDS_19
from tests.evaluation.test_evaluate import write_cityscapes
from tests.export.conftest import tiny_model_and_meta
from tests.scripts.test_help import load_script

RUN_SIZE = [24, 48]  # the run's data.target_size and export size; the images are 16x32
NORMALISATION = "normalisation mean [0.0, 0.0, 0.0] std [1.0, 1.0, 1.0] (inside the model)"


def write_run(checkout, name: str, data: dict, model_and_meta) -> tuple:
    """``<checkout>/runs/<name>/warmup/model.weights.h5`` of a run whose config.json holds ``data`` as a
    run folder written before the roots were recorded absolute (relative to ``checkout``)."""
    from cpsl_tf.models.checkpoint import save_model_checkpoint

    cfg = Config(name=name)
    for key, value in {"target_size": RUN_SIZE, **data}.items():
        setattr(cfg.data, key, value)
    cfg.export.height, cfg.export.width = RUN_SIZE
    cfg.eval.batch_size = 2
    run = checkout / "runs" / name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.json")
    model, meta = model_and_meta
    checkpoint = run / "warmup" / "model.weights.h5"
    save_model_checkpoint(model, checkpoint, {**meta, "stage": "warmup", "config": name})
    return run, checkpoint


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A checkout-like folder: a labelled Cityscapes-layout target, unlabelled footage (a folder dataset) with
    labels for some frames kept apart, and one run on each."""
    root = tmp_path_factory.mktemp("checkout")
    write_cityscapes(root / "data" / "tiny-target", np.random.default_rng(0))
    frames, labels = root / "data" / "tiny-footage", root / "data" / "tiny-footage-labels"
    frames.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(2):
        cv2.imwrite(str(frames / f"frame{index}.png"), rng.integers(0, 256, (16, 32, 3), dtype=np.uint8))
        cv2.imwrite(str(labels / f"frame{index}.png"), np.full((16, 32), CITYSCAPES_IDS_19[0], np.uint8))
    model_and_meta = tiny_model_and_meta()
    bench = write_run(root, "tiny", {"target": "cityscapes", "target_root": "data/tiny-target"},
                      model_and_meta)
    footage = write_run(root, "footage", {"target": "folder", "target_root": "data/tiny-footage"},
                        model_and_meta)
    return root, bench, footage


def test_evaluate_runs_as_the_run_did_from_any_working_folder(checkout, tmp_path, monkeypatch, capsys):
    root, (run, checkpoint), _ = checkout
    monkeypatch.chdir(tmp_path)
    assert evaluate(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "scores.json"), "--quiet"]) == 0
    target = root / "data" / "tiny-target"
    assert (f"settings: input 24x48, dataset cityscapes at {target}, split val, batch 2, {NORMALISATION} "
            f"(from {run / 'config.json'} where no flag gave them)") in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["image_size"] == RUN_SIZE and scores["root"] == str(target) and scores["num_images"] == 3


def test_flags_override_the_run(checkout, tmp_path, capsys):
    _, (_, checkpoint), _ = checkout
    out = tmp_path / "scores.json"
    assert evaluate(["--checkpoint", str(checkpoint), "--image-size", "16", "32", "--batch-size", "1",
                     "--limit", "1", "--out", str(out), "--quiet"]) == 0
    assert "settings: input 16x32," in capsys.readouterr().out
    assert json.loads(out.read_text())["image_size"] == [16, 32]


def test_evaluate_without_target_labels_says_there_is_nothing_to_score(checkout, capsys):
    root, _, (_, checkpoint) = checkout
    assert evaluate(["--checkpoint", str(checkpoint), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"error: {root / 'data' / 'tiny-footage'}: none of its 2 folder images has" in err
    assert "nothing to score" in err and "scripts/predict.py" in err and "Traceback" not in err


def test_evaluate_scores_footage_with_labels_for_some_frames(checkout, tmp_path, capsys):
    root, _, (_, checkpoint) = checkout
    out = tmp_path / "scores.json"
    labels = root / "data" / "tiny-footage-labels"
    assert evaluate(["--checkpoint", str(checkpoint), "--label-root", str(labels), "--out", str(out),
                     "--quiet"]) == 0
    assert json.loads(out.read_text())["num_images"] == 2


def test_predict_feeds_a_checkpoint_at_its_runs_size(checkout, tmp_path, capsys):
    root, (run, checkpoint), _ = checkout
    predict = load_script("predict")
    assert predict.checkpoint_input(checkpoint, None)[0] == tuple(RUN_SIZE)
    assert predict.checkpoint_input(checkpoint, [8, 16])[0] == (8, 16)
    image = next((root / "data" / "tiny-target" / "leftImg8bit" / "val").rglob("*.png"))
    assert predict.main(["--model", str(checkpoint), str(image), "--out", str(tmp_path), "--no-overlay"]) == 0
    assert (f"settings: input 24x48, {NORMALISATION} (from {run / 'config.json'} where no flag gave them)"
            in capsys.readouterr().out)


def test_away_from_its_run_a_checkpoint_takes_its_sidecars_size_else_the_default(checkout, tmp_path):
    _, (_, checkpoint), _ = checkout
    predict = load_script("predict")
    moved = tmp_path / "model.weights.h5"
    shutil.copy(checkpoint, moved)
    sidecar = json.loads(checkpoint.with_name("model.json").read_text())
    moved.with_name("model.json").write_text(json.dumps({**sidecar, "input_size": [32, 64]}))
    assert predict.checkpoint_input(moved, None)[0] == (32, 64)
    moved.with_name("model.json").write_text(json.dumps(sidecar))
    size, line = predict.checkpoint_input(moved, None)
    assert size == (1024, 2048) and "input 1024x2048, the default: nothing says this checkpoint's" in line


def test_export_takes_its_size_and_images_from_the_run(checkout, tmp_path, capsys):
    pytest.importorskip("tf2onnx")
    root, (run, checkpoint), _ = checkout
    out = tmp_path / "export"
    assert load_script("export").main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    parity_images = root / "data" / "tiny-target"
    assert f"settings: input 24x48, parity images cityscapes val at {parity_images}" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["shape"][1:3] == RUN_SIZE
