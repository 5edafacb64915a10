"""The streaming confusion matrix against the NumPy ``cpsl_tf.metrics.confusion_matrix`` path.

Upsampled logits are checked against an independent NumPy bilinear interpolation (float64), not
against ``cpsl_tf.resize``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.evaluation.confusion import ConfusionMatrixMetric
from cpsl_tf.metrics import confusion_matrix, scores
from tests.conftest import REPO


def numpy_bilinear(x: np.ndarray, size, align_corners: bool) -> np.ndarray:
    """(B, h, w, C) -> (B, H, W, C) bilinear interpolation, written out separately per axis."""

    def coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = np.arange(n_out, dtype=np.float64)
        if align_corners:
            src = d * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
        else:
            src = np.clip((d + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
        low = np.floor(src).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, src - low

    x = x.astype(np.float64)
    r0, r1, fr = coords(x.shape[1], size[0])
    c0, c1, fc = coords(x.shape[2], size[1])
    rows = x[:, r0] * (1 - fr)[None, :, None, None] + x[:, r1] * fr[None, :, None, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :, None] + rows[:, :, c1] * fc[None, None, :, None]


def random_labels(rng, shape, num_classes, ignore_fraction=0.2):
    labels = rng.integers(0, num_classes, size=shape).astype(np.uint8)
    labels[rng.random(shape) < ignore_fraction] = 255
    return labels


def test_class_maps_accumulate_like_numpy(rng):
    metric = ConfusionMatrixMetric(num_classes=7)
    gts, preds = [], []
    for _ in range(3):
        gt = random_labels(rng, (2, 9, 13), 7)
        pred = rng.integers(0, 7, size=(2, 9, 13))
        metric.update_state(gt, pred)
        gts.append(gt)
        preds.append(pred)
    expected = confusion_matrix(np.stack(gts), np.stack(preds), 7)
    np.testing.assert_array_equal(metric.confusion(), expected)
    assert expected.sum() < 3 * 2 * 9 * 13  # ignore pixels were really skipped
    assert float(metric.result()) == pytest.approx(scores(expected)["miou"], abs=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
def test_low_resolution_logits_are_upsampled_before_argmax(rng, align_corners):
    logits = rng.normal(size=(2, 5, 9, 6)).astype(np.float32)
    gt = random_labels(rng, (2, 17, 33), 6)
    metric = ConfusionMatrixMetric(num_classes=6, align_corners=align_corners)
    metric.update_state(gt, logits)
    pred = numpy_bilinear(logits, (17, 33), align_corners).argmax(axis=-1)
    np.testing.assert_array_equal(metric.confusion(), confusion_matrix(gt, pred, 6))
    # The other corner convention gives a different matrix, so the argument is really used.
    other = numpy_bilinear(logits, (17, 33), not align_corners).argmax(axis=-1)
    assert not np.array_equal(metric.confusion(), confusion_matrix(gt, other, 6))


def test_absent_classes_are_left_out_of_miou():
    metric = ConfusionMatrixMetric(num_classes=4)
    metric.update_state(np.array([[[0, 0, 1, 255]]]), np.array([[[0, 1, 1, 3]]]))
    # IoU(0) = 1/2, IoU(1) = 1/2, classes 2 and 3 absent from ground truth and (valid) predictions.
    assert float(metric.result()) == pytest.approx(0.5)
    metric.reset_state()
    assert metric.confusion().sum() == 0 and np.isnan(float(metric.result()))


def test_out_of_range_class_map_is_an_error():
    metric = ConfusionMatrixMetric(num_classes=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        metric.update_state(np.zeros((1, 2, 2)), np.full((1, 2, 2), 3))


def test_works_inside_model_evaluate_and_round_trips_config(rng):
    inputs = keras.Input((16, 24, 3))
    x = keras.layers.AveragePooling2D(4)(inputs)
    logits = keras.layers.Conv2D(5, 1, name="logits")(x)
    model = keras.Model(inputs, logits)
    metric = ConfusionMatrixMetric(num_classes=5, align_corners=False, name="miou")
    # Labels and logits differ in size, so no stock loss applies; the metric is what is tested.
    model.compile(loss=lambda y_true, y_pred: keras.ops.mean(y_pred) * 0.0, metrics=[metric])
    images = rng.random((6, 16, 24, 3)).astype(np.float32)
    labels = random_labels(rng, (6, 16, 24), 5)
    results = model.evaluate(images, labels, batch_size=4, return_dict=True, verbose=0)

    out = model.predict(images, verbose=0)
    pred = numpy_bilinear(out, (16, 24), align_corners=False).argmax(-1)
    expected = confusion_matrix(labels, pred, 5)
    assert results["miou"] == pytest.approx(scores(expected)["miou"], abs=1e-6)

    clone = ConfusionMatrixMetric.from_config(metric.get_config())
    assert (clone.num_classes, clone.ignore_index, clone.align_corners, clone.name) == (5, 255, False, "miou")


def test_replicas_sum_under_mirrored_strategy():
    """Two logical CPUs in a fresh process (logical devices must be set before TF initialises)."""
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cpsl_tf.evaluation.confusion import ConfusionMatrixMetric
        from cpsl_tf.metrics import confusion_matrix
        rng = np.random.default_rng(1)
        gt = rng.integers(0, 4, size=(4, 6, 8)); pred = rng.integers(0, 4, size=(4, 6, 8))
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            metric = ConfusionMatrixMetric(num_classes=4)
        data = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((gt, pred)).batch(4))
        @tf.function
        def step(batch):
            strategy.run(lambda g, p: metric.update_state(g, p), args=batch)
        for batch in data:
            step(batch)
        assert np.array_equal(metric.confusion(), confusion_matrix(gt, pred, 4)), metric.confusion()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
