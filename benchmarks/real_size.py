"""The main job at the real datasets' sizes: every stage of configs/gta.json and configs/synthia.json, then
evaluate, export and predict, each timed and its peak host RSS measured, at batch 1.

    python benchmarks/real_size.py                       # both configs, about 30-40 min each on 2 cores
    python benchmarks/real_size.py --configs gta         # one config
    python benchmarks/real_size.py --scale 0.125 --out /tmp/rs.json   # a smoke run at an eighth of the sizes

It first writes a small tree at true sizes in the official layouts (nothing can be downloaded here):

* GTA5: ``images/*.png`` 1914x1052 RGB, ``labels/*.png`` 8-bit palette PNGs holding label ids;
* SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` 1280x760, ``GT/LABELS/*.png`` 16-bit 3-channel PNGs with SYNTHIA's
  own class ids in the first channel (``cpsl_tf.labels.SYNTHIA_IDS_19``);
* Cityscapes: ``leftImg8bit`` and ``gtFine`` 2048x1024 (the benchmark generator at that size).

The scenes are the benchmark's street scenes, drawn at those sizes. Then, for each config, each stage runs
in its own process (``scripts/train.py --stage S``) for a few iterations at batch 1 with random
initialisation (``model.imagenet_weights=false``: no download); its wall time and peak RSS come from
``os.wait4``. After the stages: ``evaluate.py`` on the last model, ``export.py`` (float32 ONNX at 1024x2048
with its parity gate against Keras) and ``predict.py`` with that ONNX model on a 2048x1024 frame; for gta
also ``export.py --int8 --calib-crop 512x1024`` (INT8 ranges measured on half-size crops: calibrating whole
1024x2048 images does not fit in 24 GB).

Each measured step is recorded as it finishes (``<workdir>/measurements.json``); a rerun skips the steps
already measured with success, so an interrupted run resumes. Entries of that file with a ``code`` field are
the same steps measured under earlier code (added by hand) and are tabled apart. Writes
``benchmarks/results/real_size.json`` and a Markdown table (``real_size.md``). Time nothing else while it
runs: the wall times assume the machine is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from memory import run_measured  # noqa: E402

from cpsl_tf.io_utils import atomic_path, atomic_write_json, atomic_write_text  # noqa: E402
from cpsl_tf.run_layout import STAGES, RunLayout  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET_GIB = 12.0
CONFIGS = ("gta", "synthia")
# True sizes (height, width).
GTA5_SIZE = (1052, 1914)
SYNTHIA_SIZE = (760, 1280)
CITYSCAPES_SIZE = (1024, 2048)


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(32, round(size[0] * scale)), max(32, round(size[1] * scale))


def write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"OpenCV could not write {path}")


def write_palette_label(path: Path, label_ids: np.ndarray) -> None:
    """GTA5's label format: an 8-bit palette PNG whose pixel values are the label ids."""
    from PIL import Image

    from cpsl_tf.labels import palette

    colours = np.zeros((256, 3), np.uint8)
    colours[:19] = palette(19)
    image = Image.fromarray(label_ids.astype(np.uint8), mode="L")
    image.putpalette(colours.ravel().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def synthia_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> SYNTHIA-RAND-CITYSCAPES class ids (0, void, where SYNTHIA has no class)."""
    from cpsl_tf.benchmark.generate import class_indices
    from cpsl_tf.labels import SYNTHIA_IDS_19

    table = np.zeros(20, np.uint16)
    table[:19] = SYNTHIA_IDS_19
    return table[class_indices(label_ids)]


def write_tree(root: Path, scale: float, source_images: int, target_train: int, target_val: int) -> dict:
    """The GTA5, SYNTHIA and Cityscapes trees at true sizes (times ``scale``) under ``root``; their roots."""
    from cpsl_tf.benchmark.generate import generate_benchmark, image_rng, render_scene
    from cpsl_tf.benchmark.style import domain_styles

    roots = {"gta5": root / "gta5", "synthia": root / "synthia", "cityscapes": root / "cityscapes" / "target"}
    height, width = scaled(CITYSCAPES_SIZE, scale)
    generate_benchmark(root / "cityscapes", height=height, width=width, num_source=1,
                       num_target_train=target_train, num_target_val=target_val, progress=False)
    style = domain_styles("A", 0.5)["source"]
    for index in range(source_images):
        image_name = f"{index + 1:05d}.png"
        if not (roots["gta5"] / "labels" / image_name).exists():
            rgb, label_ids = render_scene(image_rng(0, "A", "source", index), style,
                                          *scaled(GTA5_SIZE, scale))
            write_png(roots["gta5"] / "images" / image_name, rgb[..., ::-1])
            write_palette_label(roots["gta5"] / "labels" / image_name, label_ids)
        synthia_name = f"{index:07d}.png"
        if not (roots["synthia"] / "GT" / "LABELS" / synthia_name).exists():
            rgb, label_ids = render_scene(image_rng(1, "A", "source", index), style,
                                          *scaled(SYNTHIA_SIZE, scale))
            channels = np.zeros(label_ids.shape + (3,), np.uint16)
            channels[..., 2] = synthia_ids(label_ids)  # OpenCV writes BGR: index 2 is the PNG's first channel
            channels[..., 1] = np.arange(label_ids.size, dtype=np.uint32).reshape(label_ids.shape) % 65536
            write_png(roots["synthia"] / "RGB" / synthia_name, rgb[..., ::-1])
            write_png(roots["synthia"] / "GT" / "LABELS" / synthia_name, channels)
    return roots


def config_overrides(config: str, roots: dict, scale: float, iterations: int) -> list[str]:
    """Batch 1, a few iterations per stage, random initialisation, the tree's roots; sizes times ``scale``."""
    from cpsl_tf.config import load_config

    cfg = load_config(REPO / "configs" / f"{config}.json")
    sets = [f"data.source_root={roots[cfg.data.source]}", f"data.target_root={roots[cfg.data.target]}",
            "model.imagenet_weights=false", "train.batch_size=1", f"warmup.iterations={iterations}",
            f"cpsl.iterations={iterations}", f"distill.iterations={iterations}",
            f"train.checkpoint_every={iterations}", "train.eval_every=1000000"]
    if scale != 1:
        for key in ("source_size", "target_size", "crop_size"):
            height, width = scaled(getattr(cfg.data, key), scale)
            sets.append(f"data.{key}=[{height},{width}]")
    return sets


def pseudo_store_bytes(run_dir: Path) -> int:
    store = RunLayout(run_dir).stage("pseudo").pseudo_store
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())


