"""Dataset verification: decode every file of a dataset and report what training would see.

``python scripts/prepare_data.py verify --dataset gta5 --root DIR`` prints counts, image and label sizes,
raw label ids (range, ignored ids, ids outside the dataset's id set), unreadable files, image/label size
mismatches and the per-class pixel histogram, and can write the report as JSON and the histogram as a plot.

Exit codes: 0 = usable (size mismatches and unknown ids are reported as warnings; training skips
mismatched pairs), 1 = unreadable files found, 2 = wrong layout, no samples or bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cpsl_tf.command import EXIT_USER_ERROR, run_command
from cpsl_tf.data.datasets import (
    RAW_ID_COUNT,
    READERS,
    DatasetError,
    Sample,
    list_samples,
    load_image,
    read_raw_label,
)
from cpsl_tf.io_utils import atomic_path, atomic_write_json
from cpsl_tf.labels import IGNORE_INDEX, SUPPORTED_NUM_CLASSES, class_names, lookup_table, palette

logger = logging.getLogger(__name__)

_LABEL_TABLE = {"cityscapes": "cityscapes", "folder": "cityscapes", "gta5": "gta5", "synthia": "synthia"}
_FILES_LISTED = 100

EXIT_OK, EXIT_UNREADABLE, EXIT_BAD_LAYOUT = 0, 1, EXIT_USER_ERROR


@dataclass
class _Inspection:
    """What decoding one sample found."""

    sample: Sample
    image_hw: tuple[int, int] | None = None
    label_hw: tuple[int, int] | None = None
    raw_id_pixels: np.ndarray | None = None  # bincount of the raw label ids
    errors: tuple[str, ...] = ()


def _inspect(sample: Sample) -> _Inspection:
    result = _Inspection(sample)
    errors = []
    try:
        result.image_hw = tuple(load_image(sample.image).shape[:2])
    except DatasetError as error:
        errors.append(str(error))
    if sample.label is not None:
        try:
            raw = read_raw_label(sample.label, sample.dataset)
            result.label_hw = tuple(raw.shape)
            result.raw_id_pixels = np.bincount(raw.ravel())
        except DatasetError as error:
            errors.append(str(error))
    result.errors = tuple(errors)
    return result


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def verify_dataset(
    dataset: str,
    root: str | Path,
    split: str = "train",
    num_classes: int = 19,
    *,
    label_root: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Decode every image and label of a dataset and return a JSON-serialisable report.

    Label statistics cover every readable label file; ``class_pixels`` counts the mapped classes of the
    ``num_classes`` protocol and ``class_images`` the number of label files in which each class occurs.
    Raises :class:`DatasetError` on a wrong layout or when there are no samples.
    """
    samples = list_samples(dataset, root, split, num_classes, label_root=label_root)
    names = class_names(num_classes)
    image_sizes: Counter[str] = Counter()
    label_sizes: Counter[str] = Counter()
    raw_pixels = np.zeros(0, dtype=np.int64)
    class_pixels = np.zeros(256, dtype=np.int64)
    class_images = np.zeros(256, dtype=np.int64)
    unknown_id_files: list[str] = []
    unreadable: list[dict] = []
    mismatches: list[dict] = []
    labelled = usable = 0
    known = range(RAW_ID_COUNT[dataset])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        inspections = pool.map(_inspect, samples)
        for result in tqdm(inspections, total=len(samples), desc=f"verify {dataset}", disable=not progress):
            sample = result.sample
            labelled += sample.label is not None
            for error in result.errors:
                unreadable.append({"name": sample.name, "error": error})
            if result.image_hw is not None:
                image_sizes[_size_text(result.image_hw)] += 1
            if result.label_hw is not None:
                label_sizes[_size_text(result.label_hw)] += 1
                counts = result.raw_id_pixels
                if counts.size > raw_pixels.size:
                    raw_pixels = np.pad(raw_pixels, (0, counts.size - raw_pixels.size))
                raw_pixels[: counts.size] += counts
                table = lookup_table(_LABEL_TABLE[dataset], num_classes, size=max(256, counts.size))
                present = np.flatnonzero(counts)
                mapped = np.bincount(table[present], weights=counts[present], minlength=256)
                class_pixels += mapped.astype(np.int64)
                class_images += mapped > 0
                if any(i not in known for i in present):
                    unknown_id_files.append(sample.name)
            if result.errors:
                continue
            if result.label_hw is not None and result.label_hw != result.image_hw:
                mismatches.append({
                    "name": sample.name,
                    "image": str(sample.image),
                    "label": str(sample.label),
                    "image_size": _size_text(result.image_hw),
                    "label_size": _size_text(result.label_hw),
                })
                continue
            usable += 1

    present_ids = np.flatnonzero(raw_pixels)
    table = lookup_table(_LABEL_TABLE[dataset], num_classes, size=max(256, raw_pixels.size))
    label_pixels = int(class_pixels.sum())
    return {
        "dataset": dataset,
        "root": str(Path(root)),
        "split": split if dataset == "cityscapes" else None,
        "num_classes": num_classes,
        "num_samples": len(samples),
        "num_labelled": labelled,
        "num_usable": usable,
        "image_sizes": dict(image_sizes.most_common()),
        "label_sizes": dict(label_sizes.most_common()),
        "unreadable": unreadable,
        "size_mismatches": mismatches,
        "raw_id_range": [int(present_ids.min()), int(present_ids.max())] if present_ids.size else None,
        "raw_id_pixels": {str(i): int(raw_pixels[i]) for i in present_ids},
        "ignored_ids": [int(i) for i in present_ids if table[i] == IGNORE_INDEX],
        "unknown_ids": {str(i): int(raw_pixels[i]) for i in present_ids if i not in known},
        "unknown_id_files": unknown_id_files[:_FILES_LISTED],
        "num_unknown_id_files": len(unknown_id_files),
        "label_pixels": label_pixels,
        "ignore_pixels": int(class_pixels[IGNORE_INDEX]),
        "class_pixels": {name: int(class_pixels[k]) for k, name in enumerate(names)},
        "class_images": {name: int(class_images[k]) for k, name in enumerate(names)},
    }


