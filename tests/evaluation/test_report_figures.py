"""The report's figures: examples with a palette legend and an error column, training curves joined across
stages with the training loss, per-class IoU as the change against the warm-up sorted by class frequency,
no stale figures after a rerun without models, and the sizes a --quick run used."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from cpsl_tf.config import load_config, save_config
from cpsl_tf.evaluation import plots
from cpsl_tf.evaluation.report import build_report, main, read_run
from cpsl_tf.evaluation.report.curves import loss_curves, stage_curves
from cpsl_tf.evaluation.report.model_sections import ERROR_COLOUR, error_map
from cpsl_tf.evaluation.report.sections import settings_used
from cpsl_tf.labels import class_names, palette
from tests.conftest import REPO
from tests.evaluation.test_report import (
    save_stage_model,
    stage_result,
    tiny_config,
    write_split,
)


@pytest.fixture(scope="module")
def run_with_figures(tmp_path_factory):
    """warm-up, CPSL and one distillation round finished; the distillation round has no periodic
    evaluation; warm-up and CPSL logged their training numbers."""
    rng = np.random.default_rng(2)
    tmp = tmp_path_factory.mktemp("figures")
    write_split(tmp / "target", "train", 4, rng)
    write_split(tmp / "target", "val", 2, rng)
    run = tmp / "run"
    cfg = tiny_config(tmp / "target")
    cfg = dataclasses.replace(cfg, warmup=dataclasses.replace(cfg.warmup, iterations=4),
                              cpsl=dataclasses.replace(cfg.cpsl, iterations=4),
                              distill=dataclasses.replace(cfg.distill, rounds=1, iterations=4,
                                                          student_init="teacher"))
    save_config(cfg, run / "config.json")
    results = {"warmup": stage_result(rng, 0.25), "cpsl": stage_result(rng, 0.375),
               "distill1": stage_result(rng, 0.4375)}
    (run / "results.json").write_text(json.dumps({"stages": results}))
    for stage in ("warmup", "pseudo", "cpsl", "distill1"):
        (run / stage).mkdir(parents=True, exist_ok=True)
        (run / stage / "done.json").write_text("{}")
    for stage in ("warmup", "cpsl", "distill1"):
        save_stage_model(cfg, run, stage)
    for stage in ("warmup", "cpsl"):
        (run / stage / "eval_history.jsonl").write_text(
            "\n".join(json.dumps({"step": s, "miou": 0.1 * s, "mpa": 0.2}) for s in (2, 4)) + "\n")
    (run / "warmup" / "train_history.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss_src": 2.0 / s, "learning_rate": {"backbone": 0.1}})
                  for s in (1, 2, 3, 4)) + "\n")
    (run / "cpsl" / "train_history.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 1.0 / s, "loss_src": 0.5}) for s in (2, 4)) + "\n")
    drawn = {}
    with pytest.MonkeyPatch.context() as patch:
        original = plots.plot_per_class_iou
        patch.setattr(plots, "plot_per_class_iou",
                      lambda *args: drawn.setdefault("per_class_iou", original(*args)))
        build_report(run, examples=1)
    return run, results, drawn


def test_examples_have_a_palette_legend_and_an_error_column(run_with_figures, tmp_path):
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    label = np.array([[0, 1, 255], [2, 2, 2]], dtype=np.uint8)
    prediction = np.array([[0, 2, 0], [2, 1, 2]], dtype=np.uint8)
    errors = error_map(image, prediction, label, 19)
    grey = [60, 60, 60]
    np.testing.assert_array_equal(errors, [[grey, ERROR_COLOUR, [0, 0, 0]], [grey, ERROR_COLOUR, grey]])
    rows = [[("image", image), ("ground truth", None), ("errors of cpsl", errors)]]
    figure = plots.plot_examples(rows, tmp_path / "examples.png", class_names(19), palette(19))
    legend = figure.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == list(class_names(19))
    np.testing.assert_allclose(legend.legend_handles[13].get_facecolor()[:3], palette(19)[13] / 255)
    run, _, _ = run_with_figures
    md = (run / "report" / "report.md").read_text()
    assert "the errors of distill1" in md and (run / "report" / "examples.png").stat().st_size > 0


def test_training_curves_join_the_stages_and_show_the_loss(run_with_figures):
    run, results, _ = run_with_figures
    curves = stage_curves(read_run(run))
    steps, miou, _ = curves["warmup"]
    np.testing.assert_array_equal(steps, [2, 4])  # its last evaluation is its end: no extra point
    np.testing.assert_allclose(miou, [0.2, 0.4])
    # CPSL starts from the warm-up's final score and ends at its own.
    steps, miou, _ = curves["cpsl"]
    np.testing.assert_array_equal(steps, [4, 6, 8])
    np.testing.assert_allclose(miou, [results["warmup"]["miou"], 0.2, 0.4])
    # The distillation round, never evaluated on the way, is a line from its teacher's score to its own.
    steps, miou, _ = curves["distill1"]
    np.testing.assert_array_equal(steps, [8, 12])
    np.testing.assert_allclose(miou, [results["cpsl"]["miou"], results["distill1"]["miou"]])
    losses = loss_curves(read_run(run))
    np.testing.assert_array_equal(losses["warmup"][0], [1, 2, 3, 4])
    np.testing.assert_allclose(losses["warmup"][1], [2.0, 1.0, 2 / 3, 0.5])  # loss_src: no total logged
    np.testing.assert_array_equal(losses["cpsl"][0], [6, 8])
    np.testing.assert_allclose(losses["cpsl"][1], [0.5, 0.25])


def test_per_class_iou_is_the_change_against_the_warmup_by_class_frequency(run_with_figures):
    run, results, drawn = run_with_figures
    axes = drawn["per_class_iou"].axes[0]
    # The train labels are drawn with CLASS_WEIGHTS: road 40, sidewalk 20, building 15, ..., sky 5,
    # bicycle 0.5.
    shown = [tick.get_text() for tick in axes.get_xticklabels()]
    assert shown[:3] == ["road", "sidewalk", "building"] and shown.index("sky") < shown.index("bicycle")
    bars = {container.get_label(): [patch.get_height() for patch in container]
            for container in axes.containers}
    assert set(bars) == {"cpsl", "distill1"}
    road = 0
    expected = 100 * (results["cpsl"]["iou"][road] - results["warmup"]["iou"][road])
    assert bars["cpsl"][shown.index("road")] == pytest.approx(expected)
    assert "change against warmup" in axes.get_title()


def test_a_rerun_without_models_removes_the_figures_of_models(run_with_figures, tmp_path):
    run = shutil.copytree(run_with_figures[0], tmp_path / "run")
    for name in ("confusion.png", "confusion.json", "examples.png"):
        assert (run / "report" / name).is_file()
    assert main([str(run), "--no-model"]) == 0
    left = {path.name for path in (run / "report").iterdir()}
    assert not left & {"confusion.png", "confusion.json", "examples.png"}
    assert {"report.md", "per_class_iou.png", "training_curves.png", "class_distribution.json"} <= left


def test_a_quick_run_is_described_with_its_shrunk_sizes(run_with_figures):
    full = load_config(REPO / "configs" / "bench.json")
    quick = load_config(REPO / "configs" / "bench.json", quick=True)
    assert "96x192" in full.description and "96x192" not in quick.description
    assert "smoke run (--quick) of config bench" in quick.description
    assert "target images to 64x128, crops 64x96" in settings_used(quick)
    md = (run_with_figures[0] / "report" / "report.md").read_text()
    assert "Settings used: source images resized to" in md and "iterations: warm-up 4, CPSL 4" in md
