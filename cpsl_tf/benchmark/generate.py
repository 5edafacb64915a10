"""The generated two-domain benchmark: a game-like source and a photograph-like target of street scenes.

The source is written in the GTA5 layout and the target in the Cityscapes layout, so the readers of real
data serve the benchmark unchanged::

    <out>/source/images/00001.png, <out>/source/labels/00001.png            (labelIds, void = 0)
    <out>/target/leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png
    <out>/target/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_labelIds.png
    <out>/benchmark.json      parameters and class statistics; written last, so it marks a complete set
    <out>/class_histogram.png class pixel frequency per domain

Every image is seeded from (seed, variant, domain, index), so the set is the same for any worker count.
Scenes come from ``cpsl_tf.benchmark.scene``, domain styles from ``cpsl_tf.benchmark.style``.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cpsl_tf.benchmark.scene import draw_scene
from cpsl_tf.benchmark.style import (
    DEFAULT_SHIFT,
    VARIANT_SEEDS,
    VOID_INDEX,
    DomainStyle,
    apply_appearance,
    apply_photometry,
    domain_styles,
)
from cpsl_tf.io_utils import atomic_path, atomic_write_json
from cpsl_tf.labels import CLASS_NAMES_19, IGNORE_INDEX, lookup_table

GENERATOR_VERSION = 3  # bump whenever the images change, so that old sets are regenerated
TRAIN_CITIES = ("altenau", "brightwater", "corvale")
VAL_CITIES = ("dunmore",)
SPLITS = ("source", "target_train", "target_val")
_DOMAIN_CODES = {"source": 1, "target_train": 2, "target_val": 3}
_TRAIN_INDEX = lookup_table("cityscapes", 19)


def class_indices(label_ids: np.ndarray) -> np.ndarray:
    """labelIds -> 0..18 class indices, with void (every other id) as 19."""
    index = _TRAIN_INDEX[label_ids]
    return np.where(index == IGNORE_INDEX, VOID_INDEX, index).astype(np.int64)


def render_scene(rng: np.random.Generator, domain_style: DomainStyle, height: int,
                 width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene of a domain: (RGB uint8 HxWx3, Cityscapes labelIds uint8 HxW)."""
    base_rgb, label_ids = draw_scene(rng, domain_style, height, width)
    rgb = apply_appearance(base_rgb, class_indices(label_ids), domain_style.appearance, rng)
    return apply_photometry(rgb, domain_style.photometry, rng), label_ids


def image_rng(seed: int, variant: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, VARIANT_SEEDS[variant], _DOMAIN_CODES[split], index])


def sample_paths(out: Path, split: str, index: int) -> tuple[Path, Path]:
    """Image and label paths of sample ``index`` (0-based) of a split, in the GTA5 / Cityscapes layouts."""
    if split == "source":
        name = f"{index + 1:05d}.png"
        return out / "source" / "images" / name, out / "source" / "labels" / name
    subset, cities = ("train", TRAIN_CITIES) if split == "target_train" else ("val", VAL_CITIES)
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    return (out / "target" / "leftImg8bit" / subset / city / f"{stem}_leftImg8bit.png",
            out / "target" / "gtFine" / subset / city / f"{stem}_gtFine_labelIds.png")


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"OpenCV could not write {path}")


def _render_and_write(task: tuple) -> np.ndarray:
    """Worker: render one sample, write its two PNGs, return its pixel counts (19 classes + void)."""
    out, split, index, seed, variant, shift, height, width = task
    style = domain_styles(variant, shift)["source" if split == "source" else "target"]
    rgb, label_ids = render_scene(image_rng(seed, variant, split, index), style, height, width)
    image_path, label_path = sample_paths(Path(out), split, index)
    _write_png(image_path, rgb[..., ::-1])
    _write_png(label_path, label_ids)
    return np.bincount(class_indices(label_ids).ravel(), minlength=VOID_INDEX + 1)


def _split_statistics(counts: np.ndarray) -> dict:
    """Pixel fractions and image-presence fractions per class from (images, 20) pixel counts."""
    total = counts.sum()
    return {
        "images": int(counts.shape[0]),
        "pixel_fraction": {name: float(counts[:, c].sum() / total) for c, name in enumerate(CLASS_NAMES_19)},
        "image_fraction": {name: float((counts[:, c] > 0).mean()) for c, name in enumerate(CLASS_NAMES_19)},
        "void_fraction": float(counts[:, VOID_INDEX].sum() / total),
    }


