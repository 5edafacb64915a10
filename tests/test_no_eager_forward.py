"""No eager forward pass of a segmenter on images outside training steps (issue 14).

An eager pass keeps every intermediate of the network alive: the R101 DeepLab-v2 on one 1024x2048 image is
killed above 23 GB that way, against a 1.9 GB peak in a ``tf.function``. The ``guard`` fixture makes every
eager call of a segmenter (a Keras functional model with a ``logits`` output) on a batch of images raise,
and counts its traces, so tiny inputs tell what a real-size run would hit: the pseudo-label stage, the
stage-end evaluation, evaluation, the report's predictions, export and prediction. Also: one evaluation
per stage end, and one evaluation function per model and input size (no retracing).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf

from cpsl_tf.config import load_config
from cpsl_tf.data.pseudo_store import PseudoLabelStore
from cpsl_tf.models.checkpoint import save_model_checkpoint
from cpsl_tf.models.segmenter import build_segmenter
from cpsl_tf.training import builders, pseudo, warmup
from cpsl_tf.training.stage import RunContext
from tests.conftest import REPO
from tests.faults.conftest import tiny_bench, tiny_config, write_config  # noqa: F401 (tiny_bench: fixture)

# The class of Keras functional models (keras.Model(inputs, outputs)), whose __call__ the guard wraps.
_probe = keras.Input((1,))
FUNCTIONAL = type(keras.Model(_probe, {"logits": keras.layers.Identity()(_probe)}))


class EagerForwardError(AssertionError):
    pass


def _is_segmenter(model) -> bool:
    try:
        outputs = model.output
    except (AttributeError, ValueError):
        return False
    return isinstance(outputs, dict) and "logits" in outputs


def _images(args, kwargs):
    x = args[0] if args else kwargs.get("inputs")
    if isinstance(x, (np.ndarray, tf.Tensor)) and not isinstance(x, keras.KerasTensor) and len(x.shape) == 4:
        return x
    return None


@pytest.fixture
def guard(monkeypatch) -> Counter:
    """Eager segmenter calls on images raise; returns the number of traces (graph-mode calls) per model."""
    traces: Counter = Counter()
    original = FUNCTIONAL.__call__

    def guarded(self, *args, **kwargs):
        images = _images(args, kwargs)
        if images is not None and _is_segmenter(self):
            if tf.executing_eagerly():
                raise EagerForwardError(f"eager forward pass of {self.name} on images {tuple(images.shape)}")
            traces[self] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FUNCTIONAL, "__call__", guarded)
    return traces


def test_guard_catches_an_eager_call_and_allows_a_compiled_one(guard):
    model = build_segmenter(load_config(None).model, 19)
    with pytest.raises(EagerForwardError, match="eager forward pass"):
        model(np.zeros((1, 16, 32, 3), np.float32))
    assert tf.function(lambda x: model(x, training=False))(tf.zeros((1, 16, 32, 3)))["logits"].shape[0] == 1
    assert guard[model] == 1


@pytest.fixture
def tiny_run(tiny_bench, tmp_path):  # noqa: F811 (the fixture imported above)
    """(config, run context) on the tiny benchmark, with an untrained warm-up model in place."""
    cfg = load_config(write_config(tmp_path / "tiny.json", tiny_config(tiny_bench, {
        "warmup": {"mode": "source_only"}, "train": {"eval_every": 2}})))
    ctx = RunContext(cfg, tmp_path / "run")
    save_model_checkpoint(build_segmenter(cfg.model, cfg.data.num_classes), ctx.layout.stage("warmup").model,
                          builders.checkpoint_meta(cfg, warmup.WARMUP))
    return cfg, ctx


def _stride8(n: int) -> int:
    """The output size of the official network: stride-2 stem, ceil-mode max-pool, stride-2 layer2."""
    n = -(-n // 2)
    n = -(-(n - 1) // 2) + 1
    return -(-n // 2)


def test_pseudo_stage_runs_the_network_compiled_and_traces_it_once(tiny_run, guard):
    cfg, ctx = tiny_run
    pseudo.run_pseudo_stage(ctx)
    (model, traces), = guard.items()
    assert traces == 1
    store = PseudoLabelStore(ctx.layout.stage("pseudo").pseudo_store)
    height, width = cfg.data.target_size
    assert store.shape == builders.output_shape(model, cfg) == (_stride8(height), _stride8(width)) == (9, 17)
    probs = store.get(store.names[0])
    assert probs.shape == (9, 17, 19)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=0.02)
    assert guard[model] == 1  # output_shape reused the stage's trace


def test_stage_evaluates_once_at_its_end_and_reuses_the_last_periodic_evaluation(tiny_run, guard,
                                                                                  monkeypatch):
    """warm-up of 2 steps with ``train.eval_every=2``: the periodic evaluation of step 2 is the final one."""
    cfg, ctx = tiny_run
    calls = []
    original = builders.evaluate_model

    def counted(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(builders, "evaluate_model", counted)
    result = warmup.run_warmup_stage(ctx)
    history = [json.loads(line) for line in ctx.layout.stage("warmup").history.read_text().splitlines()]
    assert [entry["step"] for entry in history] == [2]
    assert len(calls) == 1
    assert result["miou"] == history[0]["miou"] and result["mpa"] == history[0]["mpa"]
    assert set(result) >= {"miou", "mpa", "pa", "iou", "acc"}


def test_evaluation_builds_one_function_per_model_and_size(tiny_run, guard):
    """Two evaluations of one model, each over batches of 2 and 1 images: one trace in all."""
    from cpsl_tf.evaluation.evaluate import evaluate_model
    from cpsl_tf.training.inputs import stage_samples

    cfg, _ = tiny_run
    samples = stage_samples(cfg).target_val[:3]
    model = build_segmenter(cfg.model, cfg.data.num_classes)
    first = evaluate_model(model, samples, 19, image_size=cfg.data.target_size, batch_size=2)
    second = evaluate_model(model, samples, 19, image_size=cfg.data.target_size, batch_size=2)
    assert first["confusion"] == second["confusion"] and first["num_images"] == 3
    assert guard[model] == 1


def test_report_predictions_run_compiled(tiny_run, guard):
    from cpsl_tf.evaluation.report.model_sections import predict_class_map

    cfg, _ = tiny_run
    model = build_segmenter(cfg.model, cfg.data.num_classes)
    image = np.random.default_rng(0).integers(0, 256, (*cfg.data.target_size, 3), dtype=np.uint8)
    maps = [predict_class_map(model, image, cfg, (40, 72)) for _ in range(2)]
    assert maps[0].shape == (40, 72) and maps[0].dtype == np.uint8
    np.testing.assert_array_equal(maps[0], maps[1])
    assert guard[model] == 1


def test_export_with_parity_and_predict_run_compiled(tmp_path, guard):
    """scripts/export.py (float32 ONNX and its parity gate against the Keras model) and scripts/predict.py
    with the checkpoint: the Keras model runs only inside the deploy function."""
    from tests.export.conftest import tiny_model_and_meta, write_image_folder

    def load_script(name):
        spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    model, meta = tiny_model_and_meta()
    checkpoint = tmp_path / "tiny.weights.h5"
    save_model_checkpoint(model, checkpoint, meta)
    images, labels = write_image_folder(tmp_path / "val", 1, size=(40, 72))
    out = tmp_path / "export"
    assert load_script("export").main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", "32",
                                       "--width", "48", "--output", "logits", "--images", str(images),
                                       "--labels", str(labels)]) == 0
    assert json.loads((out / "manifest.json").read_text())["parity"]["passed"]
    predictions = tmp_path / "predictions"
    assert load_script("predict").main(["--model", str(checkpoint), "--size", "32", "48", "--no-overlay",
                                        str(images), "--out", str(predictions)]) == 0
    assert len(list(predictions.glob("*_classes.png"))) == 1
    assert sum(guard.values()) >= 1


def test_compiled_functions_of_several_models_do_not_warn_of_retracing(caplog):
    """Each model's function traces once; TensorFlow counts the tracings of functions that share their
    Python code together, and warned of "excessive retracing" from the fifth model on."""
    from cpsl_tf.models.segmenter import inference_function

    images = np.zeros((1, 8, 8, 3), np.float32)
    models = []
    for _ in range(6):
        inputs = keras.Input((None, None, 3))
        models.append(keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs)))
        with caplog.at_level("WARNING", logger="tensorflow"):
            inference_function(models[-1], (8, 8))(images)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
