"""The results table on the generated benchmark: baselines, CPSL presets, Table 3 ablations, over seeds.

    python benchmarks/adaptation.py                       # every cell, 3 seeds (hours on a 2-core CPU)
    python benchmarks/adaptation.py --only source_only cpsl_paper self_training --seeds 0
    python benchmarks/adaptation.py --jobs 2              # cells in parallel processes
    python benchmarks/adaptation.py --table-only          # record finished cells, rebuild the table
    python benchmarks/adaptation.py --variant B --only source_only oracle   # the shift nobody tuned for

Every cell is a normal run of the stage runner in ``benchmarks/runs/<cell>/seed<k>/`` (finished cells are
kept, interrupted ones resume). ``benchmarks/runs`` is scratch space that a new machine does not have, so
each finished cell-seed is recorded in the repository, in ``benchmarks/results/adaptation-cells.json``: its
target-val scores, its evaluation history and the folder it came from. The table is built from these
records; a run folder whose result disagrees with its record is refused (the cells paired with it would no
longer share its warm-up). Every invocation first records what the run folders hold.
A record is one run: a seed on one machine type. The same seed trains a different warm-up on a CPU whose
oneDNN kernels differ (measured: seed 2's 6000-step warm-up scores 40.0 on the machine of sessions 4-9 and
38.3 on an AMD EPYC with AVX-512), so differences are paired only between runs of the same seed on the same
machine type. The records name the machine types (``m0`` is that of sessions 4-9, whose CPU was not
recorded); a machine not seen before is identified by its first warm-up: when it reproduces a record of a
machine whose CPU is unknown to the last digit, it is that machine, otherwise a new one. Cells that adapt
share, per seed, the warm-up and pseudo-label stages of ``benchmarks/runs/<base>/seed<k>/`` (linked into
their run folders); the bases are ``shared`` (the bench config's 2000 source-only steps), ``shared_6k``
(6000 steps) and ``shared_adv`` (the adversarial warm-up).
Writes benchmarks/results/adaptation.json and adaptation.md (mean and spread over seeds of mIoU, MPA and the
mean IoU of the rare classes where CPSL claims its gain: light, sign, rider, motorcycle, bicycle, train; and
each cell's mIoU minus that of its warm-up with the same seed, the paired difference that seed noise affects
least), then the head-to-head differences of ``COMPARISONS`` (CPSL vs self-training, ablations vs CPSL), also
paired by seed.
``--variant B`` runs the same cells on benchmark variant B (``data/bench-B``) into
``benchmarks/runs/variant-B`` and ``adaptation-B.{json,md}``.
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
from typing import NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.evaluation.report.reading import read_history  # noqa: E402
from cpsl_tf.labels import RARE_CLASSES, class_names  # noqa: E402
from cpsl_tf.run_layout import RunLayout  # noqa: E402

RUNS = REPO / "benchmarks" / "runs"
RESULTS = REPO / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    label: str
    overrides: tuple[str, ...]
    stage: str  # the stage whose target-val scores are the cell's result
    adapts: bool  # starts from the shared warm-up + pseudo labels of its base
    base: str = "shared"  # which shared warm-up (a key of BASES) the cell builds on or compares with
    compared_with: str | None = None  # the base its paired column subtracts, when not its own

    @property
    def paired_base(self) -> str:
        return self.compared_with or self.base

    @property
    def is_base(self) -> bool:
        """The plain warm-up of its base: its results are those of the shared folder itself."""
        return self.stage == "warmup" and not self.overrides

    def settings(self, layout: Layout) -> list[str]:
        return [o.format(data=layout.data) for o in BASES[self.base] + self.overrides]

    def describe(self, layout: Layout) -> str:
        return " ".join(f"--set {o}" for o in self.settings(layout)) or "(bench config)"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the cells of one benchmark variant find their data, run, and write their table."""

    variant: str = "A"

    @property
    def data(self) -> str:
        return "data/bench" if self.variant == "A" else f"data/bench-{self.variant}"

    @property
    def runs(self) -> Path:
        return RUNS if self.variant == "A" else RUNS / f"variant-{self.variant}"

    @property
    def results_stem(self) -> str:
        return "adaptation" if self.variant == "A" else f"adaptation-{self.variant}"

    def overrides(self) -> list[str]:
        if self.variant == "A":
            return []
        return [f"data.benchmark.variant={self.variant}", f"data.source_root={self.data}/source",
                f"data.target_root={self.data}/target"]


