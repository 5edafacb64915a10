"""The evaluation report of a confusion matrix: a per-class text table and the same as a JSON dict.

Per class: IoU and pixel accuracy; overall: mIoU, MPA, PA and FWIoU (``cpsl_tf.metrics.scores``). A
16-class SYNTHIA model also reports mIoU and MPA over the 13 mIoU* classes (``report_subsets``).

Predictions that are no class at all (a prediction PNG holding a void label id) are passed as
``void_predictions``: per ground-truth class, the pixels predicted as void. They count as misses of
that class (as in the Cityscapes evaluator), never as a hit or a false positive of another class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cpsl_tf.labels import class_names, subset_indices
from cpsl_tf.metrics import scores


def default_subsets(num_classes: int) -> tuple[int, ...]:
    """Class subsets reported by convention: the 13-class mIoU* of a 16-class (SYNTHIA) model."""
    return (13,) if num_classes == 16 else ()


def scores_with_void(conf: np.ndarray, void_predictions: np.ndarray | None = None,
                     subset: Sequence[int] | None = None) -> dict:
    """``cpsl_tf.metrics.scores`` where void predictions are misses of their ground-truth class.

    The void column is appended as an extra class that never occurs in the ground truth, and the means
    are restricted to the real classes; so void pixels enlarge each class's row (lower IoU and
    accuracy) and the pixel total (lower PA) without being a false positive of any class.
    """
    conf = np.asarray(conf, dtype=np.int64)
    classes = len(conf)
    if conf.shape != (classes, classes):
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    if void_predictions is None or not np.any(void_predictions):
        return scores(conf, subset)
    void_predictions = np.asarray(void_predictions, dtype=np.int64)
    if void_predictions.shape != (classes,):
        raise ValueError(f"void_predictions must have shape ({classes},), got {void_predictions.shape}")
    extended = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    extended[:classes, :classes] = conf
    extended[:classes, classes] = void_predictions
    result = scores(extended, range(classes) if subset is None else subset)
    result["iou"] = result["iou"][:classes]
    result["acc"] = result["acc"][:classes]
    return result


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def report(conf: np.ndarray, num_classes: int | None = None, names: Sequence[str] | None = None,
           subsets: Sequence[int] | None = None, void_predictions: np.ndarray | None = None) -> dict:
    """JSON-ready dict: per-class rows, overall scores, subset scores and the confusion matrix.

    Undefined values (a class absent from ground truth and prediction) are ``None``. ``subsets`` are
    class counts of smaller protocols (e.g. ``[13]``); by default :func:`default_subsets`.
    """
    conf = np.asarray(conf, dtype=np.int64)
    num_classes = len(conf) if num_classes is None else num_classes
    if conf.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix has shape {conf.shape}, expected ({num_classes}, {num_classes})")
    names = list(class_names(num_classes) if names is None else names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes")
    subsets = default_subsets(num_classes) if subsets is None else tuple(subsets)
    full = scores_with_void(conf, void_predictions)
    out = {
        "num_classes": num_classes,
        "pixels": int(conf.sum() + (0 if void_predictions is None else np.sum(void_predictions))),
        "miou": _json_number(full["miou"]),
        "mpa": _json_number(full["mpa"]),
        "pa": _json_number(full["pa"]),
        "fwiou": _json_number(full["fwiou"]),
        "classes": [{"name": name, "iou": _json_number(iou), "acc": _json_number(acc)}
                    for name, iou, acc in zip(names, full["iou"], full["acc"])],
        "subsets": {},
        "confusion": conf.tolist(),
    }
    if void_predictions is not None:
        out["void_predictions"] = np.asarray(void_predictions, dtype=np.int64).tolist()
    for size in subsets:
        indices = subset_indices(num_classes, size)
        part = scores_with_void(conf, void_predictions, subset=indices)
        out["subsets"][str(size)] = {"miou": _json_number(part["miou"]), "mpa": _json_number(part["mpa"]),
                                     "classes": [names[i] for i in indices]}
    return out


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100.0 * value:6.2f}"


def format_table(result: dict) -> str:
    """Text table of a :func:`report` dict (values in percent)."""
    width = max(12, *(len(row["name"]) for row in result["classes"]))
    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 14)]
    for row in result["classes"]:
        lines.append(f"{row['name']:<{width}} {_percent(row['iou'])} {_percent(row['acc'])}")
    lines.append("-" * (width + 14))
    n = result["num_classes"]
    lines.append(f"{f'mIoU ({n})':<{width}} {_percent(result['miou'])}")
    lines.append(f"{f'MPA ({n})':<{width}} {_percent(result['mpa'])}")
    for size, part in result["subsets"].items():
        lines.append(f"{f'mIoU ({size})':<{width}} {_percent(part['miou'])}")
        lines.append(f"{f'MPA ({size})':<{width}} {_percent(part['mpa'])}")
    lines.append(f"{'PA':<{width}} {_percent(result['pa'])}")
    lines.append(f"{'FWIoU':<{width}} {_percent(result['fwiou'])}")
    return "\n".join(lines)
