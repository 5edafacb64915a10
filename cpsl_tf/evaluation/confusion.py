"""A streaming confusion matrix as a Keras metric (``model.evaluate``, ``tf.distribute``, eager loops).

The counts follow ``cpsl_tf.metrics.confusion_matrix`` (rows = ground truth, columns = prediction,
pixels whose label is not a class are skipped); ``confusion()`` hands the matrix to
``cpsl_tf.metrics.scores`` for the full set of figures, ``result()`` is the mIoU computed in TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cpsl_tf.labels import IGNORE_INDEX
from cpsl_tf.resize import resize_bilinear, resize_nearest


def upsampled_class_map(logits, size, align_corners: bool = True):
    """Argmax class map (B, H, W) int32 of (B, h, w, C) logits bilinearly upsampled to ``size``.

    This is the evaluation protocol of the official code (``docs/official-code.md`` section 10):
    upsample the logits, then take the argmax. Logits known to be at ``size`` already are not resized
    (a same-size resize is the identity under both corner conventions, so a dynamic size is safe too).
    """
    logits = tf.convert_to_tensor(logits)
    static = (isinstance(size, (tuple, list)) and all(isinstance(v, int) for v in size)
              and None not in logits.shape[1:3])
    if not (static and tuple(logits.shape[1:3]) == tuple(size)):
        logits = resize_bilinear(logits, size, align_corners=align_corners)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def class_map_at(class_map, size):
    """A (B, h, w) class map brought to ``size`` = (H, W) with the nearest rule (no new classes appear).

    An exported model emits its class map at the input resolution; this is how it meets the label. A map
    known to be at ``size`` is returned as it is (a same-size nearest resize is the identity).
    """
    if isinstance(size, tuple) and tuple(class_map.shape[1:3]) == size:
        return class_map
    return resize_nearest(class_map[..., tf.newaxis], size)[..., 0]


class ConfusionMatrixMetric(keras.metrics.Metric):
    """Accumulates a (C, C) confusion matrix; ``result()`` is the mIoU over classes that occur.

    ``update_state(y_true, y_pred)``: ``y_true`` are class labels (B, H, W) (or (B, H, W, 1)) with
    ``ignore_index`` (and any value outside [0, C)) skipped; ``y_pred`` are logits (B, h, w, C),
    upsampled to the label size with ``cpsl_tf.resize.resize_bilinear(align_corners)`` when smaller,
    or a class map (B, h, w) of indices in [0, C), brought to the label size by :func:`class_map_at`.
    The counts live in a float64 variable with SUM aggregation, so replicas under ``tf.distribute`` add
    up; float64 counts are exact up to 2**53 pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, align_corners: bool = True,
                 name: str = "confusion_miou", **kwargs):
        super().__init__(name=name, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.align_corners = bool(align_corners)
        self.counts = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                        dtype="float64", aggregation="sum", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("ConfusionMatrixMetric counts pixels; sample_weight is not supported")
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == 4:
            y_true = tf.squeeze(y_true, axis=-1)
        if y_true.shape.rank != 3:
            raise ValueError(f"y_true must be labels (B, H, W), got shape {y_true.shape}")
        y_true = tf.cast(y_true, tf.int32)
        y_pred = tf.convert_to_tensor(y_pred)
        label_size = tuple(y_true.shape[1:3])
        if None in label_size:
            label_size = tf.shape(y_true)[1:3]
        if y_pred.shape.rank == 4:
            if y_pred.shape[-1] != self.num_classes:
                raise ValueError(f"logits must have {self.num_classes} channels, got shape {y_pred.shape}")
            pred = upsampled_class_map(y_pred, label_size, self.align_corners)
        elif y_pred.shape.rank == 3:
            pred = class_map_at(tf.cast(y_pred, tf.int32), label_size)
        else:
            raise ValueError(f"y_pred must be logits (B, h, w, C) or a class map (B, H, W), "
                             f"got shape {y_pred.shape}")
        classes = self.num_classes
        valid = (y_true >= 0) & (y_true < classes) & (y_true != self.ignore_index)
        gt = tf.boolean_mask(y_true, valid)
        pred = tf.boolean_mask(pred, valid)
        checks = [tf.debugging.assert_less(pred, classes, message="class map holds a value >= num_classes"),
                  tf.debugging.assert_non_negative(pred, message="class map holds a negative value")]
        with tf.control_dependencies(checks):
            flat = gt * classes + pred
        counts = tf.math.bincount(flat, minlength=classes * classes, maxlength=classes * classes,
                                  dtype=tf.int64)
        self.counts.assign_add(tf.cast(tf.reshape(counts, (classes, classes)), tf.float64))

    def result(self):
        """mIoU: mean of n_kk / (row_k + col_k - n_kk) over classes with a non-empty union."""
        counts = tf.convert_to_tensor(self.counts)
        diag = tf.linalg.diag_part(counts)
        union = tf.reduce_sum(counts, axis=0) + tf.reduce_sum(counts, axis=1) - diag
        present = union > 0
        iou = tf.boolean_mask(diag, present) / tf.boolean_mask(union, present)
        return tf.cond(tf.reduce_any(present), lambda: tf.reduce_mean(iou),
                       lambda: tf.constant(np.nan, tf.float64))

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def confusion(self) -> np.ndarray:
        """The accumulated (C, C) int64 matrix, for ``cpsl_tf.metrics.scores``."""
        return np.rint(keras.ops.convert_to_numpy(self.counts)).astype(np.int64)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "ignore_index": self.ignore_index, "align_corners": self.align_corners}