# The shared warm-ups: the bench config's 2000 steps, and 6000 steps. Neither the oracle nor source-only has
# converged at 2000 steps on this benchmark (both still climb to 6000), so the oracle's upper bound is the
# longer run, and CPSL is also measured from the longer warm-up. The third is the adversarial warm-up the
# official pipeline starts CPSL from.
BASES = {"shared": (), "shared_6k": ("warmup.iterations=6000", "train.eval_every=1000"),
         "shared_adv": ("warmup.mode=adversarial",)}
ORACLE = ("data.source=cityscapes", "data.source_root={data}/target", "data.source_size=[96,192]")
LONG = ("cpsl.iterations=10000", "cpsl.ema_momentum=0.999", "cpsl.alignment_momentum=0.999")

CELLS = (
    Cell("oracle", "oracle (target labels, 6000 steps)", ORACLE, "warmup", False, "shared_6k"),
    Cell("oracle_2k", "oracle at the warm-up's 2000 steps", ORACLE, "warmup", False),
    Cell("source_only", "source only (= warm-up, 2000 steps)", (), "warmup", False),
    Cell("source_only_6k", "source only, 6000 steps", (), "warmup", False, "shared_6k"),
    Cell("source_photometric", "source only + photometric aug.", ("data.source_photometric=true",),
         "warmup", False),
    Cell("warmup_adversarial", "adversarial warm-up (AdaptSegNet)", (), "warmup", False, "shared_adv",
         compared_with="shared"),
    Cell("self_training", "self-training only (w/o SL)", ("cpsl.use_self_labeling=false",), "cpsl", True),
    Cell("cpsl_paper", "CPSL, preset paper", (), "cpsl", True),
    Cell("cpsl_official", "CPSL, preset official", ("cpsl.preset=official",), "cpsl", True),
    Cell("wo_st", "w/o ST", ("cpsl.use_self_training=false",), "cpsl", True),
    Cell("wo_cb", "w/o CB", ("cpsl.class_balanced=false",), "cpsl", True),
    Cell("wo_init", "w/o Init", ("cpsl.prototype_init=false",), "cpsl", True),
    Cell("wo_aug", "w/o Aug", ("cpsl.strong_augmentation=false",), "cpsl", True),
    Cell("wo_mom", "w/o Mom", ("cpsl.use_momentum=false",), "cpsl", True),
    Cell("equal_partition", "equal partition", ("cpsl.equal_partition=true",), "cpsl", True),
    Cell("self_training_6k", "self-training only, from the 6000-step warm-up",
         ("cpsl.use_self_labeling=false",), "cpsl", True, "shared_6k"),
    Cell("cpsl_paper_6k", "CPSL paper, from the 6000-step warm-up", (), "cpsl", True, "shared_6k"),
    Cell("cpsl_paper_adv", "CPSL paper, from the adversarial warm-up", (), "cpsl", True, "shared_adv"),
    # r fixed at the target ground-truth distribution: tells a biased alignment target (Eq. 10 from the
    # warm-up's pseudo labels) from an alignment that does nothing.
    Cell("cpsl_gt_marginal", "CPSL paper, r = target ground truth (fixed)", ("cpsl.marginal=ground_truth",),
         "cpsl", True),
    # What the official preset changes, one component at a time on top of the paper preset.
    Cell("paper_rce", "paper + 0.1 CE + RCE target loss (official)", ("cpsl.target_loss=ce+rce",), "cpsl",
         True),
    Cell("paper_cutmix", "paper + CutMix 0.5 (official)", ("cpsl.cutmix_prob=0.5",), "cpsl", True),
    Cell("paper_fixed_r", "paper + fixed r, no Eq. 11 (official)", ("cpsl.alignment_momentum=1",), "cpsl",
         True),
    Cell("paper_official_prototypes", "paper + running-mean prototypes (official)",
         ("cpsl.prototype_mode=official",), "cpsl", True),
    Cell("paper_uniform_256", "paper + 256 uniform samples per image (official)",
         ("cpsl.class_balanced=false", "cpsl.pixels_per_image=256"), "cpsl", True),
    # Long horizon from the 6000-step warm-up, with the paper's momenta (0.999 needs thousands of steps):
    # the paper's Fig. 4 (equal vs unequal partition over iterations) and its Table 3 signs.
    *(Cell(f"{name}_long", f"{label}, 10000 steps from the 6000-step warm-up", LONG + overrides, "cpsl",
           True, "shared_6k")
      for name, label, overrides in (("cpsl_paper", "CPSL paper", ()),
                                     ("equal_partition", "equal partition", ("cpsl.equal_partition=true",)),
                                     ("wo_cb", "w/o CB", ("cpsl.class_balanced=false",)),
                                     ("wo_st", "w/o ST", ("cpsl.use_self_training=false",)),
                                     ("wo_mom", "w/o Mom", ("cpsl.use_momentum=false",)))),
)
BASE_CELL = {cell.base: cell for cell in CELLS if cell.is_base}
# Head-to-head differences, paired by seed: CPSL against self-training from the same warm-up, the presets,
# the warm-up CPSL starts from, and each Table 3 ablation against full CPSL (how the paper's Table 3 reads).
COMPARISONS = (
    ("cpsl_paper", "self_training"), ("cpsl_paper_6k", "self_training_6k"), ("cpsl_official", "cpsl_paper"),
    ("cpsl_paper_adv", "cpsl_paper"),
    *((ablation, "cpsl_paper") for ablation in (
        "wo_st", "wo_cb", "wo_init", "wo_aug", "wo_mom", "equal_partition", "cpsl_gt_marginal", "paper_rce",
        "paper_cutmix", "paper_fixed_r", "paper_official_prototypes", "paper_uniform_256")),
    *((ablation, "cpsl_paper_long") for ablation in ("equal_partition_long", "wo_cb_long", "wo_st_long",
                                                     "wo_mom_long")),
)
BY_NAME = {cell.name: cell for cell in CELLS}
# The cells of paper Fig. 4: unequal (CPSL) and equal partition over a long horizon.
PARTITION_CELLS = ("cpsl_paper_long", "equal_partition_long")


