"""CPSLModel.train_step on a tiny network: state updates checked against their defining formulas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.config import load_config, shrink
from cpsl_tf.cpsl.model import CPSLModel
from cpsl_tf.data.strong import strong_view
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.training.warmup import build_segmentation_optimizer

H, W, B = 32, 48, 2


def _batch(rng, soft_size):
    source = rng.random((B, H, W, 3)).astype(np.float32)
    weak = rng.random((B, H, W, 3)).astype(np.float32)
    strong, params = [], []
    for i in range(B):
        image, p = strong_view(tf.constant(weak[i]), tf.constant([i, 7], tf.int64))
        strong.append(image)
        params.append(p)
    soft = tf.nn.softmax(rng.normal(size=(B, *soft_size, 19)).astype(np.float32) * 3).numpy()
    return {"source_image": source, "source_label": rng.integers(0, 19, (B, H, W)).astype(np.uint8),
            "target_image": weak, "target_strong": tf.stack(strong).numpy(),
            "strong_params": {k: tf.stack([p[k] for p in params]).numpy() for k in params[0]},
            "target_soft": soft}


def _model(cfg, rng):
    student = build_segmenter(cfg.model, 19)
    teacher = build_segmenter(cfg.model, 19, name="teacher")
    teacher.set_weights([w + 0.01 for w in student.get_weights()])
    prototypes = rng.normal(size=(19, cfg.model.head_channels)).astype(np.float32)
    distribution = rng.dirichlet(np.ones(19)).astype(np.float32)
    model = CPSLModel(student, teacher, prototypes, distribution, cfg.cpsl)
    model.use_optimizer(build_segmentation_optimizer(cfg, 1e-3, 1e-2, 100, model.trainable_for_step, 1e-2))
    model.compile(optimizer=model.grouped.optimizer)
    return model


@pytest.fixture(scope="module")
def cfg():
    base = shrink(load_config(None))
    return dataclasses.replace(base, cpsl=dataclasses.replace(base.cpsl, ema_momentum=0.9,
                                                              alignment_momentum=0.8))


def _fit(model, batch, steps=1):
    data = tf.data.Dataset.from_tensors(batch).repeat()
    return model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0).history


def test_one_step_updates_every_state_by_its_formula(cfg):
    rng = np.random.default_rng(0)
    model = _model(cfg, rng)
    batch = _batch(rng, (H // 4, W // 4))
    teacher_before = [w.numpy() for w in model.teacher.weights]
    w_ema_before = model.head.momentum_prototypes.numpy()
    delta_before = model.delta_pseudo.numpy()
    history = _fit(model, batch)
    assert all(np.isfinite(v[0]) for v in history.values())
    assert history["loss_sl"][0] > 0 and history["loss_reg"][0] > 0
    m = cfg.cpsl.ema_momentum
    for before, t, s in zip(teacher_before, model.teacher.weights, model.student.weights):
        expected = m * before + (1 - m) * s.numpy() if s.trainable else s.numpy()
        np.testing.assert_allclose(t.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=t.path)
    np.testing.assert_allclose(model.head.momentum_prototypes.numpy(),
                               m * w_ema_before + (1 - m) * model.head.prototypes.numpy(), atol=1e-6)
    # Bank: M samples of each image, unit-norm features.
    filled = int(model.bank.filled.numpy())
    assert filled == B * cfg.cpsl.pixels_per_image
    norms = np.linalg.norm(model.bank.valid_rows().numpy(), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # Eq. 11 with two images: delta <- a^2 delta + a(1-a) d_0 + (1-a) d_1, still a distribution.
    delta = model.delta_pseudo.numpy()
    assert not np.allclose(delta, delta_before) and delta.sum() == pytest.approx(1.0, abs=1e-5)
    assert history["delta_shift"][0] == pytest.approx(np.abs(delta - delta_before).sum(), rel=1e-4)


def test_ablation_without_self_labeling_leaves_the_head_alone(cfg):
    rng = np.random.default_rng(1)
    ablated = dataclasses.replace(cfg, cpsl=dataclasses.replace(cfg.cpsl, use_self_labeling=False))
    model = _model(ablated, rng)
    w_before = model.head.prototypes.numpy()
    delta_before = model.delta_pseudo.numpy()
    history = _fit(model, _batch(rng, (H // 4, W // 4)))
    assert history["loss_sl"][0] == 0.0
    np.testing.assert_array_equal(model.head.prototypes.numpy(), w_before)
    np.testing.assert_array_equal(model.delta_pseudo.numpy(), delta_before)
    assert int(model.bank.filled.numpy()) == 0
    # Self-training alone: the rectified labels are the stored pseudo labels, nothing changes.
    assert history["rectified_changed"][0] == 0.0


def _pipeline_batch(cfg, rng):
    """One real training batch (weak/strong views, full image, CutMix) from in-memory samples."""
    from types import SimpleNamespace

    from cpsl_tf.data.pipeline import make_training_dataset

    images, labels, source, target = {}, {}, [], []
    for i in range(4):
        for prefix, group in (("s", source), ("t", target)):
            name = f"{prefix}{i}"
            images[name] = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            labels[name + "_gt"] = rng.integers(0, 19, (H, W), dtype=np.uint8)
            group.append(SimpleNamespace(name=name, image=name, label=name + "_gt", dataset="bench"))
    out = build_segmenter(cfg.model, 19)(tf.zeros((1, H, W, 3)))["logits"].shape[1:3]
    soft = {s.name: tf.nn.softmax(rng.normal(size=(*out, 19)).astype(np.float32)).numpy() for s in target}
    data = dataclasses.replace(cfg.data, source_size=[H, W], target_size=[H, W], crop_size=[H, W],
                               scale_range=[0.75, 1.25])
    dataset = make_training_dataset(source, target, dataclasses.replace(cfg, data=data), 0,
                                    pseudo_lookup=soft.__getitem__, load_image=images.__getitem__,
                                    load_label=lambda p, d, n: labels[p], batch_size=B)
    return next(iter(dataset))


def test_official_preset_step_uses_two_banks_and_a_fixed_distribution(cfg):
    from cpsl_tf.config import load_config as load

    rng = np.random.default_rng(2)
    official = shrink(load(None, ["cpsl.preset=official"]))
    official = dataclasses.replace(official, cpsl=dataclasses.replace(official.cpsl, cutmix_prob=1.0))
    batch = _pipeline_batch(official, rng)
    assert bool(np.all(batch["cutmix"].numpy()))
    student = build_segmenter(official.model, 19)
    teacher = build_segmenter(official.model, 19, name="teacher")
    teacher.set_weights(student.get_weights())
    model = CPSLModel(student, teacher, rng.normal(size=(19, official.model.head_channels)),
                      np.full(19, 1 / 19, np.float32), official.cpsl)
    model.use_optimizer(build_segmentation_optimizer(official, 1e-3, 1e-2, 100, model.trainable_for_step,
                                                     1e-2))
    model.compile(optimizer=model.grouped.optimizer)
    w_before = model.head.prototypes.numpy()
    history = _fit(model, {k: v for k, v in batch.items()})
    assert all(np.isfinite(v[0]) for v in history.values()) and history["loss_sl"][0] > 0
    m = official.cpsl.pixels_per_image
    assert int(model.bank.filled.numpy()) == B * m and int(model.logit_bank.filled.numpy()) == B * m
    np.testing.assert_allclose(np.linalg.norm(model.logit_bank.valid_rows().numpy(), axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(model.delta_pseudo.numpy(), np.full(19, 1 / 19, np.float32))
    assert not np.allclose(model.head.prototypes.numpy(), w_before)


def test_a_ground_truth_marginal_stays_fixed(cfg):
    rng = np.random.default_rng(6)
    fixed = dataclasses.replace(cfg, cpsl=dataclasses.replace(cfg.cpsl, marginal="ground_truth"))
    model = _model(fixed, rng)
    delta_before = model.delta_pseudo.numpy()
    history = _fit(model, _batch(rng, (H // 4, W // 4)))
    np.testing.assert_array_equal(model.delta_pseudo.numpy(), delta_before)
    assert history["delta_shift"][0] == 0.0 and history["loss_sl"][0] > 0


def test_classes_without_a_prototype_stay_bounded_and_apart(cfg):
    """A class the warm-up never predicted has a zero prototype: its head row must neither blow up nor
    collapse onto the other such rows (through l2_normalize at 0 the gradient is about 1e12)."""
    rng = np.random.default_rng(3)
    model = _model(cfg, rng)
    prototypes = rng.normal(size=(19, cfg.model.head_channels)).astype(np.float32)
    missing = np.arange(10)
    prototypes[missing] = 0.0
    fresh = CPSLModel(model.student, model.teacher, prototypes, rng.dirichlet(np.ones(19)), cfg.cpsl)
    fresh.use_optimizer(build_segmentation_optimizer(cfg, 1e-3, 1e-2, 100, fresh.trainable_for_step, 1e-2))
    fresh.compile(optimizer=fresh.grouped.optimizer)
    history = _fit(fresh, _batch(rng, (H // 4, W // 4)), steps=3)
    assert all(np.isfinite(v).all() for v in history.values())
    w = fresh.head.prototypes.numpy()
    norms = np.linalg.norm(w, axis=1)
    assert np.isfinite(w).all() and norms.max() < 1.5, norms
    unit = w[missing] / norms[missing, None]
    cosines = unit @ unit.T
    assert cosines[~np.eye(len(missing), dtype=bool)].max() < 0.9


def test_head_travel_is_logged_as_the_median_angle_of_w_prime(cfg):
    rng = np.random.default_rng(4)
    model = _model(cfg, rng)
    start = model.head.initial.numpy().astype(np.float64)
    history = _fit(model, _batch(rng, (H // 4, W // 4)), steps=2)
    w_prime = model.head.momentum_prototypes.numpy().astype(np.float64)
    cosines = (start * w_prime).sum(axis=1) / np.linalg.norm(w_prime, axis=1) / np.linalg.norm(start, axis=1)
    expected = np.median(np.degrees(np.arccos(np.clip(cosines, -1, 1))))
    assert expected > 1e-3
    assert history["head_travel"][-1] == pytest.approx(expected, rel=0.02)
    assert 0.0 <= history["q_marginal_gap"][-1] <= 1.0


def test_cutmix_box_takes_the_source_labels_and_is_left_out_of_the_target(cfg):
    """Paper preset with CutMix: inside the pasted box the target loss learns the source labels; the box
    is ignored for sampling and Eq. 11. Checked against a NumPy paste on the crop grid."""
    rng = np.random.default_rng(5)
    mixed_cfg = dataclasses.replace(cfg, cpsl=dataclasses.replace(cfg.cpsl, cutmix_prob=1.0))
    batch = _pipeline_batch(mixed_cfg, rng)
    model = _model(mixed_cfg, rng)
    p_st = tf.cast(batch["target_soft"], tf.float32)
    p_sl = tf.nn.softmax(rng.normal(size=p_st.shape).astype(np.float32), axis=-1)
    labels, target_labels, in_box = (t.numpy() for t in model._targets(batch, p_sl, p_st))
    rectified = np.argmax(p_sl.numpy() * p_st.numpy(), axis=-1)
    stride = H // p_st.shape[1]
    source = batch["source_label"].numpy()
    for n, (y1, x1, y2, x2) in enumerate(batch["cutmix_box"].numpy()):
        rows, cols = np.arange(p_st.shape[1]) * stride, np.arange(p_st.shape[2]) * stride
        inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        assert inside.any() and not inside.all()
        np.testing.assert_array_equal(in_box[n], inside)
        np.testing.assert_array_equal(labels[n][inside], source[n][np.ix_(rows, cols)][inside])
        np.testing.assert_array_equal(labels[n][~inside], rectified[n][~inside])
        assert (target_labels[n][inside] == 255).all()
        np.testing.assert_array_equal(target_labels[n][~inside], rectified[n][~inside])
    history = _fit(model, {k: v for k, v in batch.items()})
    assert all(np.isfinite(v[0]) for v in history.values())
