"""Figures of the run report, each written as a PNG atomically.

Figures are built on ``matplotlib.figure.Figure`` directly (no ``pyplot``): saving a PNG renders with
the Agg canvas, no display is needed, and the global backend of the calling program is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cpsl_tf.io_utils import atomic_path

# Values drawn on a log axis are clipped to this floor so that absent classes still get a visible stub.
LOG_FLOOR = 1e-6


def _save(figure: Figure, path: str | Path, dpi: int = 110) -> Figure:
    """Write ``figure``; returned, so that tests can read what it shows."""
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return figure


def _as_float(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _grouped_bars(axes, groups: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
    x = np.arange(len(names))
    width = 0.8 / max(1, len(groups))
    for k, (label, values) in enumerate(groups.items()):
        axes.bar(x + (k - (len(groups) - 1) / 2) * width, values, width, label=label)
    axes.set_xticks(x, names, rotation=45, ha="right")
    axes.set_xlim(-0.6, len(names) - 0.4)
    axes.legend(fontsize=8)


def plot_per_class_iou(ious: Mapping[str, Sequence[float | None]], names: Sequence[str], path: str | Path,
                       baseline: str | None = None) -> Figure:
    """Grouped bars, one group per class in the order of ``names``: the per-class IoU (%) of every stage, or
    with a ``baseline`` stage and others, each other stage's change against it in IoU points. Undefined
    values (None/NaN) are drawn as no bar."""
    values = {stage: 100 * _as_float(v) for stage, v in ious.items()}
    compared = baseline in values and len(values) > 1
    if compared:
        base = values.pop(baseline)
        values = {stage: v - base for stage, v in values.items()}
    figure = Figure(figsize=(max(8.0, 0.6 * len(names)), 4.0))
    axes = figure.subplots()
    _grouped_bars(axes, {stage: np.nan_to_num(v, nan=0.0) for stage, v in values.items()}, names)
    axes.grid(axis="y", alpha=0.3)
    if compared:
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_ylabel(f"IoU change against {baseline} (points)")
        axes.set_title(f"Per-class IoU on target val: change against {baseline}")
    else:
        axes.set_ylabel("IoU (%)")
        axes.set_ylim(0, 100)
        axes.set_title("Per-class IoU on target val")
    return _save(figure, path)


def plot_class_distributions(distributions: Mapping[str, np.ndarray], names: Sequence[str],
                             path: str | Path) -> None:
    """Paper Fig. 6: grouped bars of class distributions (fractions), log scale, in percent."""
    groups = {label: 100 * np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)
              for label, values in distributions.items()}
    figure = Figure(figsize=(max(8.0, 0.6 * len(names)), 4.0))
    axes = figure.subplots()
    _grouped_bars(axes, groups, names)
    axes.set_yscale("log")
    axes.set_ylabel("pixels (%)")
    axes.grid(axis="y", alpha=0.3, which="both")
    axes.set_title("Class distribution on target train")
    _save(figure, path)


def plot_head_travel(travel: Mapping[str, np.ndarray], names: Sequence[str], spacing: np.ndarray,
                     path: str | Path) -> None:
    """Grouped bars: per-class angle (degrees) of W and W' from their start, with each class's angle to its
    nearest other prototype at the start drawn as a mark (the scale a move has to reach to matter)."""
    figure = Figure(figsize=(max(8.0, 0.6 * len(names)), 4.0))
    axes = figure.subplots()
    _grouped_bars(axes, {label: np.asarray(v, dtype=np.float64) for label, v in travel.items()}, names)
    axes.plot(np.arange(len(names)), spacing, "k_", markersize=14, label="nearest other class at start")
    axes.legend(fontsize=8)
    axes.set_ylabel("degrees")
    axes.grid(axis="y", alpha=0.3)
    axes.set_title("Self-labeling head: travel of each class from its initial prototype")
    _save(figure, path)


def plot_training_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         boundaries: Mapping[str, int], path: str | Path,
                         finals: Mapping[str, tuple[int, float, float]] | None = None,
                         losses: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Figure:
    """Paper Fig. 4/7: mIoU and MPA (%) over training iterations, one joined line per stage, and the training
    loss of each stage when ``losses`` has some.

    ``curves[stage] = (steps, miou, mpa)`` with steps counted over the whole run (each stage offset by
    the iterations of the stages before it); ``boundaries[stage]`` is the step where a stage starts;
    ``finals[stage] = (step, miou, mpa)``, the end-of-stage scores, drawn as stars;
    ``losses[stage] = (steps, loss)`` on the same steps.
    """
    panels_wanted = 3 if losses else 2
    figure = Figure(figsize=(5.0 * panels_wanted, 3.8))
    panels = figure.subplots(1, panels_wanted, sharex=True)
    colours = {stage: f"C{k}" for k, stage in enumerate(dict.fromkeys([*curves, *(losses or {})]))}
    for column, (axes, metric) in enumerate(zip(panels, ("mIoU", "MPA"))):
        for stage, curve in curves.items():
            axes.plot(curve[0], 100 * curve[1 + column], marker="o", markersize=3, label=stage,
                      color=colours[stage])
            if finals and stage in finals and finals[stage][1 + column] is not None:
                axes.plot(finals[stage][0], 100 * finals[stage][1 + column], marker="*", markersize=10,
                          color=colours[stage], linestyle="none")
        axes.set_ylabel(f"{metric} (%)")
    if losses:
        for stage, (steps, loss) in losses.items():
            panels[2].plot(steps, loss, linewidth=1.0, label=stage, color=colours[stage])
        panels[2].set_ylabel("training loss (total)")
        panels[2].legend(fontsize=8)
    for axes in panels:
        for stage, start in boundaries.items():
            if start > 0:
                axes.axvline(start, color="grey", linestyle="--", linewidth=0.8)
                axes.text(start, 1.0, f" {stage}", transform=axes.get_xaxis_transform(), fontsize=7,
                          va="top", color="grey")
        axes.set_xlabel("iteration (whole run)")
        axes.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    figure.suptitle("Target-val scores and training loss during training" if losses else
                    "Target-val scores during training")
    return _save(figure, path)


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its pixel count; rows of absent classes are NaN."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / totals, np.nan)


def plot_confusion(confusion: np.ndarray, names: Sequence[str], path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix as a heat map (rows = ground truth); cells >= 1 % are labelled."""
    share = row_normalised(confusion)
    size = max(6.0, 0.42 * len(names))
    figure = Figure(figsize=(size + 1.0, size))
    axes = figure.subplots()
    colours = matplotlib.colormaps["Blues"].with_extremes(bad="#d9d9d9")  # grey: class absent from the labels
    image = axes.imshow(np.ma.masked_invalid(share), cmap=colours, vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the class's pixels")
    ticks = np.arange(len(names))
    axes.set_xticks(ticks, names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(ticks, names, fontsize=8)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    for row, column in zip(*np.nonzero(np.nan_to_num(share) >= 0.01)):
        value = share[row, column]
        axes.text(column, row, f"{100 * value:.0f}", ha="center", va="center", fontsize=6,
                  color="white" if value > 0.5 else "black")
    axes.set_title(title)
    _save(figure, path)


def plot_examples(rows: Sequence[Sequence[tuple[str, np.ndarray | None]]], path: str | Path,
                  names: Sequence[str], colours: np.ndarray) -> Figure:
    """Paper Fig. 3: a grid of RGB panels, one row per image (``None`` panels are left blank), above a
    legend of the class ``colours`` (uint8 RGB, one per name)."""
    if not rows:
        raise ValueError("plot_examples needs at least one row of panels")
    columns = max(len(row) for row in rows)
    height, width = next(p for row in rows for _, p in row if p is not None).shape[:2]
    panel_width = 3.0
    figure = Figure(figsize=(panel_width * columns, panel_width * height / width * len(rows) + 1.2),
                    layout="constrained")
    grid = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for r, row in enumerate(rows):
        for c in range(columns):
            axes = grid[r, c]
            axes.set_axis_off()
            if c >= len(row):
                continue
            title, panel = row[c]
            if panel is not None:
                axes.imshow(panel, interpolation="nearest")
            if r == 0:
                axes.set_title(title, fontsize=9)
    handles = [Patch(facecolor=np.asarray(colour) / 255.0, edgecolor="grey", label=name)
               for name, colour in zip(names, colours)]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2 * columns + 2),
                  fontsize=7, frameon=False)
    return _save(figure, path)