# A run reproduces to the last digit only for one thread count (on two threads, a variant-B warm-up of
# session 12 scored 24.81 where its one-thread record, on the same CPU, has 25.09), so every cell's process
# runs on one thread whatever the caller's environment.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def run_train_process(config: Path, overrides: list[str], run_dir: Path, stage: str | None,
                      log: Path) -> None:
    """``scripts/train.py`` in its own process on one thread (one stage, or every stage), its output appended
    to ``log``."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config),
               "--run-dir", str(run_dir)] + [a for o in overrides for a in ("--set", o)]
    if stage:
        command += ["--stage", stage]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True,
                       env={**os.environ, **ONE_THREAD})


def link_stage(shared: Path, run_dir: Path, stage: str) -> None:
    """Make ``run_dir/stage`` a link to ``shared/stage`` (kept when it exists)."""
    target = run_dir / stage
    if not target.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        target.symlink_to(shared / stage, target_is_directory=True)


def prepare_shared(seed: int, config: Path, extra: list[str], layout: Layout, base: str = "shared") -> Path:
    """The warm-up and pseudo-label stages the adapting cells of ``base`` and ``seed`` start from (skipped
    when done)."""
    shared = layout.runs / base / f"seed{seed}"
    for stage in ("warmup", "pseudo"):
        if not RunLayout(shared).stage(stage).done.exists():
            overrides = [f"train.seed={seed}"] + layout.overrides() + BASE_CELL[base].settings(layout) + extra
            run_train_process(config, overrides, shared, stage, shared.with_suffix(".log"))
    return shared


def changes_pseudo_stage(cell: Cell, config: Path, seed_set: list[str], layout: Layout) -> bool:
    """Whether the cell's settings change what the pseudo-label stage computes (its fingerprint), so that
    it cannot use the shared one."""
    from cpsl_tf.config import load_config
    from cpsl_tf.training.stages import stage_fingerprint

    base = load_config(config, seed_set + BASE_CELL[cell.base].settings(layout))
    own = load_config(config, seed_set + cell.settings(layout))
    return stage_fingerprint(base, "pseudo") != stage_fingerprint(own, "pseudo")


def run_cell(cell: Cell, seed: int, config: Path, extra: list[str], layout: Layout,
             reuse_record: bool = True) -> dict:
    """Run (or resume) one cell for one seed; returns its record. A cell that this machine type has
    recorded is not run again unless ``reuse_record`` is false (a caller that needs its run folder)."""
    machine = this_machine(layout)
    if reuse_record and machine is not None and (
            done := read_records(layout).get(cell.name, {}).get(Replicate(machine, seed))) is not None:
        return done
    seed_set = [f"train.seed={seed}"] + layout.overrides() + extra
    run_dir = layout.runs / cell.name / f"seed{seed}"
    log = run_dir.with_suffix(".log")
    if cell.is_base:
        prepare_shared(seed, config, extra, layout, cell.base)
    elif cell.adapts:
        shared = prepare_shared(seed, config, extra, layout, cell.base)
        own_pseudo = changes_pseudo_stage(cell, config, seed_set, layout)
        for stage in ("warmup",) if own_pseudo else ("warmup", "pseudo"):
            link_stage(shared, run_dir, stage)
        if own_pseudo:  # e.g. the official prototypes: the shared pseudo-label stage does not apply
            run_train_process(config, seed_set + cell.settings(layout), run_dir, "pseudo", log)
        run_train_process(config, seed_set + cell.settings(layout), run_dir, "cpsl", log)
    else:
        run_train_process(config, seed_set + cell.settings(layout), run_dir, "warmup", log)
    record_finished(layout, only=cell)
    return read_records(layout)[cell.name][Replicate(this_machine(layout), seed)]


def _summary(values: list[float]) -> dict:
    array = np.asarray(values, dtype=np.float64) * 100
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(array), "values": [float(v) for v in array]}


def rare_miou(iou: list) -> float:
    names = class_names(19)
    values = [iou[names.index(c)] for c in RARE_CLASSES if iou[names.index(c)] is not None]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


class RecordMismatch(SystemExit):
    """A run folder's result that differs from the one recorded for the same cell, seed and machine."""


