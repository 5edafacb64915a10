"""Evaluation of a model and of prediction folders on a tiny generated Cityscapes-layout split.

Expected values come from independent computations: the stand-in model's outputs upsampled with the
NumPy bilinear of ``test_confusion`` and scored by formula, and prediction PNGs whose confusion is known.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from cpsl_tf.data.datasets import DatasetError, list_samples, load_label
from cpsl_tf.data.pipeline import make_eval_dataset
from cpsl_tf.evaluation.cli import main
from cpsl_tf.evaluation.evaluate import EvaluationError, evaluate, evaluate_model, evaluate_predictions
from cpsl_tf.labels import CITYSCAPES_IDS_19, class_names
from cpsl_tf.metrics import confusion_matrix
from tests.evaluation.test_confusion import numpy_bilinear

NAMES = ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"]
HEIGHT, WIDTH = 16, 32
LABEL_IDS = np.array(CITYSCAPES_IDS_19)


def write_cityscapes(root: Path, rng, split: str = "val") -> dict[str, np.ndarray]:
    """Images and labelId PNGs in the Cityscapes layout; returns the class-index ground truth."""
    truth = {}
    for name in NAMES:
        city = name.split("_")[0]
        image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        classes = rng.integers(0, 19, size=(HEIGHT, WIDTH))
        label_ids = LABEL_IDS[classes].astype(np.uint8)
        void = rng.random((HEIGHT, WIDTH)) < 0.1
        label_ids[void] = 0  # "unlabeled" -> ignore
        classes = np.where(void, 255, classes)
        for folder, suffix, data in (("leftImg8bit", "leftImg8bit", image[..., ::-1]),
                                     ("gtFine", "gtFine_labelIds", label_ids)):
            path = root / folder / split / city / f"{name}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), data)
        truth[name] = (image, classes)
    return truth


def standin_model(num_classes: int = 19) -> keras.Model:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.AveragePooling2D(4)(inputs)
    features = keras.layers.Conv2D(8, 1, activation="relu")(x)
    logits = keras.layers.Conv2D(num_classes, 1)(features)
    return keras.Model(inputs, {"logits": logits, "features": features})


def iou_by_formula(conf: np.ndarray, void: np.ndarray) -> np.ndarray:
    tp = np.diag(conf).astype(float)
    union = conf.sum(1) + void + conf.sum(0) - tp
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


@pytest.mark.parametrize("image_size", [None, (12, 24)])
def test_evaluate_model_matches_numpy_protocol(tmp_path, rng, image_size):
    truth = write_cityscapes(tmp_path, rng)
    model = standin_model()
    samples = list_samples("cityscapes", tmp_path, "val", 19, require_labels=True)
    result = evaluate_model(model, samples, 19, image_size=image_size, batch_size=2, align_corners=True)

    conf = np.zeros((19, 19), dtype=np.int64)
    for image, classes in truth.values():
        x = image[np.newaxis].astype(np.float32) / 255.0
        if image_size is not None:
            x = numpy_bilinear(x, image_size, align_corners=True).astype(np.float32)
        logits = keras.ops.convert_to_numpy(model(x)["logits"])
        pred = numpy_bilinear(logits, (HEIGHT, WIDTH), align_corners=True).argmax(-1)[0]
        conf += confusion_matrix(classes, pred, 19)
    np.testing.assert_array_equal(np.array(result["confusion"]), conf)
    assert result["miou"] == pytest.approx(np.nanmean(iou_by_formula(conf, np.zeros(19))))
    assert result["num_images"] == 3 and result["subsets"] == {}


def test_one_loop_scores_logits_and_class_maps_of_other_sizes(tmp_path, rng):
    """``evaluate``: logits are upsampled bilinearly before the argmax, class maps resized with the nearest
    rule (PyTorch's legacy ``floor(d * in / out)``), each named prediction with its own confusion matrix."""
    truth = write_cityscapes(tmp_path, rng)
    samples = list_samples("cityscapes", tmp_path, "val", 19, require_labels=True)
    dataset = make_eval_dataset(samples, (12, 24), 2, 19, load_label=load_label, scale_first=True)
    logits = {}

    def predict(images):
        out = rng.normal(size=(images.shape[0], 4, 6, 19)).astype(np.float32)
        logits[len(logits)] = out
        return {"logits": out, "class_map": out.argmax(-1)}

    confusions = evaluate(predict, dataset, 19, align_corners=False)
    expected_logits = np.zeros((19, 19), np.int64)
    expected_maps = np.zeros((19, 19), np.int64)
    rows, cols = np.arange(HEIGHT) * 4 // HEIGHT, np.arange(WIDTH) * 6 // WIDTH
    outputs = np.concatenate([logits[0], logits[1]])  # two batches: 2 images, then 1
    for out, (_, classes) in zip(outputs, truth.values()):
        pred = numpy_bilinear(out[np.newaxis], (HEIGHT, WIDTH), align_corners=False).argmax(-1)[0]
        expected_logits += confusion_matrix(classes, pred, 19)
        expected_maps += confusion_matrix(classes, out.argmax(-1)[rows][:, cols], 19)
    np.testing.assert_array_equal(confusions["logits"], expected_logits)
    np.testing.assert_array_equal(confusions["class_map"], expected_maps)


def test_unreadable_image_is_named(tmp_path, rng):
    write_cityscapes(tmp_path, rng)
    samples = list_samples("cityscapes", tmp_path, "val", 19)
    data = samples[1].image.read_bytes()
    samples[1].image.write_bytes(data[:len(data) // 3])
    with pytest.raises(DatasetError, match=f"{samples[1].image}: not a readable image"):
        evaluate_model(standin_model(), samples, 19, image_size=(12, 24))


def write_predictions(folder: Path, truth, rng, pred_format: str):
    """Predictions = truth with some pixels changed to another class or to void; returns the counts."""
    conf = np.zeros((19, 19), dtype=np.int64)
    void = np.zeros(19, dtype=np.int64)
    for index, (name, (_, classes)) in enumerate(truth.items()):
        pred = np.where(classes == 255, 0, classes)
        changed = rng.random(pred.shape) < 0.3
        pred[changed] = rng.integers(0, 19, size=changed.sum())
        voided = rng.random(pred.shape) < 0.1
        valid = classes != 255
        conf += confusion_matrix(classes[valid & ~voided], pred[valid & ~voided], 19)
        void += np.bincount(classes[valid & voided], minlength=19)
        if pred_format == "labelid":
            stored = np.where(voided, 1, LABEL_IDS[pred])  # labelId 1 (ego vehicle) is no class
            path = folder / name.split("_")[0] / f"{name}_leftImg8bit.png"
        else:
            stored = np.where(voided, 255, pred)
            path = folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), stored.astype(np.uint8))
        if index == 0:
            (folder / "notes.txt").write_text("not a prediction")
    return conf, void


@pytest.mark.parametrize("pred_format", ["labelid", "trainid"])
def test_prediction_folder_cli_writes_known_scores(tmp_path, rng, capsys, pred_format):
    truth = write_cityscapes(tmp_path / "cityscapes", rng)
    conf, void = write_predictions(tmp_path / "preds", truth, rng, pred_format)
    out = tmp_path / "results.json"
    assert main(["--predictions", str(tmp_path / "preds"), "--dataset", "cityscapes",
                 "--root", str(tmp_path / "cityscapes"), "--split", "val", "--pred-format", pred_format,
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    np.testing.assert_array_equal(np.array(result["confusion"]), conf)
    assert result["void_predictions"] == void.tolist()
    iou = iou_by_formula(conf, void)
    assert result["miou"] == pytest.approx(np.nanmean(iou))
    assert result["pa"] == pytest.approx(np.trace(conf) / (conf.sum() + void.sum()))
    assert [row["iou"] for row in result["classes"]] == pytest.approx(
        [None if np.isnan(v) else v for v in iou])
    printed = capsys.readouterr().out
    assert "mIoU (19)" in printed and f"{100 * result['miou']:6.2f}" in printed


def test_missing_and_mismatched_predictions_are_named(tmp_path, rng):
    truth = write_cityscapes(tmp_path / "cityscapes", rng)
    samples = list_samples("cityscapes", tmp_path / "cityscapes", "val", 19)
    preds = tmp_path / "preds"
    write_predictions(preds, truth, rng, "trainid")
    (preds / f"{NAMES[1]}.png").unlink()
    with pytest.raises(EvaluationError, match=f"no prediction PNG.*{NAMES[1]}"):
        evaluate_predictions(preds, samples, 19, "trainid")
    cv2.imwrite(str(preds / f"{NAMES[1]}.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(EvaluationError, match=f"{NAMES[1]}.png: prediction is 8x8"):
        evaluate_predictions(preds, samples, 19, "trainid")


def test_checkpoint_cli_with_sidecar_metadata(tmp_path, rng, monkeypatch):
    """The --checkpoint path with a stand-in loader that follows load_segmenter's contract."""
    truth = write_cityscapes(tmp_path / "cityscapes", rng)
    model = standin_model()
    meta = {"model": {"align_corners": False}, "num_classes": 19, "class_names": [f"c{i}" for i in range(19)]}
    loaded = []
    fake = types.ModuleType("cpsl_tf.models.checkpoint")
    fake.load_segmenter = lambda path: loaded.append(path) or (model, meta)
    monkeypatch.setitem(sys.modules, "cpsl_tf.models.checkpoint", fake)
    checkpoint = tmp_path / "run" / "model.weights.h5"
    assert main(["--checkpoint", str(checkpoint), "--dataset", "cityscapes",
                 "--root", str(tmp_path / "cityscapes"), "--quiet"]) == 0
    assert loaded == [str(checkpoint)]
    result = json.loads((tmp_path / "run" / "model.eval-cityscapes-val.json").read_text())
    conf = np.zeros((19, 19), dtype=np.int64)
    for image, classes in truth.values():
        logits = keras.ops.convert_to_numpy(model(image[np.newaxis].astype(np.float32) / 255.0)["logits"])
        conf += confusion_matrix(classes, numpy_bilinear(logits, (HEIGHT, WIDTH), False).argmax(-1)[0], 19)
    np.testing.assert_array_equal(np.array(result["confusion"]), conf)
    assert result["classes"][0]["name"] == "c0" and result["align_corners"] is False


def test_checkpoint_cli_takes_settings_from_config(tmp_path, rng, monkeypatch):
    """--config supplies dataset, root, input size, align_corners and batch size."""
    truth = write_cityscapes(tmp_path / "target", rng)
    model = standin_model()
    fake = types.ModuleType("cpsl_tf.models.checkpoint")
    fake.load_segmenter = lambda path: (model, {"num_classes": 19})
    monkeypatch.setitem(sys.modules, "cpsl_tf.models.checkpoint", fake)
    config = Path(__file__).resolve().parents[2] / "configs" / "bench.json"
    if not config.is_file():
        pytest.skip(f"{config} is not present")
    out = tmp_path / "out.json"
    assert main(["--checkpoint", str(tmp_path / "m.weights.h5"), "--config", str(config),
                 "--set", f"data.target_root={tmp_path / 'target'}", "--set", "data.target_size=[12,24]",
                 "--set", "model.align_corners=false", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    conf = np.zeros((19, 19), dtype=np.int64)
    for image, classes in truth.values():
        x = numpy_bilinear(image[np.newaxis].astype(np.float32) / 255.0, (12, 24), True).astype(np.float32)
        logits = keras.ops.convert_to_numpy(model(x)["logits"])
        conf += confusion_matrix(classes, numpy_bilinear(logits, (HEIGHT, WIDTH), False).argmax(-1)[0], 19)
    np.testing.assert_array_equal(np.array(result["confusion"]), conf)
    assert result["image_size"] == [12, 24] and result["dataset"] == "cityscapes"


def test_checkpoint_cli_with_real_segmenter(tmp_path, rng):
    """A tiny real DeepLab-v2 saved with its sidecar, evaluated through scripts/evaluate.py's main."""
    checkpoint_module = pytest.importorskip("cpsl_tf.models.checkpoint")
    from cpsl_tf.config import Config, shrink
    from cpsl_tf.models.segmenter import build_segmenter

    truth = write_cityscapes(tmp_path / "cityscapes", rng)
    model_cfg = shrink(Config()).model
    keras.utils.set_random_seed(0)
    model = build_segmenter(model_cfg, 19)
    path = tmp_path / "tiny.weights.h5"
    checkpoint_module.save_model_checkpoint(
        model, path, {"model": model_cfg, "num_classes": 19, "class_names": list(class_names(19))})
    out = tmp_path / "out.json"
    assert main(["--checkpoint", str(path), "--dataset", "cityscapes", "--root", str(tmp_path / "cityscapes"),
                 "--batch-size", "2", "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    conf = np.zeros((19, 19), dtype=np.int64)
    for image, classes in truth.values():
        logits = keras.ops.convert_to_numpy(
            model(image[np.newaxis].astype(np.float32) / 255.0, training=False)["logits"])
        pred = numpy_bilinear(logits, (HEIGHT, WIDTH), model_cfg.align_corners).argmax(-1)[0]
        conf += confusion_matrix(classes, pred, 19)
    np.testing.assert_array_equal(np.array(result["confusion"]), conf)
