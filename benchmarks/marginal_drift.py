"""Where the Sinkhorn marginal r = delta_pseudo (Eq. 11-12) goes during adaptation, against the ground truth.

    python benchmarks/marginal_drift.py --runs RUN [RUN ...] --out benchmarks/results/marginal_drift.json

For each run folder with a finished CPSL stage, from ``cpsl/self_labeling.npz``:

* the class shares of delta_pseudo where adaptation started (the soft pseudo labels' distribution, Eq. 10)
  and where it ended;
* the target-train ground truth's class shares (the labels' pixels at full resolution, as
  ``cpsl.marginal=ground_truth`` counts them);
* the total variation of each to the ground truth, and the classes whose share fell below 0.05 %;
* per class, the IoU change of the CPSL stage against the warm-up it started from (each run folder's
  ``results.json``; the warm-up's is the one of the run folder its ``warmup`` stage links to).

A marginal that drifts away from the ground truth feeds the Sinkhorn a biased class balance, which the next
labels then follow. Light: reads label files and JSON, runs no network. Writes ``--out`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.io_utils import atomic_write_json, atomic_write_text  # noqa: E402
from cpsl_tf.metrics import total_variation  # noqa: E402
from cpsl_tf.run_layout import RunLayout  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
VANISHED_SHARE = 5e-4


def drift(run_dir: Path) -> dict:
    """The marginal's start, end and the ground truth of ``run_dir`` (see module doc)."""
    from cpsl_tf.evaluation.report.reading import read_run
    from cpsl_tf.training.adapt import ground_truth_marginal
    from cpsl_tf.training.inputs import stage_samples

    run = read_run(run_dir)
    cfg = run.cfg
    state = run.self_labeling_state()
    target_train = stage_samples(cfg, need_val_labels=False).target_train
    truth = ground_truth_marginal(target_train, cfg.data.num_classes)
    adapted = run.results.get("cpsl", {}).get("iou")
    warmup_run = read_run(RunLayout(run_dir).stage("warmup").folder.resolve().parent)
    warm = warmup_run.results.get("warmup", {}).get("iou")
    variant = cfg.data.benchmark.variant if cfg.data.target == "bench" else None
    return {"run": str(run_dir), "variant": variant, "seed": cfg.train.seed, "names": list(run.names),
            "start": state["delta_start"].tolist(), "end": state["delta_pseudo"].tolist(),
            "ground_truth": truth.tolist(),
            "iou_change": (np.asarray(adapted) - np.asarray(warm)).tolist() if adapted and warm else None}


def summary(run: dict) -> dict:
    """Distances to the ground truth at the start and end, and the classes that vanished from the marginal."""
    start, end = np.asarray(run["start"]), np.asarray(run["end"])
    return {"start_to_truth": total_variation(start, run["ground_truth"]),
            "end_to_truth": total_variation(end, run["ground_truth"]),
            "moved": total_variation(start, end),
            "vanished": [n for n, s, e in zip(run["names"], start, end) if e < VANISHED_SHARE <= s]}


def markdown(runs: list[dict], command: str) -> str:
    lines = ["| run | variant | total variation to the ground truth: start | end | start to end "
             "| classes whose share fell below 0.05 % |", "|---|---|---|---|---|---|"]
    for run in runs:
        s = summary(run)
        lines.append(f"| {Path(run['run']).parent.name}/{Path(run['run']).name} | {run['variant']} "
                     f"| {100 * s['start_to_truth']:.1f} | {100 * s['end_to_truth']:.1f} "
                     f"| {100 * s['moved']:.1f} | {', '.join(s['vanished']) or '-'} |")
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["variant"], Path(run["run"]).parent.name), []).append(run)
    for (variant, cell), members in groups.items():
        names = members[0]["names"]
        lines += ["", f"Variant {variant}, `{cell}` ({len(members)} runs): class shares in % (ground truth, "
                  "start, end; means over the runs) and the IoU change against the warm-up, per run.", "",
                  "| class | ground truth | start | end | end / ground truth | IoU change |",
                  "|---|---|---|---|---|---|"]
        mean = {key: 100 * np.mean([m[key] for m in members], axis=0)
                for key in ("ground_truth", "start", "end")}
        for c, name in enumerate(names):
            changes = [f"{100 * m['iou_change'][c]:+.1f}" for m in members if m["iou_change"] is not None]
            ratio = mean["end"][c] / mean["ground_truth"][c] if mean["ground_truth"][c] > 0 else float("nan")
            lines.append(f"| {name} | {mean['ground_truth'][c]:.1f} | {mean['start'][c]:.1f} "
                         f"| {mean['end'][c]:.1f} | {ratio:.2f} | {', '.join(changes) or '-'} |")
    lines += ["", f"Command: `{command}`. Class shares of delta_pseudo (`cpsl/self_labeling.npz`) and of the "
              "target-train labels; total variation in % (0: the same distribution, 100: disjoint)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True,
                        help="run folders with a finished CPSL stage")
    parser.add_argument("--out", type=Path, default=RESULTS / "marginal_drift.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/marginal_drift.py " + " ".join(argv if argv is not None else sys.argv[1:])
    missing = [str(r) for r in args.runs if not RunLayout(r).stage("cpsl").self_labeling_state.is_file()]
    if missing:
        print(f"error: no finished CPSL stage (cpsl/self_labeling.npz) in {', '.join(missing)}",
              file=sys.stderr)
        return 2
    from cpsl_tf.command import UserError

    try:
        runs = [drift(run) for run in args.runs]
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = markdown(runs, command.strip())
    atomic_write_json(args.out, {"command": command.strip(), "runs": runs,
                                 "summaries": [summary(r) for r in runs],
                                 "machine": {"cpus": os.cpu_count()}})
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
