"""Gradient accumulation: k micro-batches give the update of one batch of k times the size.

The CPSL comparison controls what legitimately differs between the two: BatchNorm runs in inference mode
(frozen layers, so no batch statistics), the ablation ``w/o SL`` removes Sinkhorn (whose later
micro-batches see earlier samples in the bank) and ``w/o Aug`` with plain-mean consistency, labels have no
ignored pixels, dropout is off. With those, the loss of the full batch is the mean of the micro-batch losses.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.config import load_config, shrink
from cpsl_tf.cpsl.model import CPSLModel
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.training.optim import GroupedSGD, SegmentationOptimizer
from cpsl_tf.training.warmup import build_segmentation_optimizer


def _grouped(accumulation: int, total_steps: int = 4) -> SegmentationOptimizer:
    sgd = GroupedSGD({"a": 0.1, "b": 1.0}, lambda v: "a" if v.name.startswith("a") else "b", 0.01,
                     total_steps, 0.9, 0.9, accumulation)
    return SegmentationOptimizer(sgd)


def test_grouped_sgd_accumulates_and_counts_optimizer_steps():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    micro = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(4)]
    accumulated = [keras.Variable(w, name=n) for w, n in zip(start, ("a0", "b0"))]
    full = [keras.Variable(w, name=n) for w, n in zip(start, ("a0", "b0"))]
    k2, k1 = _grouped(2), _grouped(1)
    k2.build(accumulated)
    k1.build(full)
    changed = [bool(k2.apply([tf.constant(g) for g in grads], accumulated)) for grads in micro]
    assert changed == [False, True, False, True]
    for step in range(2):  # two optimizer steps of the mean gradient of two micro-batches
        mean = [tf.constant((a + b) / 2) for a, b in zip(micro[2 * step], micro[2 * step + 1])]
        assert bool(k1.apply(mean, full))
    for a, f in zip(accumulated, full):
        np.testing.assert_allclose(a.numpy(), f.numpy(), rtol=1e-6, atol=1e-6)
    # Poly decay over 4 optimizer steps: a schedule counting micro-batches would have used lr(2) in the
    # second update instead of lr(1) and the weights above would differ.
    assert int(k2.optimizer.iterations) == 2 and int(k1.optimizer.iterations) == 2
    assert k2.sgd.learning_rates()["a"] == pytest.approx(k1.sgd.learning_rates()["a"])
    assert not np.allclose(accumulated[0].numpy(), start[0])


def test_accumulation_below_one_is_refused():
    with pytest.raises(ValueError, match="must be >= 1"):
        GroupedSGD({"a": 0.1}, lambda v: "a", 0.0, 4, 0.9, 0.9, accumulation_steps=0)


def _batch(rng, size: int):
    h, w = 32, 48
    weak = rng.random((size, h, w, 3)).astype(np.float32)
    soft = tf.nn.softmax(rng.normal(size=(size, h // 4, w // 4, 19)).astype(np.float32) * 3).numpy()
    return {"source_image": rng.random((size, h, w, 3)).astype(np.float32),
            "source_label": rng.integers(0, 19, (size, h, w)).astype(np.uint8),
            "target_image": weak, "target_strong": weak, "target_soft": soft}


def _cpsl_model(cfg, accumulation: int, init, prototypes, distribution):
    train = dataclasses.replace(cfg.train, gradient_accumulation_steps=accumulation)
    cfg = dataclasses.replace(cfg, train=train)
    student = build_segmenter(cfg.model, 19)
    teacher = build_segmenter(cfg.model, 19, name="teacher")
    student.set_weights(init)
    teacher.set_weights([w + 0.01 for w in init])
    for layer in student.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference-mode BN: the loss does not couple the images of a batch
    model = CPSLModel(student, teacher, prototypes, distribution, cfg.cpsl)
    model.use_optimizer(build_segmentation_optimizer(cfg, 1e-2, 1e-1, 10, model.trainable_for_step, 1e-1))
    model.compile(optimizer=model.grouped.optimizer)
    return model


def test_cpsl_micro_batches_give_the_full_batch_update():
    base = shrink(load_config(None))
    cfg = dataclasses.replace(
        base, model=dataclasses.replace(base.model, dropout=0.0),
        cpsl=dataclasses.replace(base.cpsl, use_self_labeling=False, strong_augmentation=False,
                                 ema_momentum=0.9))
    rng = np.random.default_rng(0)
    init = build_segmenter(cfg.model, 19, name="init").get_weights()
    prototypes = rng.normal(size=(19, cfg.model.head_channels)).astype(np.float32)
    distribution = rng.dirichlet(np.ones(19)).astype(np.float32)
    batch = _batch(rng, 4)
    halves = [{k: v[i:i + 2] for k, v in batch.items()} for i in (0, 2)]

    full = _cpsl_model(cfg, 1, init, prototypes, distribution)
    full.fit(tf.data.Dataset.from_tensors(batch), epochs=1, steps_per_epoch=1, verbose=0)
    micro = _cpsl_model(cfg, 2, init, prototypes, distribution)
    micro_data = tf.data.Dataset.from_tensors(halves[0]).concatenate(tf.data.Dataset.from_tensors(halves[1]))
    micro.fit(micro_data, epochs=1, steps_per_epoch=2, verbose=0)

    moved = 0
    for start, a, b in zip(init, micro.student.weights, full.student.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-5, atol=2e-6, err_msg=a.path)
        moved += not np.allclose(a.numpy(), start)
    assert moved > 10
    # One EMA update per optimizer step, not per micro-batch.
    for a, b in zip(micro.teacher.weights, full.teacher.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-5, atol=2e-6, err_msg=a.path)
    assert int(micro.grouped.optimizer.iterations) == 1
