"""Evaluate a model, or a folder of predicted label PNGs, on a labelled dataset split.

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

import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from cpsl_tf.command import UserError
from cpsl_tf.data import datasets
from cpsl_tf.evaluation.confusion import ConfusionMatrixMetric
from cpsl_tf.evaluation.table import report
from cpsl_tf.labels import IGNORE_INDEX, PRED_FORMATS, map_labels
from cpsl_tf.metrics import confusion_matrix
from cpsl_tf.models.segmenter import inference_function
from cpsl_tf.resize import resize_bilinear
from cpsl_tf.user_paths import require_folder

log = logging.getLogger(__name__)

# Splits with at least this many images show a progress bar.
PROGRESS_MIN_IMAGES = 20
_CITYSCAPES_BASENAME = re.compile(r"[A-Za-z]+(?:[-_][A-Za-z]+)*_\d{6}_\d{6}")


class EvaluationError(UserError, ValueError):
    """Inputs that cannot be evaluated (no labels, missing or mismatched predictions)."""


def preprocess_image(image: np.ndarray, image_size: Sequence[int] | None) -> tf.Tensor:
    """uint8 RGB (H, W, 3) -> float32 [0, 1] resized to ``image_size``.

    Align-corners bilinear, the resize of the training views (``cpsl_tf.data.views``), so a model sees
    target images at evaluation as it saw them in training.
    """
    x = tf.convert_to_tensor(image, dtype=tf.uint8)
    x = tf.cast(x, tf.float32) / 255.0
    if image_size is not None and tuple(image.shape[:2]) != tuple(image_size):
        x = resize_bilinear(x, tuple(int(v) for v in image_size), align_corners=True)
    return x


def _require_labels(samples: Sequence[datasets.Sample]) -> None:
    if not samples:
        raise EvaluationError("no samples to evaluate")
    unlabelled = [s.name for s in samples if s.label is None]
    if unlabelled:
        raise EvaluationError(f"{len(unlabelled)} sample(s) have no ground-truth label file "
                              f"(first: {', '.join(unlabelled[:5])}); evaluation needs labels")


def _batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def _prefetched(batches: Iterator[Sequence], load: Callable, workers: int = 2) -> Iterator[list]:
    """Load each batch's items in a thread pool, one batch ahead of the consumer (bounded memory)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[Future] | None = None
        for batch in batches:
            submitted = [pool.submit(load, item) for item in batch]
            if pending is not None:
                yield [f.result() for f in pending]
            pending = submitted
        if pending is not None:
            yield [f.result() for f in pending]


def _logits_of(output):
    if isinstance(output, dict):
        if "logits" not in output:
            raise EvaluationError(f"model output has keys {sorted(output)}, expected 'logits'")
        return output["logits"]
    return output


def _progress(total: int, progress: bool | None, desc: str):
    show = total >= PROGRESS_MIN_IMAGES if progress is None else progress
    return tqdm(total=total, desc=desc, unit="img", disable=not show, file=sys.stderr)


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
    model input size (``None``: each image's own size; images of one batch must then agree).

    The network runs compiled, never eagerly: one ``tf.function`` per model and input size
    (:func:`cpsl_tf.models.segmenter.inference_function`), traced once and reused by every later
    evaluation of the same model.
    """
    _require_labels(samples)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    metric = ConfusionMatrixMetric(num_classes, align_corners=align_corners)

    def load(sample):
        image = preprocess_image(load_image(sample.image), image_size)
        label = load_label(sample.label, sample.dataset, num_classes)
        return image, label

    with _progress(len(samples), progress, "evaluate") as bar:
        for loaded in _prefetched(_batches(list(samples), batch_size), load):
            shapes = {tuple(image.shape) for image, _ in loaded}
            if len(shapes) > 1:
                raise EvaluationError(f"images of one batch differ in size {sorted(shapes)}; pass "
                                      "image_size to resize them to the model's input size")
            images = tf.stack([image for image, _ in loaded])
            logits = _logits_of(inference_function(model, images.shape[1:3])(images))
            if logits.shape[-1] != num_classes:
                raise EvaluationError(f"model gives {logits.shape[-1]} classes, expected {num_classes}")
            for index, (_, label) in enumerate(loaded):
                metric.update_state(label[np.newaxis], logits[index:index + 1])
            bar.update(len(loaded))
    result = report(metric.confusion(), num_classes, class_names, subsets)
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

    def load(sample):
        path = predictions[match_key(sample.name)]
        pred = prediction_classes(datasets.read_raw_label(path, "cityscapes"), pred_format, num_classes)
        return sample, path, pred, load_label(sample.label, sample.dataset, num_classes)

    with _progress(len(samples), progress, "evaluate") as bar:
        for loaded in _prefetched(_batches(list(samples), 8), load):
            for sample, path, pred, gt in loaded:
                if pred.shape != gt.shape:
                    raise EvaluationError(f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]} (WxH) "
                                          f"but the label {sample.label} is {gt.shape[1]}x{gt.shape[0]}")
                is_void = pred == IGNORE_INDEX
                conf += confusion_matrix(gt[~is_void], pred[~is_void], num_classes)
                missed = gt[is_void & (gt < num_classes)]
                void += np.bincount(missed, minlength=num_classes)[:num_classes]
            bar.update(len(loaded))
    result = report(conf, num_classes, subsets=subsets, void_predictions=void)
    result["num_images"] = len(samples)
    return result
