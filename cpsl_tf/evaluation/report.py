"""The report of a run folder: ``python scripts/report.py RUN_DIR`` -> ``RUN_DIR/report/report.{md,html}``.

What it shows (figures as PNG beside the report, every file written atomically):

1. per stage: target-val mIoU / MPA / PA / rare-class mIoU / wall time, the per-class IoU table and a
   bar chart of it (from ``results.json``);
2. paper Fig. 6: the class distribution of the target-train ground truth vs. the self-training pseudo
   labels (Eq. 10, ``pseudo/soft/class_distribution.json``) vs. the CPSL rectified labels (Eq. 11,
   ``delta_pseudo`` of ``cpsl/self_labeling.npz``), also as ``class_distribution.json``;
3. paper Fig. 4/7: mIoU and MPA over training from each stage's ``eval_history.jsonl``;
4. the row-normalised confusion matrix of the last stage's model on target val (also ``confusion.json``);
5. paper Fig. 3: image, ground truth, warm-up, CPSL (and last distillation) predictions of a few target-val
   images.

Parts 4 and 5 run the stage models (``run_models=False`` / ``--no-model`` skips them). A partial run gives
a partial report whose "Missing" section says what is absent and why.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cpsl_tf.command import UserError, run_command
from cpsl_tf.config import Config, ConfigError
from cpsl_tf.data import datasets
from cpsl_tf.evaluation import plots
from cpsl_tf.io_utils import atomic_write_json, atomic_write_text
from cpsl_tf.labels import RARE_CLASSES, class_names, colorize, palette
from cpsl_tf.run_config import CONFIG_NAME, read_run_config
from cpsl_tf.training.stages import TRAIN_HISTORY, selected_stages

log = logging.getLogger(__name__)

REPORT_DIR = "report"
# Stages that end with a network and target-val scores, in run order.
MODEL_STAGES = ("warmup", "cpsl", "distill1", "distill2")
PSEUDO_STORE = Path("pseudo") / "soft"
SELF_LABELING_STATE = Path("cpsl") / "self_labeling.npz"
HISTORY_NAME = "eval_history.jsonl"
RESULT_KEYS = ("miou", "mpa", "pa", "iou", "acc", "seconds")
TOP_CONFUSIONS = 5
# The pixels a model gets wrong in the examples' error column.
ERROR_COLOUR = (255, 0, 0)


class ReportError(UserError, ValueError):
    """A run folder that cannot be reported on (no config, malformed results); names the file."""


# --------------------------------------------------------------------------------------------- document


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    file: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def render_markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(block.header) + " |",
                     "|" + "|".join([":---"] + ["---:"] * (len(block.header) - 1)) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    """Escaped text with Markdown's `code` and **bold** spans as HTML."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


_HTML_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
               "td:not(:first-child),th:not(:first-child){text-align:right}img{max-width:100%}"
               "figcaption{font-style:italic;color:#555}code{background:#f4f4f4}")


