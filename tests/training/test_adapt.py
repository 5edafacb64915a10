"""The CPSL stage's inputs: the fixed ground-truth marginal of ``cpsl.marginal=ground_truth``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cpsl_tf.data.datasets import Sample
from cpsl_tf.training.adapt import ground_truth_marginal
from cpsl_tf.training.stages import StageError


def test_ground_truth_marginal_counts_the_target_train_labels(tmp_path):
    # Cityscapes labelIds: 7 road (train id 0), 8 sidewalk (1), 26 car (13), 0 unlabeled (ignored).
    maps = [np.array([[7, 7, 8], [26, 0, 7]], np.uint8), np.array([[26, 26, 26], [8, 0, 0]], np.uint8)]
    samples = []
    for i, label in enumerate(maps):
        path = tmp_path / f"{i}_gtFine_labelIds.png"
        cv2.imwrite(str(path), label)
        samples.append(Sample(f"{i}", tmp_path / "image.png", path, "cityscapes"))
    expected = np.zeros(19)
    expected[[0, 1, 13]] = [3, 2, 4]
    np.testing.assert_allclose(ground_truth_marginal(samples, 19), expected / 9, atol=1e-7)
    with pytest.raises(StageError, match="needs target-train labels; 1 images have none"):
        ground_truth_marginal(samples + [Sample("x", tmp_path / "x.png", None, "cityscapes")], 19)
