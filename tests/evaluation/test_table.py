"""The report dict and text table, checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpsl_tf.evaluation.table import format_table, report, scores_with_void
from cpsl_tf.labels import class_names


def test_void_predictions_are_misses_not_false_positives():
    conf = np.array([[3, 1], [0, 2]])
    result = scores_with_void(conf, np.array([2, 0]))
    # class 0: tp 3, row 3+1+2, column 3 -> IoU 3/6, acc 3/6; class 1: tp 2, row 2, column 1+2 -> IoU 2/3.
    assert result["iou"] == pytest.approx([0.5, 2 / 3])
    assert result["acc"] == pytest.approx([0.5, 1.0])
    assert result["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert result["pa"] == pytest.approx(5 / 8)


def test_synthia_report_has_13_class_subset(rng):
    conf = rng.integers(0, 50, size=(16, 16))
    conf[3] = 0  # wall: no ground truth ...
    conf[:, 3] = 0  # ... and never predicted -> undefined, left out of the means
    result = report(conf)
    diag = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - diag
    with np.errstate(invalid="ignore"):
        iou = diag / union
    keep13 = [i for i, name in enumerate(class_names(16)) if name not in ("wall", "fence", "pole")]
    assert result["miou"] == pytest.approx(np.nanmean(iou))
    assert result["subsets"]["13"]["miou"] == pytest.approx(np.mean(iou[keep13]))
    assert result["subsets"]["13"]["classes"] == [class_names(16)[i] for i in keep13]
    assert result["classes"][3] == {"name": "wall", "iou": None, "acc": None}
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN

    text = format_table(result)
    assert "mIoU (13)" in text and "mIoU (16)" in text
    assert f"{100 * result['miou']:6.2f}" in text
    assert "wall" in text and "n/a" in text


def test_cityscapes_report_has_no_subset_and_checks_shapes():
    conf = np.eye(19, dtype=np.int64) * 5
    result = report(conf)
    assert result["subsets"] == {} and result["miou"] == 1.0 and len(result["classes"]) == 19
    with pytest.raises(ValueError, match="expected \\(16, 16\\)"):
        report(conf, num_classes=16)
