"""The results table on the generated benchmark: baselines, CPSL presets, Table 3 ablations, over seeds.

    python benchmarks/adaptation.py                       # every cell, 3 seeds (hours on a 2-core CPU)
    python benchmarks/adaptation.py --only source_only cpsl_paper self_training --seeds 0
    python benchmarks/adaptation.py --jobs 2              # cells in parallel processes
    python benchmarks/adaptation.py --table-only          # rebuild the table from finished cells

Every cell is a normal run of the stage runner in ``benchmarks/runs/<cell>/seed<k>/`` (its results.json is
the record; finished cells are kept, interrupted ones resume). Cells that adapt share, per seed, the
warm-up and pseudo-label stages of ``benchmarks/runs/shared/seed<k>/`` (linked into their run folders).
Writes benchmarks/results/adaptation.json and adaptation.md (mean and spread over seeds of mIoU, MPA and the
mean IoU of the rare classes where CPSL claims its gain: light, sign, rider, motorcycle, bicycle, train).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.labels import RARE_CLASSES, class_names  # noqa: E402

RUNS = REPO / "benchmarks" / "runs"
RESULTS = REPO / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    label: str
    overrides: tuple[str, ...]
    stage: str  # the stage whose target-val scores are the cell's result
    adapts: bool  # starts from the shared warm-up + pseudo labels

    def describe(self) -> str:
        return " ".join(f"--set {o}" for o in self.overrides) or "(bench config)"


CELLS = (
    Cell("oracle", "oracle (target labels)", ("data.source=cityscapes", "data.source_root=data/bench/target",
                                              "data.source_size=[96,192]"), "warmup", False),
    Cell("source_only", "source only (= warm-up)", (), "warmup", False),
    Cell("source_photometric", "source only + photometric aug.", ("data.source_photometric=true",),
         "warmup", False),
    Cell("warmup_adversarial", "adversarial warm-up (AdaptSegNet)", ("warmup.mode=adversarial",), "warmup",
         False),
    Cell("self_training", "self-training only (w/o SL)", ("cpsl.use_self_labeling=false",), "cpsl", True),
    Cell("cpsl_paper", "CPSL, preset paper", (), "cpsl", True),
    Cell("cpsl_official", "CPSL, preset official", ("cpsl.preset=official",), "cpsl", True),
    Cell("wo_st", "w/o ST", ("cpsl.use_self_training=false",), "cpsl", True),
    Cell("wo_cb", "w/o CB", ("cpsl.class_balanced=false",), "cpsl", True),
    Cell("wo_init", "w/o Init", ("cpsl.prototype_init=false",), "cpsl", True),
    Cell("wo_aug", "w/o Aug", ("cpsl.strong_augmentation=false",), "cpsl", True),
    Cell("wo_mom", "w/o Mom", ("cpsl.use_momentum=false",), "cpsl", True),
    Cell("equal_partition", "equal partition", ("cpsl.equal_partition=true",), "cpsl", True),
)
BY_NAME = {cell.name: cell for cell in CELLS}


def _train(config: Path, overrides: list[str], run_dir: Path, stage: str | None, log: Path) -> None:
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config),
               "--run-dir", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    if stage:
        command += ["--stage", stage]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True)


def _link(shared: Path, run_dir: Path, stage: str) -> None:
    target = run_dir / stage
    if not target.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        target.symlink_to(shared / stage, target_is_directory=True)


def prepare_shared(seed: int, config: Path, extra: list[str]) -> Path:
    """The warm-up and pseudo-label stages every adapting cell of ``seed`` starts from (skipped when done)."""
    shared = RUNS / "shared" / f"seed{seed}"
    for stage in ("warmup", "pseudo"):
        if not (shared / stage / "done.json").exists():
            _train(config, [f"train.seed={seed}"] + extra, shared, stage, shared.with_suffix(".log"))
    return shared


def run_cell(cell: Cell, seed: int, config: Path, extra: list[str]) -> dict:
    """Run (or resume) one cell for one seed; returns its result dict from results.json."""
    seed_set = [f"train.seed={seed}"] + extra
    run_dir = RUNS / cell.name / f"seed{seed}"
    results = run_dir / "results.json"
    if results.exists() and cell.stage in json.loads(results.read_text())["stages"]:
        return json.loads(results.read_text())["stages"][cell.stage]
    log = run_dir.with_suffix(".log")
    if cell.stage == "warmup" and not cell.overrides:  # the shared warm-up itself
        shared = prepare_shared(seed, config, extra)
        return json.loads((shared / "results.json").read_text())["stages"]["warmup"]
    if cell.adapts:
        shared = prepare_shared(seed, config, extra)
        for stage in ("warmup", "pseudo"):
            _link(shared, run_dir, stage)
        _train(config, seed_set + list(cell.overrides), run_dir, "cpsl", log)
    else:
        _train(config, seed_set + list(cell.overrides), run_dir, "warmup", log)
    return json.loads(results.read_text())["stages"][cell.stage]


def _summary(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64) * 100
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(array), "values": [float(v) for v in array]}


def rare_miou(iou: list) -> float:
    names = class_names(19)
    values = [iou[names.index(c)] for c in RARE_CLASSES if iou[names.index(c)] is not None]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def collect(seeds: list[int]) -> dict:
    table = {}
    for cell in CELLS:
        rows = []
        for seed in seeds:
            folder = RUNS / ("shared" if cell.stage == "warmup" and not cell.overrides else cell.name)
            path = folder / f"seed{seed}" / "results.json"
            if path.exists():
                stages = json.loads(path.read_text())["stages"]
                if cell.stage in stages:
                    rows.append(stages[cell.stage])
        if rows:
            table[cell.name] = {
                "label": cell.label, "settings": cell.describe(), "stage": cell.stage,
                "miou": _summary([r["miou"] for r in rows]), "mpa": _summary([r["mpa"] for r in rows]),
                "rare_miou": _summary([rare_miou(r["iou"]) for r in rows]),
            }
    return table


def markdown(table: dict, command: str) -> str:
    lines = ["| setting | mIoU | MPA | rare-class mIoU | seeds |", "|---|---|---|---|---|"]
    def fmt(summary):
        if summary["n"] > 1:
            return f"{summary['mean']:.1f} ± {summary['std']:.1f}"
        return f"{summary['mean']:.1f}"

    for row in table.values():
        lines.append(f"| {row['label']} | {fmt(row['miou'])} | {fmt(row['mpa'])} | {fmt(row['rare_miou'])} | "
                     f"{row['miou']['n']} |")
    lines += ["", f"Command: `{command}`. Machine: {os.cpu_count()} CPU cores, {platform.machine()}. "
              "Spread is the sample standard deviation over seeds; differences under about 3 points are "
              "within seed noise on this benchmark (benchmark-notes)."]
    return "\n".join(lines) + "\n"


def write_outputs(seeds: list[int], command: str) -> dict:
    from cpsl_tf.io_utils import atomic_write_json, atomic_write_text

    table = collect(seeds)
    atomic_write_json(RESULTS / "adaptation.json", {"command": command, "seeds": seeds, "cells": table,
                                                    "machine": {"cpus": os.cpu_count(),
                                                                "platform": platform.platform()}})
    atomic_write_text(RESULTS / "adaptation.md", markdown(table, command))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bench.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="run these cells only")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for every cell (e.g. cpsl.iterations=500)")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from finished cells")
    args = parser.parse_args(argv)
    command = "python benchmarks/adaptation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.table_only:
        cells = [BY_NAME[name] for name in args.only] if args.only else list(CELLS)
        jobs = [(cell, seed) for seed in args.seeds for cell in cells]
        begin = time.time()
        if args.jobs > 1:
            # Shared warm-ups first, so that parallel cells never train the same one twice.
            if any(cell.adapts for cell in cells):
                for seed in args.seeds:
                    prepare_shared(seed, args.config, args.overrides)
            with ProcessPoolExecutor(args.jobs) as pool:
                list(pool.map(run_cell, *zip(*[(c, s, args.config, args.overrides) for c, s in jobs])))
        else:
            for cell, seed in jobs:
                print(f"cell {cell.name} seed {seed} ...", flush=True)
                result = run_cell(cell, seed, args.config, args.overrides)
                print(f"cell {cell.name} seed {seed}: mIoU {100 * result['miou']:.1f}", flush=True)
        print(f"{len(jobs)} cells in {time.time() - begin:.0f} s")
    table = write_outputs(args.seeds, command)
    print(markdown(table, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
