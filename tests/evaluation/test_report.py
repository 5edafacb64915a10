"""The run report on a tiny fake run folder: files, numbers from results.json, Fig. 6 distributions
against independent NumPy counts, the prediction protocol of the examples, and partial runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from cpsl_tf.config import load_config, save_config, shrink
from cpsl_tf.data.pseudo_store import PseudoLabelWriter
from cpsl_tf.evaluation.report import build_report, main
from cpsl_tf.evaluation.report.model_sections import predict_class_map
from cpsl_tf.labels import CITYSCAPES_IDS_19, class_names
from cpsl_tf.models.checkpoint import save_model_checkpoint
from cpsl_tf.models.segmenter import build_segmenter
from tests.evaluation.test_confusion import numpy_bilinear

HEIGHT, WIDTH = 16, 32
LABEL_IDS = np.array(CITYSCAPES_IDS_19)
# Skewed class frequencies, so that the distribution has rare and absent classes.
CLASS_WEIGHTS = np.array([40, 20, 15, 0, 0, 3, 1, 1, 10, 0, 5, 2, 1, 2, 0, 0, 0, 0.5, 0.5], dtype=float)


def write_split(root: Path, split: str, count: int, rng) -> dict[str, np.ndarray]:
    """Cityscapes-layout images and labelId PNGs; returns class indices (255 = ignore) by name."""
    truth = {}
    for k in range(count):
        city = ("aachen", "bremen")[k % 2]
        name = f"{city}_{k:06d}_000019"
        classes = rng.choice(19, size=(HEIGHT, WIDTH), p=CLASS_WEIGHTS / CLASS_WEIGHTS.sum())
        label_ids = LABEL_IDS[classes].astype(np.uint8)
        void = rng.random((HEIGHT, WIDTH)) < 0.1
        label_ids[void] = 0
        image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        for folder, suffix, data in (("leftImg8bit", "leftImg8bit", image), ("gtFine", "gtFine_labelIds",
                                                                              label_ids)):
            path = root / folder / split / city / f"{name}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), data)
        truth[name] = np.where(void, 255, classes)
    return truth


def tiny_config(target_root: Path, **model_changes):
    cfg = shrink(load_config(None))
    return dataclasses.replace(
        cfg, name="tiny",
        data=dataclasses.replace(cfg.data, target="cityscapes", target_root=str(target_root),
                                 target_size=[HEIGHT, WIDTH]),
        model=dataclasses.replace(cfg.model, **model_changes))


def save_stage_model(cfg, run: Path, stage: str) -> None:
    model = build_segmenter(cfg.model, 19)
    save_model_checkpoint(model, run / stage / "model.weights.h5",
                          {"model": cfg.model, "num_classes": 19, "class_names": list(class_names(19))})


def stage_result(rng, miou: float) -> dict:
    iou = rng.random(19).tolist()
    iou[3] = None  # a class absent from ground truth and prediction
    return {"miou": miou, "mpa": miou + 0.1, "pa": 0.8, "iou": iou, "acc": rng.random(19).tolist(),
            "seconds": 75.0}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """warm-up, pseudo and CPSL finished; the distillation rounds never ran."""
    rng = np.random.default_rng(1)
    tmp = tmp_path_factory.mktemp("report")
    target = tmp / "target"
    train_truth = write_split(target, "train", 5, rng)
    val_truth = write_split(target, "val", 3, rng)
    run = tmp / "run"
    cfg = tiny_config(target)
    save_config(cfg, run / "config.json")
    results = {"stages": {"warmup": stage_result(rng, 0.3125), "cpsl": stage_result(rng, 0.4271)}}
    (run / "results.json").write_text(json.dumps(results))
    for stage in ("warmup", "pseudo", "cpsl"):
        (run / stage).mkdir(parents=True, exist_ok=True)
        (run / stage / "done.json").write_text("{}")
    for stage in ("warmup", "cpsl"):
        save_stage_model(cfg, run, stage)
        entries = [{"step": s, "miou": 0.2 * s, "mpa": 0.2 * s + 0.05, "pa": 0.5} for s in (1, 2)]
        # A resumed stage may log a step twice (the later entry counts) and a crash may cut a line.
        lines = [json.dumps(e) for e in entries]
        lines += [json.dumps(dict(entries[-1], miou=0.55)), '{"step": 6, "mi']
        (run / stage / "eval_history.jsonl").write_text("\n".join(lines) + "\n")
    logits = rng.normal(size=(len(train_truth), 2, 4, 19)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    with PseudoLabelWriter(run / "pseudo" / "soft", 19, (2, 4)) as writer:
        for name, p in zip(train_truth, probs):
            writer.add(name, p.astype(np.float32))
    delta_pseudo = rng.dirichlet(np.ones(19))
    # The head: each class turned by a known angle towards a random direction orthogonal to its start.
    start = rng.normal(size=(19, 32))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    side = rng.normal(size=(19, 32))
    side -= (side * start).sum(1, keepdims=True) * start
    side /= np.linalg.norm(side, axis=1, keepdims=True)
    turned = rng.uniform(0.5, 40, 19)
    radians = np.radians(turned)[:, None]
    moved = 2.0 * (np.cos(radians) * start + np.sin(radians) * side)
    np.savez(run / "cpsl" / "self_labeling.npz", initial_prototypes=start, prototypes=moved,
             momentum_prototypes=moved, delta_start=np.full(19, 1 / 19), delta_pseudo=delta_pseudo)
    with open(run / "cpsl" / "eval_history.jsonl", "a") as history:
        history.write(json.dumps({"step": 7, "miou": 0.5, "mpa": 0.6, "pa": 0.7, "head_travel": 12.5,
                                  "head_travel_max": 30.25, "delta_shift": 0.0625}) + "\n")
    build_report(run, examples=2)
    return {"run": run, "results": results["stages"], "train": train_truth, "val": val_truth,
            "probs": probs, "delta_pseudo": delta_pseudo, "turned": turned}


def test_report_files_and_numbers(fake_run):
    out = fake_run["run"] / "report"
    for name in ("report.md", "report.html", "per_class_iou.png", "class_distribution.png",
                 "training_curves.png", "confusion.png", "examples.png", "class_distribution.json",
                 "confusion.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    for stage, r in fake_run["results"].items():
        start = f"| {stage} | {100 * r['miou']:.2f} |"
        row = next(line for line in md.splitlines() if line.startswith(start))
        assert f"| {100 * r['mpa']:.2f} | {100 * r['pa']:.2f} |" in row
        assert "1.2 min" in row
    road = next(line for line in md.splitlines() if line.startswith("| road |"))
    assert road == ("| road | " + " | ".join(f"{100 * r['iou'][0]:.1f}" for r in fake_run["results"].values())
                    + " |")
    assert next(line for line in md.splitlines() if line.startswith("| wall |")) == "| wall | n/a | n/a |"
    missing = md.split("## Missing")[1].split("\n## ")[0]
    assert "`distill1`" in missing and "`distill2`" in missing
    # Curves: duplicate step 2 counted once with its later value, the cut line skipped.
    assert "| cpsl | 3 | 20.00 | 55.00 (step 2) | 50.00 | 42.71 |" in md
    html = (out / "report.html").read_text()
    assert "<img src='class_distribution.png'" in html and f"{100 * 0.4271:.2f}" in html


def test_head_travel_is_the_angle_each_class_turned(fake_run):
    out = fake_run["run"] / "report"
    assert (out / "head_travel.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    section = md.split("## Self-labeling mechanism")[1].split("\n## ")[0]
    for name, angle in zip(("road", "sidewalk", "building"), fake_run["turned"]):
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        assert row.startswith(f"| {name} | {angle:.2f} | {angle:.2f} |"), row
    assert f"median {np.median(fake_run['turned']):.2f} degrees" in section
    assert "| 7 | 12.50 | 30.25 | 0.0625 | 50.00 |" in section


def test_class_distributions_match_numpy(fake_run):
    record = json.loads((fake_run["run"] / "report" / "class_distribution.json").read_text())
    truth = np.concatenate([t.ravel() for t in fake_run["train"].values()])
    counts = np.bincount(truth[truth != 255], minlength=19)
    np.testing.assert_array_equal(record["ground_truth"]["counts"], counts)
    np.testing.assert_allclose(record["ground_truth"]["distribution"], counts / counts.sum())
    assert record["ground_truth"]["images"] == 5
    hard = np.bincount(fake_run["probs"].argmax(-1).ravel(), minlength=19)
    np.testing.assert_allclose(record["self_training"]["distribution"], hard / hard.sum())
    np.testing.assert_allclose(record["cpsl_rectified"]["distribution"], fake_run["delta_pseudo"])


def test_confusion_of_last_stage_counts_every_valid_val_pixel(fake_run):
    record = json.loads((fake_run["run"] / "report" / "confusion.json").read_text())
    assert record["stage"] == "cpsl" and record["images"] == 3
    truth = np.concatenate([t.ravel() for t in fake_run["val"].values()])
    np.testing.assert_array_equal(np.sum(record["confusion"], axis=1),
                                  np.bincount(truth[truth != 255], minlength=19))


@pytest.mark.parametrize("align_corners", [True, False])
def test_predict_class_map_follows_the_evaluation_protocol(tmp_path, rng, align_corners):
    cfg = tiny_config(tmp_path, align_corners=align_corners)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, target_size=[24, 40]))
    model = build_segmenter(cfg.model, 19)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    pred = predict_class_map(model, image, cfg, (HEIGHT, WIDTH))
    x = numpy_bilinear(image[np.newaxis] / 255.0, (24, 40), align_corners=True).astype(np.float32)
    logits = keras.ops.convert_to_numpy(model(x, training=False)["logits"])
    expected = numpy_bilinear(logits, (HEIGHT, WIDTH), align_corners).argmax(-1)[0]
    assert pred.shape == (HEIGHT, WIDTH) and pred.dtype == np.uint8
    assert np.mean(pred == expected) > 0.98  # float rounding may flip near-ties only


def test_partial_run_without_models(tmp_path, rng, capsys):
    write_split(tmp_path / "target", "train", 2, rng)
    run = tmp_path / "run"
    save_config(tiny_config(tmp_path / "target"), run / "config.json")
    (run / "results.json").write_text(json.dumps({"stages": {"warmup": stage_result(rng, 0.25)}}))
    assert main([str(run), "--no-model", "--max-images", "1"]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "| warmup | 25.00 |" in md
    missing = md.split("## Missing")[1].split("\n## ")[0]
    for expected in ("`cpsl`", "self-training pseudo-label distribution", "rectified-label distribution",
                     "--no-model"):
        assert expected in missing
    record = json.loads((run / "report" / "class_distribution.json").read_text())
    assert record["ground_truth"]["images"] == 1 and record["ground_truth"]["images_total"] == 2
    assert not (run / "report" / "confusion.png").exists()


def test_not_a_run_folder(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "config.json does not exist" in capsys.readouterr().err