def render_html(blocks: Sequence[Block], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_HTML_STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                           for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            parts.append(f"<figure><img src='{html.escape(block.file)}' alt='{html.escape(block.caption)}'>"
                         f"<figcaption>{_inline_html(block.caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


class ReportFolder:
    """The report's folder. It hands out the paths of the files a build writes, and then removes the figures
    and JSON files of an earlier build that this one did not write: a rerun with ``--no-model`` leaves no
    confusion matrix or examples of older models beside the new report."""

    def __init__(self, path: Path):
        self.path = path
        self.written: set[str] = set()

    def file(self, name: str) -> Path:
        self.written.add(name)
        return self.path / name

    def remove_stale(self) -> list[Path]:
        stale = [path for path in self.path.iterdir()
                 if path.is_file() and path.suffix in (".png", ".json") and path.name not in self.written]
        for path in stale:
            path.unlink()
        return stale


# --------------------------------------------------------------------------------------------- reading


@dataclass
class RunFolder:
    """What a run folder holds, read once."""

    run_dir: Path
    cfg: Config
    results: dict[str, dict]
    histories: dict[str, list[dict]]
    models: dict[str, Path]
    # Each stage's training numbers every train.log_every steps (train_history.jsonl).
    losses: dict[str, list[dict]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    # Share of each class in the target-train ground truth, else in the self-training pseudo labels
    # (class_share_of says which).
    class_share: np.ndarray | None = None
    class_share_of: str = ""

    @property
    def num_classes(self) -> int:
        return self.cfg.data.num_classes

    @property
    def names(self) -> tuple[str, ...]:
        return class_names(self.num_classes)


def read_steps(path: Path, required: Sequence[str] = ()) -> list[dict]:
    """The numbers of a JSON-lines log of one entry per step, with the ``required`` keys (kept when null),
    sorted by step. A resumed stage may have logged a step twice: the later entry wins. A line cut short by
    a crash is skipped with a warning."""
    by_step: dict[int, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            numbers = {key: value for key, value in entry.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            by_step[int(entry["step"])] = {**numbers, **{key: entry[key] for key in required},
                                           "step": int(entry["step"])}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            log.warning("%s:%d: skipping an unreadable entry (%s)", path, number, error)
    return [by_step[step] for step in sorted(by_step)]


def read_history(path: Path) -> list[dict]:
    """Periodic evaluations of a stage: the scores every stage logs (``pa`` None when absent) and any
    diagnostics a stage adds."""
    return [{"pa": None, **entry} for entry in read_steps(path, ("miou", "mpa"))]


def _check_result(stage: str, result, num_classes: int, path: Path) -> dict:
    if not isinstance(result, dict):
        raise ReportError(f"{path}: stages.{stage} must be an object, got {result!r}")
    missing = [key for key in RESULT_KEYS if key not in result]
    if missing:
        raise ReportError(f"{path}: stages.{stage} lacks {', '.join(missing)} (expected keys "
                          f"{', '.join(RESULT_KEYS)})")
    for key in ("iou", "acc"):
        if len(result[key]) != num_classes:
            raise ReportError(f"{path}: stages.{stage}.{key} has {len(result[key])} values but the run's "
                              f"config has data.num_classes={num_classes}")
    return result


def read_run(run_dir: str | Path) -> RunFolder:
    """Config, results, evaluation histories and final models of a run folder."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise ReportError(f"{config_path} does not exist: {run_dir} is not a run folder (scripts/train.py "
                          "writes the resolved config there when a run starts)")
    try:
        cfg = read_run_config(run_dir)
    except ConfigError as error:
        raise ReportError(str(error)) from error
    missing = []
    results_path = run_dir / "results.json"
    results: dict[str, dict] = {}
    if results_path.is_file():
        try:
            raw = json.loads(results_path.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{results_path}: not valid JSON ({error})") from error
        if not isinstance(raw, dict) or not isinstance(raw.get("stages"), dict):
            raise ReportError(f"{results_path}: expected {{\"stages\": {{<stage>: {{...}}}}}}")
        results = {stage: _check_result(stage, r, cfg.data.num_classes, results_path)
                   for stage, r in raw["stages"].items()}
    else:
        missing.append("`results.json` does not exist: no stage has finished with target-val scores")
    order = [s for s in MODEL_STAGES if s in selected_stages(cfg) or s in results]
    results = {s: results[s] for s in order if s in results} | {
        s: r for s, r in results.items() if s not in order}
    histories = {s: read_history(run_dir / s / HISTORY_NAME) for s in order
                 if (run_dir / s / HISTORY_NAME).is_file()}
    models = {s: run_dir / s / "model.weights.h5" for s in order
              if (run_dir / s / "model.weights.h5").is_file()}
    losses = {s: read_steps(run_dir / s / TRAIN_HISTORY) for s in order
              if (run_dir / s / TRAIN_HISTORY).is_file()}
    return RunFolder(run_dir, cfg, results, histories, models, losses, missing)


def stage_status(run: RunFolder, stage: str) -> str:
    folder = run.run_dir / stage
    if (folder / "done.json").is_file():
        return "finished"
    if (folder / "checkpoints").is_dir():
        return "interrupted (resumable)"
    return "not run"


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items spread over the whole sequence (sorted sets are grouped by city)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        return []
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _target_samples(cfg: Config, split: str) -> list[datasets.Sample]:
    reader = datasets.reader_for(cfg.data.target, "target")
    return datasets.list_samples(reader, cfg.data.target_root, split, cfg.data.num_classes)


# --------------------------------------------------------------------------------------------- formatting


def _is_number(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def percent(value, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}" if _is_number(value) else "n/a"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def rare_class_miou(ious: Sequence, names: Sequence[str]) -> float | None:
    """Mean IoU over the rare classes of the protocol where CPSL claims its gain (defined values only)."""
    values = [ious[i] for i, name in enumerate(names) if name in RARE_CLASSES and _is_number(ious[i])]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------- sections


def stage_sections(run: RunFolder, out: ReportFolder) -> list[Block]:
    blocks: list[Block] = [Heading("Stages")]
    expected = selected_stages(run.cfg)
    blocks.append(Table(["stage", "status", "final model", "target-val scores"],
                        [[s, stage_status(run, s),
                          "yes" if s in run.models else ("n/a" if s == "pseudo" else "no"),
                          "yes" if s in run.results else ("n/a" if s == "pseudo" else "no")]
                         for s in expected]))
    for stage in expected:
        if stage in MODEL_STAGES and stage not in run.results:
            run.missing.append(f"stage `{stage}` has no target-val scores in `results.json` "
                               f"({stage_status(run, stage)})")
    if not run.results:
        return blocks
    subsets = sorted({size for r in run.results.values() for size in (r.get("subsets") or {})}, key=int)
    header = ["stage", "mIoU", "MPA", "PA", "rare mIoU"] + [f"mIoU ({s})" for s in subsets] + ["time"]
    rows = []
    for stage, r in run.results.items():
        row = [stage, percent(r["miou"]), percent(r["mpa"]), percent(r["pa"]),
               percent(rare_class_miou(r["iou"], run.names))]
        row += [percent((r.get("subsets") or {}).get(s, {}).get("miou")) for s in subsets]
        rows.append(row + [duration(float(r["seconds"]))])
    rare = ", ".join(n for n in run.names if n in RARE_CLASSES)
    blocks += [Paragraph("Target-val scores (%) at the end of each stage, from `results.json`. "
                         f"Rare mIoU: mean IoU of {rare}."), Table(header, rows)]
    blocks += [Heading("Per-class IoU", 3),
               Table(["class", *run.results],
                     [[name, *(percent(r["iou"][i], 1) for r in run.results.values())]
                      for i, name in enumerate(run.names)])]
    order = (np.argsort(-run.class_share, kind="stable") if run.class_share is not None
             else np.arange(run.num_classes))
    baseline = "warmup" if "warmup" in run.results and len(run.results) > 1 else None
    plots.plot_per_class_iou({s: [r["iou"][i] for i in order] for s, r in run.results.items()},
                             [run.names[i] for i in order], out.file("per_class_iou.png"), baseline)
    what = "Change of each class's IoU against the warm-up (points)" if baseline else "Per-class IoU"
    sorting = (f"classes from the most to the least frequent in the {run.class_share_of}"
               if run.class_share is not None else "classes in protocol order")
    blocks.append(Image("per_class_iou.png", f"{what} on target val, per stage; {sorting}."))
    return blocks


def pseudo_label_distributions(run: RunFolder) -> dict[str, np.ndarray]:
    """Eq. 10 distribution of the self-training pseudo labels and Eq. 11 distribution of the CPSL
    rectified labels, as far as the run has them."""
    from cpsl_tf.data.pseudo_store import PseudoLabelStore, PseudoStoreError

    found: dict[str, np.ndarray] = {}
    state = None
    if (run.run_dir / SELF_LABELING_STATE).is_file():
        with np.load(run.run_dir / SELF_LABELING_STATE) as npz:
            state = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}
    try:
        store = PseudoLabelStore(run.run_dir / PSEUDO_STORE)
        found["self-training pseudo labels"] = store.class_distribution()
    except PseudoStoreError as error:
        if state is not None and "delta_start" in state:
            found["self-training pseudo labels"] = state["delta_start"]
            run.missing.append(f"self-training pseudo-label store unreadable ({error}); its distribution "
                               f"is taken from `delta_start` of `{SELF_LABELING_STATE}` (the same Eq. 10 "
                               "values)")
        else:
            run.missing.append(f"self-training pseudo-label distribution: {error}")
    if state is not None and "delta_pseudo" in state:
        found["CPSL rectified labels"] = state["delta_pseudo"]
    else:
        run.missing.append(f"CPSL rectified-label distribution: `{SELF_LABELING_STATE}` "
                           f"{'lacks delta_pseudo' if state is not None else 'does not exist'}")
    for label, values in found.items():
        if values.shape != (run.num_classes,):
            raise ReportError(f"{run.run_dir}: the {label} distribution has shape {values.shape}, expected "
                              f"({run.num_classes},)")
    return found


def distribution_section(run: RunFolder, out: ReportFolder, max_images: int | None) -> list[Block]:
    blocks: list[Block] = [Heading("Class distribution (paper Fig. 6)")]
    distributions: dict[str, np.ndarray] = {}
    record: dict = {"classes": list(run.names)}
    try:
        labelled = [s for s in _target_samples(run.cfg, "train") if s.label is not None]
    except datasets.DatasetError as error:
        labelled = []
        run.missing.append(f"target-train ground truth not readable at `{run.cfg.data.target_root}`: {error}")
    else:
        if not labelled:
            run.missing.append("target-train ground truth: the target training images have no label files")
    if labelled:
        chosen = evenly_spaced(labelled, max_images)
        counts = datasets.class_pixel_counts(chosen, run.num_classes)
        if counts.sum() > 0:
            distributions["ground truth"] = counts / counts.sum()
            record["ground_truth"] = {"counts": counts.tolist(), "images": len(chosen),
                                      "images_total": len(labelled)}
        else:
            run.missing.append("target-train ground truth: the counted labels hold no class pixel")
    distributions.update(pseudo_label_distributions(run))
    for label, source in (("ground truth", "target-train ground truth"),
                          ("self-training pseudo labels", "self-training pseudo labels of target train")):
        if label in distributions:
            run.class_share, run.class_share_of = distributions[label], source
            break
    if not distributions:
        return blocks + [Paragraph("Nothing to show: see Missing.")]
    keys = {"ground truth": "ground_truth", "self-training pseudo labels": "self_training",
            "CPSL rectified labels": "cpsl_rectified"}
    for label, values in distributions.items():
        record.setdefault(keys[label], {})["distribution"] = values.tolist()
    atomic_write_json(out.file("class_distribution.json"), record)
    text = ("Share of pixels per class (%) on target train. Ground truth: valid pixels of the label files"
            + (f" ({record['ground_truth']['images']} of {record['ground_truth']['images_total']} images)"
               if "ground_truth" in record else "")
            + "; self-training pseudo labels: argmax of the warm-up model's soft pseudo labels (Eq. 10); "
              "CPSL rectified labels: the moving class distribution of the rectified labels at the end of "
              "adaptation (Eq. 11). Values also in `class_distribution.json`.")
    rows = [[name, *(f"{100 * v[i]:.3g}" for v in distributions.values())]
            for i, name in enumerate(run.names)]
    if "ground truth" in distributions:
        truth = distributions["ground truth"]
        rows.append(["distance to ground truth (total variation, %)",
                     *(f"{50 * np.abs(v - truth).sum():.3g}" if label != "ground truth" else "-"
                       for label, v in distributions.items())])
    plots.plot_class_distributions(distributions, run.names, out.file("class_distribution.png"))
    return blocks + [Paragraph(text), Table(["class", *distributions], rows),
                     Image("class_distribution.png", "Class distribution on target train (log scale).")]


def angles_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle in degrees between the rows of a and b (any norms)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    return np.degrees(np.arctan2(np.linalg.norm(a - cosine[:, None] * b, axis=1), cosine))


def mechanism_section(run: RunFolder, out: ReportFolder) -> list[Block]:
    """Did the clustering move, and which way: W and W' against their start (the normalised Eq. 7
    prototypes), the collapse check, and the diagnostics logged during the stage."""
    blocks: list[Block] = [Heading("Self-labeling mechanism")]
    path = run.run_dir / SELF_LABELING_STATE
    if not path.is_file():
        run.missing.append(f"self-labeling state: `{SELF_LABELING_STATE}` does not exist")
        return blocks + [Paragraph("Nothing to show: see Missing.")]
    with np.load(path) as npz:
        state = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}
    wanted = ("initial_prototypes", "prototypes", "momentum_prototypes")
    if any(key not in state for key in wanted):
        run.missing.append(f"self-labeling travel: `{SELF_LABELING_STATE}` lacks "
                           f"{', '.join(k for k in wanted if k not in state)} (written by an older version)")
        return blocks + [Paragraph("Nothing to show: see Missing.")]
    start = state["initial_prototypes"]
    if start.shape[0] != run.num_classes:
        raise ReportError(f"{path}: the head has {start.shape[0]} classes, expected {run.num_classes}")
    moved = angles_degrees(state["momentum_prototypes"], start)
    travel = {"W'": moved, "W": angles_degrees(state["prototypes"], start)}
    unit = start / np.linalg.norm(start, axis=1, keepdims=True)
    between = np.degrees(np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)))
    np.fill_diagonal(between, np.inf)
    spacing = between.min(axis=1)
    end = state["momentum_prototypes"] / np.linalg.norm(state["momentum_prototypes"], axis=1, keepdims=True)
    end_cosine = end @ end.T
    np.fill_diagonal(end_cosine, -np.inf)
    norms = np.linalg.norm(state["prototypes"], axis=1)
    plots.plot_head_travel(travel, run.names, spacing, out.file("head_travel.png"))
    rows = [[name, f"{moved[i]:.2f}", f"{travel['W'][i]:.2f}", f"{spacing[i]:.1f}",
             run.names[int(np.argmax(end_cosine[i]))], f"{end_cosine[i].max():.3f}", f"{norms[i]:.3f}"]
            for i, name in enumerate(run.names)]
    summary = (f"W' moved a median {np.median(moved):.2f} degrees from its start (max "
               f"{moved.max():.2f}); the median class starts {np.median(spacing):.1f} degrees from its "
               f"nearest other class. Largest cosine between two classes of W' at the end: "
               f"{end_cosine.max():.4f} (1 = two clusters collapsed into one); |W| from {norms.min():.3f} to "
               f"{norms.max():.3f}.")
    blocks += [Paragraph(summary),
               Table(["class", "W' travel (deg)", "W travel (deg)", "nearest class at start (deg)",
                      "closest class at end", "its cosine", "|W|"], rows),
               Image("head_travel.png", "Angle of each class of the self-labeling head from its initial "
                     "prototype; marks: angle to the nearest other class at the start.")]
    history = [e for e in run.histories.get("cpsl", []) if "head_travel" in e]
    if history:
        blocks += [Heading("During adaptation", 3), Paragraph(
            "At each periodic evaluation of the `cpsl` stage: median and largest W' travel (degrees), L1 "
            "distance of delta_pseudo from its start (Eq. 10 -> Eq. 11), and target-val mIoU."),
            Table(["step", "median travel", "max travel", "delta_pseudo shift", "mIoU"],
                  [[str(e["step"]), f"{e['head_travel']:.2f}", f"{e.get('head_travel_max', math.nan):.2f}",
                    f"{e.get('delta_shift', math.nan):.4f}", percent(e.get("miou"))] for e in history])]
    return blocks


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


def curves_section(run: RunFolder, out: ReportFolder) -> list[Block]:
    blocks: list[Block] = [Heading("Training curves (paper Fig. 4/7)")]
    histories = {s: h for s, h in run.histories.items() if h}
    for stage in run.results:
        if stage not in histories:
            run.missing.append(f"stage `{stage}` has no periodic evaluations (`{stage}/{HISTORY_NAME}`)")
    curves, losses = stage_curves(run), loss_curves(run)
    if not curves and not losses:
        return blocks + [Paragraph("No scores or training numbers were logged: see Missing.")]
    offsets, lengths = stage_offsets(run.cfg), stage_lengths(run.cfg)
    finals = {s: (offsets[s] + lengths[s], run.results[s]["miou"], run.results[s]["mpa"])
              for s in curves if s in run.results}
    plots.plot_training_curves(curves, {s: offsets[s] for s in [*curves, *losses]},
                               out.file("training_curves.png"), finals, losses)
    rows = []
    for stage, history in histories.items():
        best = max(history, key=lambda e: e["miou"] if _is_number(e["miou"]) else -1.0)
        final = run.results.get(stage, {}).get("miou")
        rows.append([stage, str(len(history)), percent(history[0]["miou"]),
                     f"{percent(best['miou'])} (step {best['step']})", percent(history[-1]["miou"]),
                     percent(final)])
    joined = [f"{stage} from the end of {starting_point(run.cfg, stage)}" for stage in curves
              if starting_point(run.cfg, stage) in run.results]
    return blocks + [
        Paragraph(f"Target-val scores every `train.eval_every` = {run.cfg.train.eval_every} steps and at the "
                  "end of each stage; steps count over the whole run, each stage starting after the "
                  "configured iterations of the ones before it. A stage's line starts from the final score "
                  f"of the network it starts from ({', '.join(joined) or 'none here'}). Training loss every "
                  f"`train.log_every` = {run.cfg.train.log_every} steps (`<stage>/{TRAIN_HISTORY}`)."),
        *([Table(["stage", "evaluations", "first mIoU", "best mIoU", "last mIoU", "final mIoU"], rows)]
          if rows else []),
        Image("training_curves.png", "mIoU and MPA on target val during training (stars: end of stage) and "
              "the total training loss of each stage.")]


def _load_model(run: RunFolder, stage: str):
    from cpsl_tf.models.checkpoint import load_segmenter

    model, _ = load_segmenter(run.models[stage], num_classes=run.num_classes)
    return model


def confusion_section(run: RunFolder, out: ReportFolder, max_images: int | None) -> list[Block]:
    from cpsl_tf.evaluation.evaluate import evaluate_model

    blocks: list[Block] = [Heading("Confusion matrix")]
    if not run.models:
        run.missing.append("confusion matrix: no stage has a final model")
        return blocks + [Paragraph("No stage has a final model: see Missing.")]
    stage = list(run.models)[-1]
    try:
        labelled = [s for s in _target_samples(run.cfg, run.cfg.eval.split) if s.label is not None]
    except datasets.DatasetError as error:
        run.missing.append(f"confusion matrix: target {run.cfg.eval.split} set not readable: {error}")
        return blocks + [Paragraph("The target validation set is not readable: see Missing.")]
    if not labelled:
        run.missing.append(f"confusion matrix: the target {run.cfg.eval.split} images have no labels")
        return blocks + [Paragraph("The target validation set has no labels: see Missing.")]
    chosen = evenly_spaced(labelled, max_images)
    cfg = run.cfg
    result = evaluate_model(_load_model(run, stage), chosen, run.num_classes, image_size=cfg.data.target_size,
                            batch_size=cfg.eval.batch_size, align_corners=cfg.model.align_corners,
                            class_names=run.names)
    confusion = np.asarray(result["confusion"], dtype=np.int64)
    atomic_write_json(out.file("confusion.json"), {"stage": stage, "images": len(chosen),
                                               "classes": list(run.names), "confusion": confusion.tolist(),
                                               "miou": result["miou"], "mpa": result["mpa"]})
    title = f"{stage} on target {cfg.eval.split} ({len(chosen)} images)"
    plots.plot_confusion(confusion, run.names, out.file("confusion.png"), title)
    share = np.nan_to_num(plots.row_normalised(confusion))
    np.fill_diagonal(share, 0.0)
    order = np.argsort(share, axis=None)[::-1][:TOP_CONFUSIONS]
    worst = [f"{run.names[r]} predicted as {run.names[c]}: {100 * share[r, c]:.1f} % of {run.names[r]} pixels"
             for r, c in zip(*np.unravel_index(order, share.shape)) if share[r, c] > 0]
    blocks.append(Paragraph(f"Final model of stage `{stage}` on {len(chosen)} of {len(labelled)} target "
                            f"{cfg.eval.split} images (mIoU {percent(result['miou'])}, MPA "
                            f"{percent(result['mpa'])}); rows are normalised by the ground-truth pixels of "
                            "each class. Counts in `confusion.json`."))
    if worst:
        blocks += [Paragraph("Largest confusions:"), Bullets(worst)]
    return blocks + [Image("confusion.png", f"Row-normalised confusion matrix, {title}.")]


def predict_class_map(model, image: np.ndarray, cfg: Config, label_shape: Sequence[int]) -> np.ndarray:
    """(H, W) uint8 classes: the image resized to ``data.target_size``, logits upsampled to the label size
    with the model's corner convention, argmax (the evaluation protocol). The network runs compiled, in
    the function the evaluation of the same model uses."""
    from cpsl_tf.evaluation.confusion import upsampled_class_map
    from cpsl_tf.evaluation.evaluate import preprocess_image
    from cpsl_tf.models.segmenter import inference_function

    x = preprocess_image(image, cfg.data.target_size)[np.newaxis]
    logits = inference_function(model, cfg.data.target_size)(x)["logits"]
    size = (int(label_shape[0]), int(label_shape[1]))
    return np.asarray(upsampled_class_map(logits, size, cfg.model.align_corners)[0]).astype(np.uint8)


def examples_section(run: RunFolder, out: ReportFolder, count: int) -> list[Block]:
    blocks: list[Block] = [Heading("Qualitative examples (paper Fig. 3)")]
    distilled = [s for s in ("distill2", "distill1") if s in run.models][:1]
    stages = [s for s in ("warmup", "cpsl") if s in run.models] + distilled
    for stage in ("warmup", "cpsl"):
        if stage not in run.models:
            run.missing.append(f"examples: stage `{stage}` has no final model, its column is left out")
    if not stages:
        return blocks + [Paragraph("No stage has a final model: see Missing.")]
    try:
        samples = evenly_spaced(_target_samples(run.cfg, run.cfg.eval.split), count)
    except datasets.DatasetError as error:
        run.missing.append(f"examples: target {run.cfg.eval.split} set not readable: {error}")
        return blocks + [Paragraph("The target validation set is not readable: see Missing.")]
    images = [datasets.load_image(s.image) for s in samples]
    labels = [datasets.load_label(s.label, s.dataset, run.num_classes) if s.label else None for s in samples]
    predictions: dict[str, list[np.ndarray]] = {}
    for stage in stages:
        model = _load_model(run, stage)
        predictions[stage] = [predict_class_map(model, image, run.cfg,
                                                image.shape[:2] if label is None else label.shape)
                              for image, label in zip(images, labels)]
    last = stages[-1]
    rows = []
    for k, (image, label) in enumerate(zip(images, labels)):
        truth = None if label is None else colorize(label, run.num_classes)
        row = [("image", image), ("ground truth", truth)]
        row += [(stage, colorize(predictions[stage][k], run.num_classes)) for stage in stages]
        errors = None if label is None else error_map(image, predictions[last][k], label, run.num_classes)
        rows.append(row + [(f"errors of {last}", errors)])
    plots.plot_examples(rows, out.file("examples.png"), run.names, palette(run.num_classes))
    return blocks + [Paragraph(f"{len(samples)} target {run.cfg.eval.split} images: "
                               + ", ".join(f"`{s.name}`" for s in samples)
                               + ". Ignored pixels are black. The last column marks the pixels the final "
                                 f"model (`{last}`) gets wrong in red over the image in grey."),
                     Image("examples.png", "Image, ground truth, the predictions of " + ", ".join(stages)
                           + f" and the errors of {last}; the class colours below.")]


def error_map(image: np.ndarray, prediction: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """RGB at the label's size: pixels whose prediction differs from the label in :data:`ERROR_COLOUR`, the
    others the image in dimmed grey, pixels without a class black."""
    height, width = label.shape
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    grey = (0.6 * image.mean(axis=2)).astype(np.uint8)
    out = np.repeat(grey[..., np.newaxis], 3, axis=2)
    valid = label < num_classes
    out[valid & (prediction != label)] = ERROR_COLOUR
    out[~valid] = 0
    return out


# --------------------------------------------------------------------------------------------- report


def build_report(run_dir: str | Path, examples: int = 4, max_images: int | None = None,
                 run_models: bool = True) -> Path:
    """Write ``RUN_DIR/report/report.md``, ``report.html`` and their figures; returns the Markdown path.

    ``max_images`` caps the images read for the ground-truth distribution and the confusion matrix (an
    evenly spaced subset); ``run_models=False`` skips the confusion matrix and the examples.
    """
    run = read_run(run_dir)
    out = ReportFolder(run.run_dir / REPORT_DIR)
    out.path.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg
    # The distributions first: the per-class figure of the stages orders the classes by frequency.
    distributions = distribution_section(run, out, max_images)
    body = stage_sections(run, out) + distributions + mechanism_section(run, out) + curves_section(run, out)
    if run_models:
        body += confusion_section(run, out, max_images)
        if examples > 0:
            body += examples_section(run, out, examples)
    else:
        run.missing.append("confusion matrix and examples: skipped (`--no-model`)")
    title = f"CPSL run report: {cfg.name}"
    head: list[Block] = [Heading(title, 1), Paragraph(
        f"Run folder `{run.run_dir}`; {cfg.data.source} -> {cfg.data.target}, {run.num_classes} classes, "
        f"CPSL preset `{cfg.cpsl.preset}`, backbone {cfg.model.backbone}. Written "
        f"{time.strftime('%Y-%m-%d %H:%M')}." + (f" {cfg.description}" if cfg.description else "")),
        Paragraph(settings_used(cfg))]
    if run.missing:
        head += [Heading("Missing"), Bullets(run.missing)]
    blocks = head + body
    atomic_write_text(out.file("report.md"), render_markdown(blocks))
    atomic_write_text(out.file("report.html"), render_html(blocks, title))
    out.remove_stale()
    return out.file("report.md")


def settings_used(cfg: Config) -> str:
    """The sizes and lengths the run used, from its config (a ``--quick`` run's shrunk ones)."""
    d, m = cfg.data, cfg.model

    def size(hw: Sequence[int]) -> str:
        return f"{hw[0]}x{hw[1]}"

    rounds = cfg.distill.rounds
    distill = f", {rounds} distillation round(s) of {cfg.distill.iterations}" if rounds else ""
    return (f"Settings used: source images resized to {size(d.source_size)}, target images to "
            f"{size(d.target_size)}, crops {size(d.crop_size)}, batch {cfg.train.batch_size}; {m.backbone} "
            f"of base width {m.base_width}, head of {m.head_channels} channels; iterations: warm-up "
            f"{cfg.warmup.iterations}, CPSL {cfg.cpsl.iterations}{distill}.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/report.py",
        description="Markdown/HTML report of a run folder: per-stage scores, per-class IoU, class "
                    "distributions (Fig. 6), training curves, confusion matrix, qualitative examples.")
    parser.add_argument("run_dir", help="run folder written by scripts/train.py (holds config.json)")
    parser.add_argument("--examples", type=int, default=4, help="target-val images shown (default 4)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="read at most N images (evenly spaced) for the ground-truth distribution and "
                             "the confusion matrix (default: all)")
    parser.add_argument("--no-model", action="store_true",
                        help="do not run models: skip the confusion matrix and the examples")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.examples < 0:
        parser.error(f"--examples must be non-negative, got {args.examples}")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be at least 1, got {args.max_images}")
    return run_command(lambda: report_command(args))


def report_command(args: argparse.Namespace) -> int:
    path = build_report(args.run_dir, args.examples, args.max_images, run_models=not args.no_model)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