REFERENCE_MACHINE = "m0"  # the machine type of sessions 4-9; its runs are keyed by their seed alone


def run_key(seed: int | str, machine: str) -> str:
    """How a run is keyed in the records: its seed on the reference machine, seed@machine on the others."""
    return str(seed) if machine == REFERENCE_MACHINE else f"{seed}@{machine}"


class Replicate(NamedTuple):
    """One run of a cell: a seed on one machine type. Paired differences pair equal replicates."""

    machine: str
    seed: int

    @classmethod
    def parse(cls, key: str) -> Replicate:
        seed, _, machine = key.partition("@")
        return cls(machine or REFERENCE_MACHINE, int(seed))

    @property
    def key(self) -> str:
        return run_key(self.seed, self.machine)


def machine_signature() -> str:
    """What decides the floating-point kernels TensorFlow runs here: oneDNN dispatches on the CPU's vendor,
    family, model and vector extensions, and the TensorFlow release brings its own kernels."""
    import importlib.metadata

    fields = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if not line.strip():
            break  # the first processor describes them all
        fields[key.strip()] = value.strip()
    vector = sorted(flag for flag in fields.get("flags", "").split()
                    if flag.startswith(("avx", "amx", "fma", "sse4")))
    vendor = fields.get("vendor_id", platform.processor() or "unknown")
    cpu = (f"{vendor} family {fields.get('cpu family', '?')} model {fields.get('model', '?')} "
           f"({fields.get('model name', 'unnamed')})")
    return (f"{platform.machine()} {cpu}, {' '.join(vector) or 'no vector flags read'}; "
            f"tensorflow {importlib.metadata.version('tensorflow')}")


def records_path(layout: Layout) -> Path:
    return RESULTS / f"{layout.results_stem}-cells.json"


def _saved(layout: Layout) -> dict:
    path = records_path(layout)
    return json.loads(path.read_text()) if path.exists() else {}


def read_records(layout: Layout) -> dict[str, dict[Replicate, dict]]:
    """The recorded results: cell name -> replicate -> record (scores as fractions, as in results.json)."""
    return {name: {Replicate.parse(key): record for key, record in runs.items()}
            for name, runs in _saved(layout).get("cells", {}).items()}


