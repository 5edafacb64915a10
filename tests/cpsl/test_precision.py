"""One CPSL step under the mixed-precision policies: the networks compute in low precision, the step
trains with finite losses, and Sinkhorn's inputs, the memory bank and delta_pseudo stay float32."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.config import load_config, shrink
from cpsl_tf.cpsl.model import CPSLModel
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.training.optim import INITIAL_LOSS_SCALE
from cpsl_tf.training.warmup import build_segmentation_optimizer
from tests.cpsl.test_model import H, W, _batch


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_one_step_trains_with_float32_self_labeling_state(policy):
    if policy == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow's CPU kernels have no float16 gradient of dilated convolutions "
                    "(Conv2DBackpropInput: 'dilation rates larger than 1'); float16 needs a GPU")
    base = shrink(load_config(None, [f"train.mixed_precision={policy}"]))
    cfg = dataclasses.replace(base, cpsl=dataclasses.replace(base.cpsl, ema_momentum=0.9,
                                                              alignment_momentum=0.8))
    rng = np.random.default_rng(0)
    student = build_segmenter(cfg.model, 19)
    teacher = build_segmenter(cfg.model, 19, name="teacher")
    teacher.set_weights(student.get_weights())
    compute = {layer.compute_dtype for layer in student.layers if isinstance(layer, keras.layers.Conv2D)}
    assert compute == {policy.removeprefix("mixed_")}
    model = CPSLModel(student, teacher, rng.normal(size=(19, cfg.model.head_channels)),
                      rng.dirichlet(np.ones(19)).astype(np.float32), cfg.cpsl)
    model.use_optimizer(build_segmentation_optimizer(cfg, 1e-3, 1e-2, 100, model.trainable_for_step, 1e-2))
    model.compile(optimizer=model.grouped.optimizer)
    w_before = model.head.prototypes.numpy()
    kernel_before = student.get_layer("conv1").kernel.numpy()
    history = model.fit(tf.data.Dataset.from_tensors(_batch(rng, (H // 4, W // 4))).repeat(), epochs=1,
                        steps_per_epoch=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert history["loss_sl"][-1] > 0 and history["q_entropy"][-1] > 0
    assert model.bank.features.dtype == "float32" and model.delta_pseudo.dtype == "float32"
    rows = model.bank.valid_rows().numpy()
    assert rows.shape[0] == 2 * 2 * cfg.cpsl.pixels_per_image
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)  # float32-normalised rows
    assert model.delta_pseudo.numpy().sum() == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(model.head.prototypes.numpy(), w_before)
    assert not np.allclose(student.get_layer("conv1").kernel.numpy(), kernel_before)
    assert student.get_layer("conv1").kernel.dtype == "float32"  # float32 master weights
    if policy == "mixed_float16":
        assert model.grouped.loss_scaling and float(model.grouped.loss_scale.numpy()) == INITIAL_LOSS_SCALE
    else:
        assert not model.grouped.loss_scaling


def test_loss_scaling_skips_a_non_finite_step_in_every_group():
    from cpsl_tf.training.optim import GroupedSGD, SegmentationOptimizer

    group_of = lambda v: "a" if v.name.startswith("a") else "b"  # noqa: E731
    sgd = GroupedSGD({"a": 0.1, "b": 0.1}, group_of, 0.0, 10, 0.9, 0.9)
    grouped = SegmentationOptimizer(sgd, loss_scaling=True)
    variables = [keras.Variable(np.ones(2, np.float32), name="a0"), keras.Variable(np.ones(2, np.float32),
                                                                                  name="b0")]
    grouped.build(variables)
    scale = float(grouped.scale_loss(tf.constant(1.0)))
    assert scale == INITIAL_LOSS_SCALE
    assert not bool(grouped.apply([tf.constant([np.inf, 0.0]), tf.ones(2) * scale], variables))
    np.testing.assert_array_equal(variables[1].numpy(), 1.0)  # group b skipped too
    assert float(grouped.loss_scale.numpy()) == scale / 2
    assert bool(grouped.apply([tf.ones(2) * scale / 2, tf.ones(2) * scale / 2], variables))
    np.testing.assert_allclose(variables[0].numpy(), 1.0 - 0.1, rtol=1e-6)  # unscaled gradient 1, lr 0.1