def benchmark_parameters(variant: str = "A", seed: int = 0, height: int = 96, width: int = 192,
                         num_source: int = 1000, num_target_train: int = 1000, num_target_val: int = 200,
                         shift: float = DEFAULT_SHIFT) -> dict:
    """The parameters that define a benchmark set (recorded in benchmark.json)."""
    if variant not in VARIANT_SEEDS:
        raise ValueError(f"benchmark variant must be one of {sorted(VARIANT_SEEDS)}, got {variant!r}")
    if height < 32 or width < 32:
        raise ValueError(f"benchmark images must be at least 32x32 pixels, got {height}x{width}")
    counts = {"source": num_source, "target_train": num_target_train, "target_val": num_target_val}
    for name, count in counts.items():
        if count < 1:
            raise ValueError(f"benchmark needs at least one {name} image, got {count}")
    return {"generator_version": GENERATOR_VERSION, "variant": variant, "seed": int(seed),
            "shift": float(shift), "height": int(height), "width": int(width),
            "counts": {k: int(v) for k, v in counts.items()}}


def read_benchmark_json(out: str | Path) -> dict | None:
    path = Path(out) / "benchmark.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def generate_benchmark(out: str | Path, variant: str = "A", seed: int = 0, height: int = 96, width: int = 192,
                       num_source: int = 1000, num_target_train: int = 1000, num_target_val: int = 200,
                       workers: int = 1, shift: float = DEFAULT_SHIFT, progress: bool = True) -> dict:
    """Write the benchmark to ``out`` and return its statistics (the content of benchmark.json).

    Skips the work when ``out/benchmark.json`` records the same parameters; otherwise removes the old
    ``source/`` and ``target/`` folders and regenerates.
    """
    out = Path(out)
    params = benchmark_parameters(variant, seed, height, width, num_source, num_target_train, num_target_val,
                                  shift)
    existing = read_benchmark_json(out)
    if existing is not None and existing.get("parameters") == params:
        return existing
    (out / "benchmark.json").unlink(missing_ok=True)
    for folder in ("source", "target"):
        shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    tasks = [(str(out), split, i, seed, variant, shift, height, width)
             for split in SPLITS for i in range(params["counts"][split])]
    counts = np.stack(list(_map(tasks, workers, progress)))
    stats = {"parameters": params, "splits": {}}
    start = 0
    for split in SPLITS:
        stop = start + params["counts"][split]
        stats["splits"][split] = _split_statistics(counts[start:stop])
        start = stop
    plot_class_histogram(stats, out / "class_histogram.png")
    atomic_write_json(out / "benchmark.json", stats)
    return stats


def _map(tasks: list, workers: int, progress: bool) -> Iterable[np.ndarray]:
    """Per-sample pixel counts, in task order, from one process or a pool of ``workers``."""
    with tqdm(total=len(tasks), desc="benchmark", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                yield _render_and_write(task)
                bar.update()
            return
        # spawn: the parent may hold TensorFlow threads, which fork would copy in a broken state.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for counts in pool.imap(_render_and_write, tasks, chunksize=16):
                yield counts
                bar.update()


def plot_class_histogram(stats: dict, path: str | Path) -> None:
    """Bar chart (log scale) of the class pixel frequency of each split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    x = np.arange(len(CLASS_NAMES_19))
    width = 0.8 / len(stats["splits"])
    for k, (split, s) in enumerate(stats["splits"].items()):
        values = [max(s["pixel_fraction"][n], 1e-6) * 100 for n in CLASS_NAMES_19]
        ax.bar(x + (k - (len(stats["splits"]) - 1) / 2) * width, values, width, label=split)
    ax.set_yscale("log")
    ax.set_xticks(x, CLASS_NAMES_19, rotation=45, ha="right")
    ax.set_ylabel("pixels (%)")
    p = stats["parameters"]
    ax.set_title(f"generated benchmark, variant {p['variant']}, seed {p['seed']}, {p['height']}x{p['width']}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def format_statistics(stats: dict) -> str:
    """A text table: per class, pixel % and % of images containing it, for each split."""
    splits = list(stats["splits"])
    header = f"{'class':<12}" + "".join(f"{s + ' px%':>18}{'img%':>7}" for s in splits)
    lines = [header, "-" * len(header)]
    for name in CLASS_NAMES_19:
        row = f"{name:<12}"
        for s in splits:
            row += (f"{100 * stats['splits'][s]['pixel_fraction'][name]:>18.2f}"
                    f"{100 * stats['splits'][s]['image_fraction'][name]:>7.0f}")
        lines.append(row)
    lines.append(f"{'void':<12}" + "".join(f"{100 * stats['splits'][s]['void_fraction']:>18.2f}{'':>7}"
                                          for s in splits))
    return "\n".join(lines)