def format_report(report: dict) -> str:
    """A short human-readable summary of a :func:`verify_dataset` report."""
    split = f", split {report['split']}" if report["split"] else ""
    lines = [
        f"{report['dataset']} at {report['root']}{split} ({report['num_classes']} classes): "
        f"{report['num_samples']} samples, {report['num_labelled']} with labels, "
        f"{report['num_usable']} usable",
        "  image sizes (WxH): " + _counts_text(report["image_sizes"]),
        "  label sizes (WxH): " + (_counts_text(report["label_sizes"]) or "no labels"),
    ]
    if report["raw_id_range"] is not None:
        low, high = report["raw_id_range"]
        lines.append(f"  raw label ids: {low}..{high}; mapped to ignore: {report['ignored_ids']}")
    if report["unknown_ids"]:
        ids = ", ".join(f"{i} ({n} px)" for i, n in report["unknown_ids"].items())
        lines.append(
            f"  WARNING unknown label ids (outside the {report['dataset']} id set, mapped to ignore): {ids}; "
            f"in {report['num_unknown_id_files']} file(s): {', '.join(report['unknown_id_files'][:10])}"
        )
    if report["unreadable"]:
        lines.append(f"  ERROR {len(report['unreadable'])} unreadable file(s):")
        lines += [f"    {entry['error']}" for entry in report["unreadable"][:_FILES_LISTED]]
    if report["size_mismatches"]:
        lines.append(
            f"  WARNING {len(report['size_mismatches'])} image/label size mismatch(es) "
            "(left out of training):"
        )
        lines += [
            f"    {m['name']}: image {m['image_size']}, label {m['label_size']}"
            for m in report["size_mismatches"][:_FILES_LISTED]
        ]
    total = report["label_pixels"]
    if total:
        valid = max(total - report["ignore_pixels"], 1)
        lines.append("  class           % of valid px   images")
        for name, pixels in report["class_pixels"].items():
            lines.append(f"    {name:<14}{100 * pixels / valid:>10.3f} %{report['class_images'][name]:>9}")
        lines.append(f"  ignore: {100 * report['ignore_pixels'] / total:.2f} % of all labelled pixels")
    return "\n".join(lines)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in counts.items())


def plot_class_histogram(report: dict, path: str | Path) -> None:
    """Bar chart (log scale) of the share of valid pixels per class, in the Cityscapes colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(report["class_pixels"])
    pixels = np.array([report["class_pixels"][n] for n in names], dtype=np.float64)
    share = 100 * pixels / max(pixels.sum(), 1)
    colours = palette(report["num_classes"]) / 255.0
    figure, axes = plt.subplots(figsize=(10, 4))
    bars = axes.bar(range(len(names)), share, color=colours, edgecolor="black", linewidth=0.5)
    axes.bar_label(bars, labels=[f"{s:.2g}" if s > 0 else "0" for s in share], fontsize=7)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axes.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.set_ylabel("% of valid pixels")
    split = f" {report['split']}" if report["split"] else ""
    axes.set_title(f"{report['dataset']}{split}: {report['num_samples']} samples")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prepare_data.py", description="Dataset preparation tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="decode every file of a dataset and report sizes, label ids and the class histogram",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--dataset", required=True, choices=READERS,
        help="layout to read (generated benchmark: gta5 for <bench>/source, cityscapes for <bench>/target)",
    )
    verify.add_argument("--root", required=True, help="dataset root folder")
    verify.add_argument("--split", default="train", help="Cityscapes split (default: train)")
    verify.add_argument("--num-classes", type=int, default=19, choices=SUPPORTED_NUM_CLASSES,
                        help="class protocol of the histogram (default: %(default)s)")
    verify.add_argument("--label-root", help="parallel label folder of a 'folder' dataset (default: none)")
    verify.add_argument("--json", help="write the full report to this JSON file (default: none)")
    verify.add_argument("--plot", help="write a bar chart of the class histogram to this PNG file (default: "
                                       "none)")
    verify.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decoding threads (default: %(default)s, the CPUs up to 4)")
    verify.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: verify(args))


def verify(args: argparse.Namespace) -> int:
    report = verify_dataset(
        args.dataset, args.root, args.split, args.num_classes,
        label_root=args.label_root, workers=args.workers, progress=not args.no_progress,
    )
    print(format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"report written to {args.json}")
    if args.plot:
        plot_class_histogram(report, args.plot)
        print(f"class histogram written to {args.plot}")
    if report["unreadable"]:
        print(f"error: {len(report['unreadable'])} unreadable file(s), see above", file=sys.stderr)
        return EXIT_UNREADABLE
    return EXIT_OK