def finished(done: dict, key: str) -> bool:
    """Whether the step ``key`` was measured and succeeded (failed steps run again)."""
    return done.get(key, {}).get("exit_code") == 0


def run_config(config: str, roots: dict, workdir: Path, scale: float, iterations: int, done: dict,
               record) -> None:
    """Measure every stage of ``config``, then evaluate, export and predict; ``record(key, result)`` saves."""
    run_dir = workdir / "runs" / config
    python = sys.executable
    sets = [a for o in config_overrides(config, roots, scale, iterations) for a in ("--set", o)]
    train = [python, "scripts/train.py", "--config", f"configs/{config}.json", "--run-dir", str(run_dir)]
    for stage in STAGES:
        if not finished(done, f"{config}/{stage}"):
            step = run_measured(train + ["--stage", stage, *sets])
            if stage == "pseudo" and step["exit_code"] == 0:
                images = len(list((roots["cityscapes"] / "leftImg8bit" / "train").rglob("*.png")))
                step["store_bytes_per_image"] = pseudo_store_bytes(run_dir) / images
            record(f"{config}/{stage}", step)
    model = RunLayout(run_dir).stage(STAGES[-1]).model
    height, width = scaled(CITYSCAPES_SIZE, scale)
    target = ["--dataset", "cityscapes", "--root", str(roots["cityscapes"]), "--split", "val"]

    def export(out: Path, *extra: str) -> list[str]:
        return [python, "scripts/export.py", "--checkpoint", str(model), "--out", str(out), "--height",
                str(height), "--width", str(width), *target, "--limit", "1", *extra]

    steps = {
        "evaluate": [python, "scripts/evaluate.py", "--checkpoint", str(model), *target,
                     "--image-size", str(height), str(width), "--batch-size", "1", "--quiet",
                     "--out", str(workdir / f"{config}_evaluate.json")],
        "export": export(workdir / config),
        "predict": [python, "scripts/predict.py", "--model", str(workdir / config / "model.onnx"),
                    str(next((roots["cityscapes"] / "leftImg8bit" / "val").rglob("*.png"))),
                    "--out", str(workdir / f"{config}_predict")],
    }
    if config == "gta":  # the same network as synthia's: once is enough
        crop = scaled((CITYSCAPES_SIZE[0] // 2, CITYSCAPES_SIZE[1] // 2), scale)
        # Random weights: the step measures memory, not accuracy, so the INT8 gate is left wide open.
        steps["export_int8"] = export(workdir / f"{config}_int8", "--int8", "--calib-crop",
                                      f"{crop[0]}x{crop[1]}", "--calib-root", str(roots["cityscapes"]),
                                      "--calib-count", "2", "--max-int8-miou-drop", "100")
    for name, command in steps.items():
        if not finished(done, f"{config}/{name}"):
            record(f"{config}/{name}", run_measured(command))


def markdown(result: dict) -> str:
    lines = ["| config | step | wall time | peak RSS | exit |", "|---|---|---|---|---|"]
    for key, step in result["steps"].items():
        config, name = key.split("/")
        extra = (f" (pseudo store {step['store_bytes_per_image'] / 2**20:.1f} MiB per image)"
                 if "store_bytes_per_image" in step else "")
        lines.append(f"| {config} | {name}{extra} | {step['seconds']:.0f} s | "
                     f"{step['peak_rss_gib']:.2f} GiB | {step['exit_code']} |")
    if result["earlier_code"]:
        lines += ["", "The same steps under earlier code (same tree and settings, one run each):", "",
                  "| config | step | code | wall time | peak RSS |", "|---|---|---|---|---|"]
        for key, step in result["earlier_code"].items():
            config, name = key.split("/")
            lines.append(f"| {config} | {name} | {step['code']} | {step['seconds']:.0f} s | "
                         f"{step['peak_rss_gib']:.2f} GiB |")
    lines += ["", f"Command: `{result['command']}`. Sizes x{result['scale']}, {result['iterations']} "
              f"iterations per training stage at batch 1, random initialisation; {result['machine']['cpus']} "
              f"CPU cores, no GPU. Peak RSS of each step's own process (`wait4`); target "
              f"{TARGET_GIB:.0f} GiB. Largest: {result['peak_rss_gib']:.2f} GiB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every image, crop and export size (a smoke run: 0.125)")
    parser.add_argument("--iterations", type=int, default=2, help="iterations of each training stage")
    parser.add_argument("--source-images", type=int, default=4)
    parser.add_argument("--target-train", type=int, default=4, help="Cityscapes train images (pseudo labels)")
    parser.add_argument("--target-val", type=int, default=2, help="Cityscapes val images (every evaluation)")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "runs" / "real_size",
                        help="the tree, the runs and the measurements so far (resumed)")
    parser.add_argument("--out", type=Path, default=RESULTS / "real_size.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/real_size.py " + " ".join(argv if argv is not None else sys.argv[1:])

    workdir = args.workdir.resolve() / (f"scale{args.scale:g}" if args.scale != 1 else "full")
    progress = workdir / "measurements.json"
    done = json.loads(progress.read_text()) if progress.exists() else {}

    def record(key: str, step: dict) -> None:
        done[key] = step
        atomic_write_json(progress, done)
        print(f"{key}: {step['seconds']:.0f} s, peak RSS {step['peak_rss_gib']:.2f} GiB, "
              f"exit {step['exit_code']}", flush=True)
        if step["exit_code"]:
            print(step.get("error", ""), flush=True)

    roots = write_tree(workdir / "data", args.scale, args.source_images, args.target_train, args.target_val)
    for config in args.configs:
        run_config(config, roots, workdir, args.scale, args.iterations, done, record)
    # Entries with a "code" field were measured under earlier code, for comparison (added by hand).
    ours = {key: step for key, step in done.items() if key.split("/")[0] in args.configs}
    steps = {key: step for key, step in ours.items() if "code" not in step}
    earlier = {key: step for key, step in ours.items() if "code" in step}
    result = {"command": command, "scale": args.scale, "iterations": args.iterations,
              "images": {"source": args.source_images, "target_train": args.target_train,
                         "target_val": args.target_val},
              "steps": steps, "earlier_code": earlier,
              "peak_rss_gib": max(s["peak_rss_gib"] for s in steps.values()),
              "target_gib": TARGET_GIB,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    result["under_target"] = result["peak_rss_gib"] <= TARGET_GIB and all(
        s["exit_code"] == 0 for s in steps.values())
    atomic_write_json(args.out, result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0 if all(s["exit_code"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