def read_machines(layout: Layout) -> dict[str, dict]:
    """The machine types the records name: id -> {"signature": machine_signature() or None, "note"}."""
    unrecorded = {"signature": None, "note": "the machine of sessions 4-9; its CPU was not recorded"}
    return _saved(layout).get("machines", {REFERENCE_MACHINE: unrecorded})


def this_machine(layout: Layout) -> str | None:
    """The id of this machine type in the records (None until its first record)."""
    return _machine_with(read_machines(layout), machine_signature())


def describe_this_machine(layout: Layout) -> str:
    """Which machine type of the records this one is, for choosing the cells to run here."""
    signature = machine_signature()
    machine = _machine_with(read_machines(layout), signature)
    if machine is not None:
        return f"{machine}: {signature} (its runs are keyed {run_key('<seed>', machine)})"
    return (f"not in the records: {signature}. Its first warm-up, once recorded (--table-only), names it: a "
            f"machine whose CPU was not recorded if it reproduces that machine's record, else a new type")


def _machine_with(machines: dict[str, dict], signature: str) -> str | None:
    return next((m for m, known in machines.items() if known["signature"] == signature), None)


def write_records(records: dict[str, dict[Replicate, dict]], layout: Layout,
                  machines: dict[str, dict] | None = None) -> None:
    from cpsl_tf.io_utils import atomic_write_json

    cells = {name: {run.key: records[name][run] for run in sorted(records[name])}
             for name in sorted(records) if records[name]}
    atomic_write_json(records_path(layout), {
        "about": "Each finished cell and run of benchmarks/adaptation.py: target-val scores (fractions), "
                 "the mean IoU of the rare classes, the stage's periodic evaluations, and where it came "
                 "from. A run is keyed by its seed on machine m0, by seed@machine on the others. The "
                 "tables are built from here.",
        "machines": machines if machines is not None else read_machines(layout),
        "cells": cells})


def run_record(cell: Cell, folder: Path) -> dict | None:
    """The record of one finished run folder of ``cell`` (None while it has no score for the cell's stage)."""
    run = RunLayout(folder)
    if not run.results.exists():
        return None
    result = json.loads(run.results.read_text())["stages"].get(cell.stage)
    if result is None:
        return None
    history = run.stage(cell.stage).history
    entries = read_history(history) if history.exists() else []
    return {**result, "rare_miou": rare_miou(result["iou"]), "history": entries,
            "recorded_from": _shown(folder)}


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _identify(machines: dict[str, dict], records: dict[str, dict[Replicate, dict]],
              finished: list[tuple[Cell, int, dict]]) -> str:
    """The id of this machine type: known by its signature; else a machine of unknown signature that has no
    record yet, or whose base warm-up a finished one here reproduces to the last digit; else a new id."""
    signature = machine_signature()
    if (known := _machine_with(machines, signature)) is not None:
        return known
    unknown = [m for m, k in machines.items() if k["signature"] is None]
    for machine in unknown:
        if not any(run.machine == machine for runs in records.values() for run in runs):
            machines[machine]["signature"] = signature
            return machine
    for cell, seed, record in finished:
        for machine in unknown:
            earlier = records.get(cell.name, {}).get(Replicate(machine, seed))
            if cell.is_base and earlier is not None and abs(earlier["miou"] - record["miou"]) <= 1e-9:
                known_as = machines[machine]["note"].split(";")[0]
                machines[machine] = {"signature": signature, "note": (
                    f"{known_as}; its CPU recorded {time.strftime('%Y-%m-%d')}, when {cell.name} seed {seed} "
                    "reproduced its record to the last digit")}
                return machine
    new = f"m{len(machines)}"
    machines[new] = {"signature": signature, "note": f"first recorded {time.strftime('%Y-%m-%d')}"}
    return new


