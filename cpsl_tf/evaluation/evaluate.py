"""Evaluate a model, or a folder of predicted label PNGs, on a labelled dataset split.

One evaluation path serves every predictor: :func:`evaluate` runs a prediction function over the batches
of ``cpsl_tf.data.pipeline.make_eval_dataset`` and accumulates a confusion matrix
(``cpsl_tf.evaluation.confusion.ConfusionMatrixMetric``) per prediction. :func:`evaluate_model` gives it a
Keras model's compiled forward pass; the export parity gate (``cpsl_tf.export.parity``) gives it the Keras,
ONNX Runtime and TensorRT runners.

Model protocol (``docs/official-code.md`` section 10): single scale, no flip; each image is scaled to
[0, 1] and resized to ``image_size``; logits are upsampled bilinearly (``align_corners`` of the model)
to the resolution of the label file; argmax; one confusion matrix over the whole split.

Prediction folders hold one PNG per ground-truth image, matched by the Cityscapes basename
(``<city>_<seq>_<frame>``) found in the file name (``aachen_000000_000019_leftImg8bit.png`` or
``aachen_000000_000019.png`` anywhere under the folder), as the Cityscapes benchmark expects. Pixel values
are Cityscapes labelIds (``pred_format="labelid"``) or class indices (``"trainid"``); values that are no
class of the protocol count as misses of the ground-truth class.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from cpsl_tf.command import UserError
from cpsl_tf.data import datasets
from cpsl_tf.data.pipeline import make_eval_dataset, reader_failure
from cpsl_tf.evaluation.confusion import ConfusionMatrixMetric
from cpsl_tf.evaluation.table import report
from cpsl_tf.labels import IGNORE_INDEX, PRED_FORMATS, map_labels
from cpsl_tf.metrics import confusion_matrix
from cpsl_tf.models.segmenter import inference_function
from cpsl_tf.user_paths import require_folder

log = logging.getLogger(__name__)

# Splits with at least this many images show a progress bar.
PROGRESS_MIN_IMAGES = 20
_CITYSCAPES_BASENAME = re.compile(r"[A-Za-z]+(?:[-_][A-Za-z]+)*_\d{6}_\d{6}")


class EvaluationError(UserError, ValueError):
    """Inputs that cannot be evaluated (no labels, missing or mismatched predictions)."""


def _require_labels(samples: Sequence[datasets.Sample]) -> None:
    if not samples:
        raise EvaluationError("no samples to evaluate")
    unlabelled = [s.name for s in samples if s.label is None]
    if unlabelled:
        raise EvaluationError(f"{len(unlabelled)} sample(s) have no ground-truth label file "
                              f"(first: {', '.join(unlabelled[:5])}); evaluation needs labels")


def _logits_of(output):
    if isinstance(output, dict):
        if "logits" not in output:
            raise EvaluationError(f"model output has keys {sorted(output)}, expected 'logits'")
        return output["logits"]
    return output


def _progress(total: int, progress: bool | None, desc: str):
    show = total >= PROGRESS_MIN_IMAGES if progress is None else progress
    return tqdm(total=total, desc=desc, unit="img", disable=not show, file=sys.stderr)


@contextlib.contextmanager
def _unreadable_files_named():
    """A file that a ``tf.data`` reader could not read is a ``DatasetError`` naming it, as when it is read
    outside ``tf.data``."""
    try:
        yield
    except tf.errors.OpError as error:
        unreadable = reader_failure(error)
        if unreadable is None:
            raise
        raise datasets.DatasetError(unreadable) from error


def evaluate(predict: Callable[[tf.Tensor], Mapping[str, object]], dataset: tf.data.Dataset,
             num_classes: int, *, align_corners: bool = True, total: int = 0,
             progress: bool | None = None) -> dict[str, np.ndarray]:
    """The one evaluation loop: ``predict`` on every batch of ``dataset``, a confusion matrix per prediction.

    ``dataset`` is :func:`cpsl_tf.data.pipeline.make_eval_dataset` (``(images, labels)`` batches, or images
    alone when unlabelled). ``predict(images)`` returns named predictions, each logits (B, h, w, C), upsampled
    bilinearly (``align_corners``) to the label before the argmax (the model protocol), or a class map
    (B, h, w), brought to the label with the nearest rule (what an exported model emits). Returns
    ``{name: (C, C) int64 confusion}``, empty for an unlabelled dataset (``predict`` still runs on every
    batch, for callers that compare predictions). ``total`` images size the progress bar. A file that
    cannot be read is a ``DatasetError`` naming it.
    """
    metrics: dict[str, ConfusionMatrixMetric] = {}
    with _progress(total, progress, "evaluate") as bar, _unreadable_files_named():
        for element in dataset:
            images, labels = element if isinstance(element, tuple) else (element, None)
            predictions = predict(images)
            if labels is not None:
                for name, prediction in predictions.items():
                    if name not in metrics:
                        metrics[name] = ConfusionMatrixMetric(num_classes, align_corners=align_corners)
                    metrics[name].update_state(labels, prediction)
            bar.update(int(images.shape[0]))
    return {name: metric.confusion() for name, metric in metrics.items()}


def evaluate_model(
    model,
    samples: Sequence[datasets.Sample],
    num_classes: int,
    image_size: Sequence[int] | None = None,
    batch_size: int = 2,
    align_corners: bool = True,
    load_image: Callable[[Path], np.ndarray] = datasets.load_image,
    load_label: Callable[[Path, str, int], np.ndarray] = datasets.load_label,
    subsets: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool | None = None,
) -> dict:
    """Single-scale evaluation of ``model`` (RGB [0, 1] in; logits, or a dict with ``"logits"``, out).

    Returns the :func:`cpsl_tf.evaluation.table.report` dict (``miou``, ``mpa``, ``pa``, ``fwiou``,
    per-class ``classes``, ``subsets``, ``confusion``) plus ``num_images``. ``image_size`` = (H, W) the
    model input size (``None``: each image's own size; images of one batch must then agree). Images are
    scaled to [0, 1], then resized with align-corners bilinear, the resize of the training views
    (``cpsl_tf.data.views``), so a model sees target images at evaluation as it saw them in training.

    The network runs compiled, never eagerly: one ``tf.function`` per model and input size
    (:func:`cpsl_tf.models.segmenter.inference_function`), traced once and reused by every later
    evaluation of the same model.
    """
    _require_labels(samples)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    dataset = make_eval_dataset(samples, image_size, batch_size, num_classes, load_image=load_image,
                                load_label=load_label, scale_first=True)

    def predict(images):
        logits = _logits_of(inference_function(model, images.shape[1:3])(images))
        if logits.shape[-1] != num_classes:
            raise EvaluationError(f"model gives {logits.shape[-1]} classes, expected {num_classes}")
        return {"model": logits}

    try:
        confusion = evaluate(predict, dataset, num_classes, align_corners=align_corners, total=len(samples),
                             progress=progress)["model"]
    except tf.errors.InvalidArgumentError as error:
        if image_size is None and "Cannot batch tensors with different shapes" in str(error):
            raise EvaluationError("images of one batch differ in size; pass image_size to resize them to "
                                  "the model's input size") from error
        raise
    result = report(confusion, num_classes, class_names, subsets)
    result["num_images"] = len(samples)
    return result


# --------------------------------------------------------------------------------------------- folders


def match_key(name: str) -> str:
    """The Cityscapes basename in a sample name or prediction path, else the name itself."""
    found = _CITYSCAPES_BASENAME.search(Path(name).name)
    return found.group(0) if found else name


def index_predictions(pred_dir: str | Path) -> dict[str, Path]:
    """Prediction PNGs under ``pred_dir`` (recursive) by :func:`match_key`; two files for one key fail."""
    pred_dir = require_folder(pred_dir, "a folder of predicted label PNGs")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        key = match_key(path.relative_to(pred_dir).as_posix().removesuffix(".png"))
        if key in found:
            raise EvaluationError(f"two predictions for {key!r}: {found[key]} and {path}")
        found[key] = path
    return found


def prediction_classes(raw: np.ndarray, pred_format: str, num_classes: int) -> np.ndarray:
    """Class indices of a prediction image; values that are no class become ``IGNORE_INDEX``."""
    if pred_format == "labelid":
        return map_labels(raw, "cityscapes", num_classes)
    if pred_format == "trainid":
        out = np.asarray(raw).astype(np.int64)
        return np.where((out >= 0) & (out < num_classes), out, IGNORE_INDEX).astype(np.uint8)
    raise EvaluationError(f"pred_format must be one of {PRED_FORMATS}, got {pred_format!r}")


def evaluate_predictions(
    pred_dir: str | Path,
    samples: Sequence[datasets.Sample],
    num_classes: int,
    pred_format: str = "labelid",
    load_label: Callable[[Path, str, int], np.ndarray] = datasets.load_label,
    subsets: Sequence[int] | None = None,
    progress: bool | None = None,
) -> dict:
    """Score a folder of predicted label PNGs against the samples' ground truth (see module docstring)."""
    _require_labels(samples)
    predictions = index_predictions(pred_dir)
    missing = [s.name for s in samples if match_key(s.name) not in predictions]
    if missing:
        raise EvaluationError(f"{len(missing)} of {len(samples)} image(s) have no prediction PNG in "
                              f"{pred_dir} (first: {', '.join(missing[:5])})")
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    void = np.zeros(num_classes, dtype=np.int64)
    paths = [predictions[match_key(sample.name)] for sample in samples]

    def load(index):
        sample = samples[int(index)]
        pred = prediction_classes(datasets.read_raw_label(paths[int(index)], "cityscapes"), pred_format,
                                  num_classes)
        return pred, np.asarray(load_label(sample.label, sample.dataset, num_classes), np.uint8)

    def read(index):
        return (index, *tf.numpy_function(load, [index], (tf.uint8, tf.uint8), stateful=False))

    pairs = tf.data.Dataset.range(len(samples)).map(read, num_parallel_calls=2, deterministic=True)
    with _progress(len(samples), progress, "evaluate") as bar, _unreadable_files_named():
        for index, pred, gt in pairs.prefetch(8).as_numpy_iterator():
            if pred.shape != gt.shape:
                raise EvaluationError(f"{paths[index]}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) "
                                      f"but the label {samples[index].label} is "
                                      f"{gt.shape[1]}x{gt.shape[0]}")
            is_void = pred == IGNORE_INDEX
            conf += confusion_matrix(gt[~is_void], pred[~is_void], num_classes)
            missed = gt[is_void & (gt < num_classes)]
            void += np.bincount(missed, minlength=num_classes)[:num_classes]
            bar.update(1)
    result = report(conf, num_classes, subsets=subsets, void_predictions=void)
    result["num_images"] = len(samples)
    return result
