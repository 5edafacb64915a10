"""Distillation into the real-time student (distill.student): the stage end to end on the tiny benchmark,
its sidecar naming the student, the cross-architecture step lowering its loss, and the student's export
passing the parity gates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.benchmark.generate import generate_benchmark
from cpsl_tf.config import load_config
from cpsl_tf.data.strong import strong_view
from cpsl_tf.models.checkpoint import load_segmenter, read_checkpoint_meta
from tests.faults.conftest import TINY_BENCH, tiny_config, write_config

STUDENT = {"student": "lraspp_mobilenet_v3_large", "student_width": 0.35, "student_head_channels": 16,
           "rounds": 1, "student_init": "teacher"}


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    from cpsl_tf.training.stages import run_stages

    root = tmp_path_factory.mktemp("student")
    generate_benchmark(root / "bench", **TINY_BENCH, workers=1, progress=False)
    config = write_config(root / "tiny.json", tiny_config(root / "bench", {"distill": STUDENT}))
    cfg = load_config(config)
    results = run_stages(cfg, root / "run")
    return cfg, root / "run", results


def test_distill_stage_trains_and_saves_the_student(student_run):
    cfg, run, results = student_run
    assert list(results["stages"]) == ["warmup", "cpsl", "distill1"]
    assert 0.0 <= results["stages"]["distill1"]["miou"] <= 1.0
    model_path = run / "distill1" / "model.weights.h5"
    meta = read_checkpoint_meta(model_path)
    assert meta["architecture"] == {"name": "lraspp_mobilenet_v3_large", "width": 0.35, "head_channels": 16,
                                    "bn_momentum": cfg.model.bn_momentum}
    assert meta["model"]["input_mean"] == [0.5] * 3 and meta["model"]["input_std"] == [0.5] * 3
    student, _ = load_segmenter(model_path)
    assert any(layer.name.startswith("lraspp_") for layer in student.layers)


def test_cross_architecture_step_lowers_its_loss(student_run):
    from cpsl_tf.training.builders import build_segmentation_optimizer
    from cpsl_tf.training.distill import Distillation, new_student

    cfg, run, _ = student_run
    teacher, _ = load_segmenter(run / "cpsl" / "model.weights.h5")
    student = new_student(cfg, teacher)
    grouped = build_segmentation_optimizer(cfg, 1e-2, 1e-1, 100, student.trainable_variables)
    trainer = Distillation(student, teacher, grouped, threshold=0.0, kd_weight=1.0)
    trainer.compile(optimizer=grouped.optimizer)
    rng = np.random.default_rng(0)
    h, w = 64, 96
    weak = rng.random((2, h, w, 3)).astype(np.float32)
    batch = {"source_image": rng.random((2, h, w, 3)).astype(np.float32),
             "source_label": rng.integers(0, 19, (2, h, w)).astype(np.uint8),
             "target_image": weak}
    views = [strong_view(tf.constant(weak[i]), tf.constant([i, 3], tf.int64)) for i in range(2)]
    batch["target_strong"] = tf.stack([image for image, _ in views]).numpy()
    batch["strong_params"] = {k: tf.stack([p[k] for _, p in views]).numpy() for k in views[0][1]}
    losses = trainer.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=4, steps_per_epoch=2,
                         verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_student_export_passes_the_gates_and_records_both_networks(student_run, tmp_path):
    from cpsl_tf.config import ExportConfig
    from cpsl_tf.data import datasets
    from cpsl_tf.export.pipeline import ExportOptions, export_model
    from cpsl_tf.io_utils import sha256_file

    cfg, run, _ = student_run
    student, meta = load_segmenter(run / "distill1" / "model.weights.h5")
    samples = datasets.list_samples("cityscapes", cfg.data.target_root, "val", 19)
    calibration = datasets.list_samples("cityscapes", cfg.data.target_root, "train", 19)
    export_model(student, meta, tmp_path, ExportConfig(height=64, width=128), samples, calibration,
                 ExportOptions(int8=True, fp16=True, max_int8_miou_drop=1.0, max_fp16_miou_drop=1.0),
                 log=lambda *_: None)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["parity"]["passed"], manifest["parity"]["failures"]
    assert manifest["input"]["shape"] == ["batch", 64, 128, 3]
    assert manifest["normalisation"]["mean"] == [0.5] * 3
    assert manifest["network"] == {"name": "lraspp_mobilenet_v3_large", "width": 0.35, "head_channels": 16,
                                   "bn_momentum": cfg.model.bn_momentum, "params": student.count_params()}
    teacher = manifest["distilled_from"]
    assert teacher["stage"] == "cpsl" and teacher["network"]["name"] == f"deeplabv2_{cfg.model.backbone}"
    assert teacher["weights_sha256"] == sha256_file(run / "cpsl" / "model.weights.h5")
    for name in ("model_int8", "model_fp16"):
        reduced = json.loads((tmp_path / f"{name}.manifest.json").read_text())
        assert reduced["parity"]["miou_drop"] is not None, name
        assert reduced["network"] == manifest["network"] and reduced["distilled_from"] == teacher