def record_finished(layout: Layout, only: Cell | None = None) -> None:
    """Add every finished run folder (of ``only``, or of every cell) to the records, as runs of this machine
    type, and save them. A run whose mIoU differs from its record on this machine type stops with a message
    naming both. Queues in other processes record too: the read-modify-write holds a lock."""
    import fcntl

    layout.runs.mkdir(parents=True, exist_ok=True)
    with open(layout.runs / ".records.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records, machines = read_records(layout), read_machines(layout)
        known_machines, added = {m: dict(k) for m, k in machines.items()}, False
        finished = []
        # Warm-ups first: they identify the machine, so ``only`` comes with the warm-up it builds on.
        cells = {BASE_CELL[only.base], only} if only else set(CELLS)
        for cell in sorted(cells, key=lambda c: (not c.is_base, c.name)):
            folder = layout.runs / (cell.base if cell.is_base else cell.name)
            for seed_folder in sorted(folder.glob("seed*")):
                if seed_folder.name[4:].isdigit() and (record := run_record(cell, seed_folder)) is not None:
                    finished.append((cell, int(seed_folder.name[4:]), record))
        if not finished:
            return
        machine = _identify(machines, records, finished)
        for cell, seed, record in finished:
            run = Replicate(machine, seed)
            known = records.setdefault(cell.name, {}).get(run)
            if known is not None and abs(known["miou"] - record["miou"]) > 1e-9:
                raise RecordMismatch(
                    f"{record['recorded_from']}: {cell.name} seed {seed} on machine {machine} scores mIoU "
                    f"{100 * record['miou']:.4f}, but {_shown(records_path(layout))} records "
                    f"{100 * known['miou']:.4f} ({known['recorded_from']}). The cells paired with it would "
                    "not share its warm-up: move the run folder aside, or remove the record to replace it.")
            if known is None or "iou" not in known:  # new, or a scores-only record its rerun reproduces
                records[cell.name][run] = record
                added = True
        if added or machines != known_machines:
            write_records(records, layout, machines)


def _paired_miou(first: dict[Replicate, dict], second: dict[Replicate, dict]
                 ) -> tuple[list[Replicate], list[float]]:
    """The runs both result sets have, and the mIoU of ``first`` minus that of ``second`` on each."""
    common = sorted(set(first) & set(second))
    return common, [first[run]["miou"] - second[run]["miou"] for run in common]


def collect(found: dict[str, dict[Replicate, dict]], layout: Layout) -> dict:
    """The table's rows from every cell's finished results by run (``found``, keyed by cell name)."""
    table = {}
    for cell in CELLS:
        if not (results := found[cell.name]):
            continue
        rows = list(results.values())
        paired_with = BASE_CELL[cell.paired_base].name
        _, paired = _paired_miou(results, found[paired_with])
        table[cell.name] = {
            "label": cell.label, "settings": cell.describe(layout), "stage": cell.stage,
            "runs": [run.key for run in sorted(results)],
            "miou": _summary([r["miou"] for r in rows]), "mpa": _summary([r["mpa"] for r in rows]),
            "rare_miou": _summary([r["rare_miou"] for r in rows]),
            "paired_with": paired_with,
            "miou_minus_warmup": _summary(paired) if paired else None,
        }
    return table


def compare(found: dict[str, dict[Replicate, dict]]) -> list[dict]:
    """mIoU of one cell minus another's, run by run, over the runs (seed and machine) both have finished."""
    differences = []
    for first, second in COMPARISONS:
        common, values = _paired_miou(found[first], found[second])
        if common:
            differences.append({"cell": first, "minus": second, "runs": [run.key for run in common],
                                "miou": _summary(values)})
    return differences


def markdown(table: dict, differences: list[dict], command: str, layout: Layout,
             machines: dict[str, dict]) -> str:
    lines = ["| setting | mIoU | mIoU - its warm-up (paired) | MPA | rare-class mIoU | runs |",
             "|---|---|---|---|---|---|"]

    def fmt(summary, signed=False):
        if summary is None:
            return "-"
        mean = f"{summary['mean']:+.1f}" if signed else f"{summary['mean']:.1f}"
        return f"{mean} ± {summary['std']:.1f}" if summary["n"] > 1 else mean

    for row in table.values():
        lines.append(f"| {row['label']} | {fmt(row['miou'])} | {fmt(row['miou_minus_warmup'], True)} | "
                     f"{fmt(row['mpa'])} | {fmt(row['rare_miou'])} | {row['miou']['n']} |")
    if differences:
        lines += ["", "| comparison (paired by run) | mIoU difference | per run | runs |",
                  "|---|---|---|---|"]
        for d in differences:
            per_run = ", ".join(f"{v:+.1f}" + ("" if key.isdigit() else f" ({key})")
                                for v, key in zip(d["miou"]["values"], d["runs"]))
            lines.append(f"| {BY_NAME[d['cell']].label} - {BY_NAME[d['minus']].label} | "
                         f"{fmt(d['miou'], True)} | {per_run} | {d['miou']['n']} |")
    used = sorted({Replicate.parse(key).machine for row in table.values() for key in row["runs"]})
    named = "; ".join(f"{m}: {machines[m]['signature'] or machines[m]['note']}" for m in used)
    lines += ["", f"Benchmark variant {layout.variant}. Command: `{command}`. Machines, {os.cpu_count()} CPU "
              f"cores each: {named}. A run is a seed on one machine type: written as its seed on "
              f"{REFERENCE_MACHINE}, as seed@machine on another, and paired only with runs of the same seed "
              "and machine type (another CPU trains another warm-up from the same seed). Spread is the "
              "sample standard deviation over runs; the paired "
              "column subtracts the mIoU of the source-only warm-up of the same run and step budget "
              "(2000 steps, or 6000 where the setting says so; adapting cells start from that very "
              "warm-up), except CPSL from the adversarial warm-up, which is paired with that warm-up. "
              "Absolute scores move by up to about 3 points from seed to seed "
              "(docs/benchmark-notes.md); paired differences, which share the run's data order and "
              "warm-up, vary far less (their spread "
              "is shown)."]
    return "\n".join(lines) + "\n"


def partition_curves(found: dict[str, dict[Replicate, dict]]) -> dict:
    """Paper Fig. 4 from the long-horizon cells' recorded histories: target-val mIoU and MPA (%) over the
    CPSL iterations for unequal (CPSL) and equal partition. Per cell and step: each run's values and their
    mean; under ``"equal - unequal"``, the difference paired by run at the steps both cells have for a
    run."""
    histories = {(name, run): {entry["step"]: entry for entry in record["history"]}
                 for name in PARTITION_CELLS for run, record in found[name].items()}
    runs = sorted({run for _, run in histories})

    def points(values_of) -> list[dict]:
        by_step: dict[int, dict[Replicate, tuple[float, float]]] = {}
        for run in runs:
            for step, values in values_of(run).items():
                by_step.setdefault(step, {})[run] = values
        return [{"step": step, "runs": [run.key for run in sorted(found)],
                 "miou": float(np.mean([v[0] for v in found.values()])),
                 "mpa": float(np.mean([v[1] for v in found.values()])),
                 "miou_by_run": [found[r][0] for r in sorted(found)],
                 "mpa_by_run": [found[r][1] for r in sorted(found)]}
                for step, found in sorted(by_step.items())]

    def scores(name, run) -> dict[int, tuple[float, float]]:
        return {step: (100 * float(e["miou"]), 100 * float(e["mpa"]))
                for step, e in histories.get((name, run), {}).items()}

    curves = {name: points(lambda run, name=name: scores(name, run)) for name in PARTITION_CELLS}
    curves = {name: found for name, found in curves.items() if found}
    unequal, equal = PARTITION_CELLS

    def paired(run):
        a, b = scores(equal, run), scores(unequal, run)
        return {step: (a[step][0] - b[step][0], a[step][1] - b[step][1]) for step in a.keys() & b.keys()}

    difference = points(paired)
    if difference:
        curves["equal - unequal"] = difference
    return curves


def plot_partition_curves(curves: dict, variant: str, path: Path) -> None:
    """Fig. 4 as the paper draws it (mIoU and MPA over iterations), each run thin and the mean bold, and
    a third panel with the paired difference equal - unequal."""
    from matplotlib.figure import Figure

    from cpsl_tf.io_utils import atomic_path

    figure = Figure(figsize=(13.0, 3.8))
    panels = figure.subplots(1, 3)
    for axes, metric in zip(panels[:2], ("miou", "mpa")):
        for index, name in enumerate(n for n in PARTITION_CELLS if n in curves):
            found, color = curves[name], f"C{index}"
            steps = [p["step"] for p in found]
            for run in sorted({r for p in found for r in p["runs"]}):
                own = [(p["step"], p[f"{metric}_by_run"][p["runs"].index(run)]) for p in found
                       if run in p["runs"]]
                axes.plot(*zip(*own), color=color, alpha=0.3, linewidth=0.8)
            runs = max(len(p["runs"]) for p in found)
            axes.plot(steps, [p[metric] for p in found], color=color, marker="o", markersize=3,
                      label=f"{BY_NAME[name].label.split(',')[0]} ({runs} run{'s' if runs > 1 else ''})")
        axes.set_xlabel("CPSL iteration")
        axes.set_ylabel(f"{'mIoU' if metric == 'miou' else 'MPA'} (%)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    axes = panels[2]
    for metric, color in (("miou", "C2"), ("mpa", "C3")):
        found = curves.get("equal - unequal", [])
        if found:
            runs = max(len(p["runs"]) for p in found)
            axes.plot([p["step"] for p in found], [p[metric] for p in found], color=color, marker="o",
                      markersize=3, label=f"{'mIoU' if metric == 'miou' else 'MPA'} ({runs} paired run"
                                          f"{'s' if runs > 1 else ''})")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("CPSL iteration")
    axes.set_ylabel("equal - unequal partition (points)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.suptitle(f"Equal vs unequal partition over training (paper Fig. 4), benchmark variant {variant}; "
                    "thin lines: single runs")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def write_outputs(seeds: list[int], command: str, layout: Layout) -> dict:
    from cpsl_tf.io_utils import atomic_write_json, atomic_write_text

    records = read_records(layout)  # read once: every cell's recorded results by run
    found = {cell.name: {run: record for run, record in records.get(cell.name, {}).items()
                         if run.seed in seeds}
             for cell in CELLS}
    table, differences = collect(found, layout), compare(found)
    curves = partition_curves(found)
    if curves:
        plot_partition_curves(curves, layout.variant, RESULTS / f"{layout.results_stem}-fig4.png")
    atomic_write_json(RESULTS / f"{layout.results_stem}.json",
                      {"command": command, "variant": layout.variant, "seeds": seeds, "cells": table,
                       "differences": differences, "partition_curves": curves,
                       "machines": read_machines(layout), "cpus": os.cpu_count()})
    atomic_write_text(RESULTS / f"{layout.results_stem}.md",
                      markdown(table, differences, command, layout, read_machines(layout)))
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
    parser.add_argument("--table-only", action="store_true",
                        help="record finished run folders, then rebuild the table from the records")
    parser.add_argument("--variant", default="A", choices=["A", "B"],
                        help="benchmark variant (B: data/bench-B, generated on first use)")
    parser.add_argument("--machine", action="store_true",
                        help="say which recorded machine type this is (runs pair only within one), then exit")
    args = parser.parse_args(argv)
    layout = Layout(args.variant)
    if args.machine:
        print(describe_this_machine(layout))
        return 0
    command = "python benchmarks/adaptation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record_finished(layout)  # cells finished by another process (a queue) since the last invocation
    if not args.table_only:
        cells = [BY_NAME[name] for name in args.only] if args.only else list(CELLS)
        jobs = [(cell, seed) for seed in args.seeds for cell in cells]
        begin = time.time()
        if args.jobs > 1:
            # Shared warm-ups first, so that parallel cells never train the same one twice.
            for base in sorted({cell.base for cell in cells if cell.adapts}):
                for seed in args.seeds:
                    prepare_shared(seed, args.config, args.overrides, layout, base)
            with ProcessPoolExecutor(args.jobs) as pool:
                arguments = [(c, s, args.config, args.overrides, layout) for c, s in jobs]
                list(pool.map(run_cell, *zip(*arguments)))
        else:
            for cell, seed in jobs:
                print(f"cell {cell.name} seed {seed} ...", flush=True)
                result = run_cell(cell, seed, args.config, args.overrides, layout)
                print(f"cell {cell.name} seed {seed}: mIoU {100 * result['miou']:.1f}", flush=True)
        print(f"{len(jobs)} cells in {time.time() - begin:.0f} s")
    # The table covers every recorded seed, not only this invocation's.
    recorded = {run.seed for runs in read_records(layout).values() for run in runs}
    write_outputs(sorted(recorded | set(args.seeds)), command, layout)
    print((RESULTS / f"{layout.results_stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
