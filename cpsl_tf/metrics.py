"""Segmentation metrics from a confusion matrix (rows = ground truth, columns = prediction).

The definitions follow the official code (``docs/official-code.md`` section 11) and supplement
Eq. 15-16: per-class IoU and accuracy are NaN for classes absent from both ground truth and prediction
(IoU) or from the ground truth (accuracy), and those classes are left out of the means. Also the distance
between two class distributions that the reports and benchmarks give.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpsl_tf.labels import IGNORE_INDEX


def confusion_matrix(gt, pred, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 confusion matrix over pixels whose ground truth is a class (not ``ignore_index``).

    Predictions must be class indices in [0, C); anything else is an error rather than a silent drop.
    """
    gt = np.asarray(gt).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but prediction has {pred.size}")
    valid = (gt >= 0) & (gt < num_classes) & (gt != ignore_index)
    gt, pred = gt[valid], pred[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(
            f"predictions must be class indices in [0, {num_classes}); found values in "
            f"[{pred.min()}, {pred.max()}]"
        )
    counts = np.bincount(num_classes * gt + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def total_variation(p, q) -> float:
    """Half the L1 distance between two class distributions, in [0, 1] (0: the same, 1: disjoint)."""
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def per_class_iou(conf: np.ndarray) -> np.ndarray:
    """IoU_k = n_kk / (sum_j n_kj + sum_j n_jk - n_kk); NaN where the class never occurs."""
    conf = np.asarray(conf, dtype=np.float64)
    diag = np.diag(conf)
    union = conf.sum(axis=1) + conf.sum(axis=0) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, diag / union, np.nan)


def per_class_accuracy(conf: np.ndarray) -> np.ndarray:
    """Per-class pixel accuracy (recall), supplement Eq. 15; NaN where the class has no ground truth."""
    conf = np.asarray(conf, dtype=np.float64)
    support = conf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(support > 0, np.diag(conf) / support, np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def mean_pixel_accuracy(conf: np.ndarray) -> float:
    """MPA, supplement Eq. 16: the mean of per-class accuracies over classes with ground truth."""
    return _nanmean(per_class_accuracy(conf))


def scores(conf: np.ndarray, subset: Sequence[int] | None = None) -> dict:
    """All scores of a confusion matrix.

    Returns ``miou``, ``mpa``, ``pa``, ``fwiou`` (floats in [0, 1]) and ``iou``, ``acc`` (per-class
    lists, NaN where undefined). With ``subset`` (class indices), ``miou`` and ``mpa`` are taken over
    those classes only (e.g. the 13-class mIoU* of a 16-class SYNTHIA model); the per-class lists and
    ``pa``/``fwiou`` still cover every class.
    """
    conf = np.asarray(conf, dtype=np.float64)
    iou = per_class_iou(conf)
    acc = per_class_accuracy(conf)
    total = conf.sum()
    freq = conf.sum(axis=1) / total if total > 0 else np.zeros(len(conf))
    seen = freq > 0
    chosen = np.arange(len(conf)) if subset is None else np.asarray(subset, dtype=np.int64)
    return {
        "miou": _nanmean(iou[chosen]),
        "mpa": _nanmean(acc[chosen]),
        "pa": float(np.trace(conf) / total) if total > 0 else float("nan"),
        "fwiou": float((freq[seen] * iou[seen]).sum()),
        "iou": [float(v) for v in iou],
        "acc": [float(v) for v in acc],
    }
