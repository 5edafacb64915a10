"""The sections of the report that run the stage models on target val: the confusion matrix of the last
stage's model and the qualitative examples of paper Fig. 3. ``--no-model`` skips both."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cpsl_tf.config import Config
from cpsl_tf.data import datasets
from cpsl_tf.evaluation import plots
from cpsl_tf.evaluation.report.reading import RunFolder, target_samples
from cpsl_tf.evaluation.report.rendering import ReportFolder, bullets, figure, heading, percent
from cpsl_tf.evaluation.report.sections import evenly_spaced
from cpsl_tf.io_utils import atomic_write_json
from cpsl_tf.labels import colorize, palette

TOP_CONFUSIONS = 5
# The pixels a model gets wrong in the examples' error column.
ERROR_COLOUR = (255, 0, 0)


def _load_model(run: RunFolder, stage: str):
    from cpsl_tf.models.checkpoint import load_segmenter

    model, _ = load_segmenter(run.models[stage], num_classes=run.num_classes)
    return model


def confusion_section(run: RunFolder, out: ReportFolder, max_images: int | None) -> list[str]:
    from cpsl_tf.evaluation.evaluate import evaluate_model

    blocks = [heading("Confusion matrix")]
    if not run.models:
        run.missing.append("confusion matrix: no stage has a final model")
        return blocks + ["No stage has a final model: see Missing."]
    stage = list(run.models)[-1]
    try:
        labelled = [s for s in target_samples(run.cfg, run.cfg.eval.split) if s.label is not None]
    except datasets.DatasetError as error:
        run.missing.append(f"confusion matrix: target {run.cfg.eval.split} set not readable: {error}")
        return blocks + ["The target validation set is not readable: see Missing."]
    if not labelled:
        run.missing.append(f"confusion matrix: the target {run.cfg.eval.split} images have no labels")
        return blocks + ["The target validation set has no labels: see Missing."]
    chosen = evenly_spaced(labelled, max_images)
    cfg = run.cfg
    result = evaluate_model(_load_model(run, stage), chosen, run.num_classes, image_size=cfg.data.target_size,
                            batch_size=cfg.eval.batch_size, align_corners=cfg.model.align_corners,
                            class_names=run.names)
    confusion = np.asarray(result["confusion"], dtype=np.int64)
    atomic_write_json(out.file("confusion.json"), {"stage": stage, "images": len(chosen),
                                               "classes": list(run.names), "confusion": confusion.tolist(),
                                               "miou": result["miou"], "mpa": result["mpa"]})
    title = f"{stage} on target {cfg.eval.split} ({len(chosen)} images)"
    plots.plot_confusion(confusion, run.names, out.file("confusion.png"), title)
    share = np.nan_to_num(plots.row_normalised(confusion))
    np.fill_diagonal(share, 0.0)
    order = np.argsort(share, axis=None)[::-1][:TOP_CONFUSIONS]
    worst = [f"{run.names[r]} predicted as {run.names[c]}: {100 * share[r, c]:.1f} % of {run.names[r]} pixels"
             for r, c in zip(*np.unravel_index(order, share.shape)) if share[r, c] > 0]
    blocks.append(f"Final model of stage `{stage}` on {len(chosen)} of {len(labelled)} target "
                  f"{cfg.eval.split} images (mIoU {percent(result['miou'])}, MPA {percent(result['mpa'])}); "
                  "rows are normalised by the ground-truth pixels of each class. Counts in `confusion.json`.")
    if worst:
        blocks += ["Largest confusions:", bullets(worst)]
    return blocks + [figure("confusion.png", f"Row-normalised confusion matrix, {title}.")]


def predict_class_map(model, image: np.ndarray, cfg: Config, label_shape: Sequence[int]) -> np.ndarray:
    """(H, W) uint8 classes: the image resized to ``data.target_size``, logits upsampled to the label size
    with the model's corner convention, argmax (the evaluation protocol). The network runs compiled, in
    the function the evaluation of the same model uses."""
    from cpsl_tf.evaluation.confusion import upsampled_class_map
    from cpsl_tf.export.preprocess import to_model_input
    from cpsl_tf.models.segmenter import inference_function

    x = to_model_input(image, tuple(cfg.data.target_size))[np.newaxis]
    logits = inference_function(model, cfg.data.target_size)(x)["logits"]
    size = (int(label_shape[0]), int(label_shape[1]))
    return np.asarray(upsampled_class_map(logits, size, cfg.model.align_corners)[0]).astype(np.uint8)


def examples_section(run: RunFolder, out: ReportFolder, count: int) -> list[str]:
    blocks = [heading("Qualitative examples (paper Fig. 3)")]
    distilled = [s for s in ("distill2", "distill1") if s in run.models][:1]
    stages = [s for s in ("warmup", "cpsl") if s in run.models] + distilled
    for stage in ("warmup", "cpsl"):
        if stage not in run.models:
            run.missing.append(f"examples: stage `{stage}` has no final model, its column is left out")
    if not stages:
        return blocks + ["No stage has a final model: see Missing."]
    try:
        samples = evenly_spaced(target_samples(run.cfg, run.cfg.eval.split), count)
    except datasets.DatasetError as error:
        run.missing.append(f"examples: target {run.cfg.eval.split} set not readable: {error}")
        return blocks + ["The target validation set is not readable: see Missing."]
    images = [datasets.load_image(s.image) for s in samples]
    labels = [datasets.load_label(s.label, s.dataset, run.num_classes) if s.label else None for s in samples]
    predictions: dict[str, list[np.ndarray]] = {}
    for stage in stages:
        model = _load_model(run, stage)
        predictions[stage] = [predict_class_map(model, image, run.cfg,
                                                image.shape[:2] if label is None else label.shape)
                              for image, label in zip(images, labels)]
    last = stages[-1]
    rows = []
    for k, (image, label) in enumerate(zip(images, labels)):
        truth = None if label is None else colorize(label, run.num_classes)
        row = [("image", image), ("ground truth", truth)]
        row += [(stage, colorize(predictions[stage][k], run.num_classes)) for stage in stages]
        errors = None if label is None else error_map(image, predictions[last][k], label, run.num_classes)
        rows.append(row + [(f"errors of {last}", errors)])
    plots.plot_examples(rows, out.file("examples.png"), run.names, palette(run.num_classes))
    return blocks + [f"{len(samples)} target {run.cfg.eval.split} images: "
                     + ", ".join(f"`{s.name}`" for s in samples)
                     + ". Ignored pixels are black. The last column marks the pixels the final model "
                       f"(`{last}`) gets wrong in red over the image in grey.",
                     figure("examples.png", "Image, ground truth, the predictions of " + ", ".join(stages)
                            + f" and the errors of {last}; the class colours below.")]


def error_map(image: np.ndarray, prediction: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB at the label's size: pixels whose prediction differs from the label in :data:`ERROR_COLOUR`, the
    others the image in dimmed grey, pixels without a class black."""
    height, width = label.shape
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    grey = (0.6 * image.mean(axis=2)).astype(np.uint8)
    out = np.repeat(grey[..., np.newaxis], 3, axis=2)
    valid = label < num_classes
    out[valid & (prediction != label)] = ERROR_COLOUR
    out[~valid] = 0
    return out
