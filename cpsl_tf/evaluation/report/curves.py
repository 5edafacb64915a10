"""The training curves of the report (paper Fig. 4/7): each stage's periodic target-val scores and training
loss on one step axis over the whole run, consecutive stages joined into one line."""

from __future__ import annotations

import numpy as np

from cpsl_tf.config import Config
from cpsl_tf.evaluation import plots
from cpsl_tf.evaluation.report.reading import RunFolder
from cpsl_tf.evaluation.report.rendering import ReportFolder, figure, heading, is_number, percent, table
from cpsl_tf.run_layout import EVAL_HISTORY, MODEL_STAGES, TRAIN_HISTORY


def stage_lengths(cfg: Config) -> dict[str, int]:
    return {"warmup": cfg.warmup.iterations, "cpsl": cfg.cpsl.iterations,
            "distill1": cfg.distill.iterations, "distill2": cfg.distill.iterations}


def stage_offsets(cfg: Config) -> dict[str, int]:
    """First iteration of each training stage when the stages are laid end to end."""
    offsets, start = {}, 0
    for stage, length in stage_lengths(cfg).items():
        offsets[stage] = start
        start += length
    return offsets


def starting_point(cfg: Config, stage: str) -> str | None:
    """The stage whose final network ``stage`` starts from, so that its score at its first step is that
    stage's final score: CPSL's student is the warm-up model, a distillation round's student its teacher
    when ``distill.student_init`` is "teacher"."""
    if stage == "cpsl":
        return "warmup"
    if stage.startswith("distill") and cfg.distill.student_init == "teacher":
        return "cpsl" if stage == "distill1" else f"distill{int(stage[-1]) - 1}"
    return None


def _scores(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def stage_curves(run: RunFolder) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(steps over the whole run, mIoU, MPA) of each stage that has scores: the final score of the stage it
    starts from (:func:`starting_point`), its periodic evaluations, then its own final score, so that
    consecutive stages join into one line."""
    offsets, lengths = stage_offsets(run.cfg), stage_lengths(run.cfg)
    curves = {}
    for stage in [s for s in MODEL_STAGES if run.histories.get(s) or s in run.results]:
        points = [(offsets[stage] + e["step"], e["miou"], e["mpa"]) for e in run.histories.get(stage, [])]
        end = offsets[stage] + lengths[stage]
        if stage in run.results and (not points or points[-1][0] != end):
            points.append((end, run.results[stage]["miou"], run.results[stage]["mpa"]))
        start = starting_point(run.cfg, stage)
        if start in run.results:
            points.insert(0, (offsets[stage], run.results[start]["miou"], run.results[start]["mpa"]))
        steps, miou, mpa = zip(*points)
        curves[stage] = (np.array(steps, dtype=np.int64), _scores(miou), _scores(mpa))
    return curves


def loss_curves(run: RunFolder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps over the whole run, total training loss) of each stage that logged its training numbers; the
    warm-up, which logs no total, contributes its source cross-entropy ``loss_src``."""
    offsets = stage_offsets(run.cfg)
    curves = {}
    for stage, entries in run.losses.items():
        if stage not in offsets:
            continue
        totals = [(offsets[stage] + e["step"], e.get("loss", e.get("loss_src"))) for e in entries
                  if "loss" in e or "loss_src" in e]
        if totals:
            steps, values = zip(*totals)
            curves[stage] = (np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64))
    return curves


def curves_section(run: RunFolder, out: ReportFolder) -> list[str]:
    blocks = [heading("Training curves (paper Fig. 4/7)")]
    histories = {s: h for s, h in run.histories.items() if h}
    for stage in run.results:
        if stage not in histories:
            run.missing.append(f"stage `{stage}` has no periodic evaluations (`{stage}/{EVAL_HISTORY}`)")
    curves, losses = stage_curves(run), loss_curves(run)
    if not curves and not losses:
        return blocks + ["No scores or training numbers were logged: see Missing."]
    offsets, lengths = stage_offsets(run.cfg), stage_lengths(run.cfg)
    finals = {s: (offsets[s] + lengths[s], run.results[s]["miou"], run.results[s]["mpa"])
              for s in curves if s in run.results}
    plots.plot_training_curves(curves, {s: offsets[s] for s in [*curves, *losses]},
                               out.file("training_curves.png"), finals, losses)
    rows = []
    for stage, history in histories.items():
        best = max(history, key=lambda e: e["miou"] if is_number(e["miou"]) else -1.0)
        final = run.results.get(stage, {}).get("miou")
        rows.append([stage, str(len(history)), percent(history[0]["miou"]),
                     f"{percent(best['miou'])} (step {best['step']})", percent(history[-1]["miou"]),
                     percent(final)])
    joined = [f"{stage} from the end of {starting_point(run.cfg, stage)}" for stage in curves
              if starting_point(run.cfg, stage) in run.results]
    return blocks + [
        f"Target-val scores every `train.eval_every` = {run.cfg.train.eval_every} steps and at the end of "
        "each stage; steps count over the whole run, each stage starting after the configured iterations of "
        "the ones before it. A stage's line starts from the final score of the network it starts from "
        f"({', '.join(joined) or 'none here'}). Training loss every `train.log_every` = "
        f"{run.cfg.train.log_every} steps (`<stage>/{TRAIN_HISTORY}`).",
        *([table(["stage", "evaluations", "first mIoU", "best mIoU", "last mIoU", "final mIoU"], rows)]
          if rows else []),
        figure("training_curves.png", "mIoU and MPA on target val during training (stars: end of stage) and "
               "the total training loss of each stage.")]
