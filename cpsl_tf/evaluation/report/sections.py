"""What the report says about what a run folder holds: the head of the report, the stages and their scores,
the class distributions of paper Fig. 6, and the self-labeling mechanism. Each section is a list of
Markdown blocks; it draws its figures into the report folder and adds what it cannot show to
``run.missing``. The training curves are in :mod:`.curves`, the sections that run models in
:mod:`.model_sections`."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from cpsl_tf.config import Config
from cpsl_tf.data import datasets
from cpsl_tf.evaluation import plots
from cpsl_tf.evaluation.report.reading import (
    MODEL_STAGES,
    RESULTS_NAME,
    SELF_LABELING_STATE,
    ReportError,
    RunFolder,
    target_samples,
)
from cpsl_tf.evaluation.report.rendering import (
    ReportFolder,
    bullets,
    duration,
    figure,
    heading,
    is_number,
    percent,
    table,
)
from cpsl_tf.io_utils import atomic_write_json
from cpsl_tf.labels import RARE_CLASSES
from cpsl_tf.metrics import total_variation


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items spread over the whole sequence (sorted sets are grouped by city)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        return []
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def head_section(run: RunFolder, title: str) -> list[str]:
    """Title, what the run is, the settings it used, and what is missing from the report."""
    cfg = run.cfg
    what = (f"Run folder `{run.run_dir}`; {cfg.data.source} -> {cfg.data.target}, {run.num_classes} classes, "
            f"CPSL preset `{cfg.cpsl.preset}`, backbone {cfg.model.backbone}. Written "
            f"{time.strftime('%Y-%m-%d %H:%M')}." + (f" {cfg.description}" if cfg.description else ""))
    blocks = [heading(title, 1), what, settings_used(cfg)]
    if run.missing:
        blocks += [heading("Missing"), bullets(run.missing)]
    return blocks


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


def rare_class_miou(ious: Sequence, names: Sequence[str]) -> float | None:
    """Mean IoU over the rare classes of the protocol where CPSL claims its gain (defined values only)."""
    values = [ious[i] for i, name in enumerate(names) if name in RARE_CLASSES and is_number(ious[i])]
    return float(np.mean(values)) if values else None


def stage_sections(run: RunFolder, out: ReportFolder) -> list[str]:
    blocks = [heading("Stages")]
    expected = run.selected_stages
    blocks.append(table(["stage", "status", "final model", "target-val scores"],
                        [[s, run.stage_status(s),
                          "yes" if s in run.models else ("n/a" if s == "pseudo" else "no"),
                          "yes" if s in run.results else ("n/a" if s == "pseudo" else "no")]
                         for s in expected]))
    for stage in expected:
        if stage in MODEL_STAGES and stage not in run.results:
            run.missing.append(f"stage `{stage}` has no target-val scores in `{RESULTS_NAME}` "
                               f"({run.stage_status(stage)})")
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
    blocks += [f"Target-val scores (%) at the end of each stage, from `{RESULTS_NAME}`. "
               f"Rare mIoU: mean IoU of {rare}.", table(header, rows)]
    blocks += [heading("Per-class IoU", 3),
               table(["class", *run.results],
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
    blocks.append(figure("per_class_iou.png", f"{what} on target val, per stage; {sorting}."))
    return blocks


def pseudo_label_distributions(run: RunFolder) -> dict[str, np.ndarray]:
    """Eq. 10 distribution of the self-training pseudo labels and Eq. 11 distribution of the CPSL
    rectified labels, as far as the run has them."""
    from cpsl_tf.data.pseudo_store import PseudoStoreError

    found: dict[str, np.ndarray] = {}
    state = run.self_labeling_state()
    try:
        found["self-training pseudo labels"] = run.pseudo_label_distribution()
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


def distribution_section(run: RunFolder, out: ReportFolder, max_images: int | None) -> list[str]:
    blocks = [heading("Class distribution (paper Fig. 6)")]
    distributions: dict[str, np.ndarray] = {}
    record: dict = {"classes": list(run.names)}
    try:
        labelled = [s for s in target_samples(run.cfg, "train") if s.label is not None]
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
        return blocks + ["Nothing to show: see Missing."]
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
                     *(f"{100 * total_variation(v, truth):.3g}" if label != "ground truth" else "-"
                       for label, v in distributions.items())])
    plots.plot_class_distributions(distributions, run.names, out.file("class_distribution.png"))
    return blocks + [text, table(["class", *distributions], rows),
                     figure("class_distribution.png", "Class distribution on target train (log scale).")]


def angles_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle in degrees between the rows of a and b (any norms)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)
    return np.degrees(np.arctan2(np.linalg.norm(a - cosine[:, None] * b, axis=1), cosine))


def mechanism_section(run: RunFolder, out: ReportFolder) -> list[str]:
    """Did the clustering move, and which way: W and W' against their start (the normalised Eq. 7
    prototypes), the collapse check, and the diagnostics logged during the stage."""
    blocks = [heading("Self-labeling mechanism")]
    state = run.self_labeling_state()
    if state is None:
        run.missing.append(f"self-labeling state: `{SELF_LABELING_STATE}` does not exist")
        return blocks + ["Nothing to show: see Missing."]
    wanted = ("initial_prototypes", "prototypes", "momentum_prototypes")
    if any(key not in state for key in wanted):
        run.missing.append(f"self-labeling travel: `{SELF_LABELING_STATE}` lacks "
                           f"{', '.join(k for k in wanted if k not in state)} (written by an older version)")
        return blocks + ["Nothing to show: see Missing."]
    start = state["initial_prototypes"]
    if start.shape[0] != run.num_classes:
        raise ReportError(f"{run.self_labeling_file}: the head has {start.shape[0]} classes, expected "
                          f"{run.num_classes}")
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
    blocks += [summary,
               table(["class", "W' travel (deg)", "W travel (deg)", "nearest class at start (deg)",
                      "closest class at end", "its cosine", "|W|"], rows),
               figure("head_travel.png", "Angle of each class of the self-labeling head from its initial "
                      "prototype; marks: angle to the nearest other class at the start.")]
    history = [e for e in run.histories.get("cpsl", []) if "head_travel" in e]
    if history:
        rows = [[str(e["step"]), f"{e['head_travel']:.2f}", f"{e.get('head_travel_max', math.nan):.2f}",
                 f"{e.get('delta_shift', math.nan):.4f}", percent(e.get("miou"))] for e in history]
        blocks += [heading("During adaptation", 3),
                   "At each periodic evaluation of the `cpsl` stage: median and largest W' travel (degrees), "
                   "L1 distance of delta_pseudo from its start (Eq. 10 -> Eq. 11), and target-val mIoU.",
                   table(["step", "median travel", "max travel", "delta_pseudo shift", "mIoU"], rows)]
    return blocks
