"""How good each label source of CPSL is where adaptation starts, against the target-train ground truth.

    python benchmarks/label_sources.py                      # the shared warm-ups of benchmarks/adaptation.py
    python benchmarks/label_sources.py --runs RUN [RUN ...] # any run folders with warmup and pseudo stages

For each run folder, on every target-train image at the network's output resolution (the pseudo stage's):

* ST: argmax of the stored soft pseudo labels P_ST (the warm-up model's prediction; the labels of
  self-training, ``w/o SL``);
* SL: argmax of P_SL = softmax(cos(f, W) / tau) (Eq. 4) with the warm-up model's features and the head's
  start W = the normalised Eq. 7 prototypes (``cpsl_tf.cpsl.head.initial_head_weights``): the labels of
  ``w/o ST``;
* rectified: argmax(P_SL * P_ST) (Eq. 1): the labels of full CPSL.

The ground truth is brought to the same resolution with the project's nearest rule. This is the labels'
quality at step 0 of adaptation, before the head or the network moves. Writes
``benchmarks/results/label_sources.{json,md}``; light (one inference pass per run).
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
from cpsl_tf.labels import IGNORE_INDEX, RARE_CLASSES  # noqa: E402
from cpsl_tf.metrics import total_variation  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SOURCES = ("ST", "SL", "rectified")


def label_sources(run_dir: Path) -> dict:
    """Scores of the three label sources of ``run_dir``'s warm-up and pseudo stages (see module doc)."""
    import dataclasses

    import tensorflow as tf

    from cpsl_tf.cpsl.head import initial_head_weights
    from cpsl_tf.cpsl.rectify import cosine_scores, rectify, self_labeling_probabilities
    from cpsl_tf.data.datasets import load_label
    from cpsl_tf.data.pipeline import make_eval_dataset
    from cpsl_tf.data.pseudo_store import PseudoLabelStore
    from cpsl_tf.evaluation.table import report
    from cpsl_tf.labels import class_names
    from cpsl_tf.metrics import confusion_matrix
    from cpsl_tf.models.checkpoint import load_segmenter
    from cpsl_tf.models.segmenter import inference_function
    from cpsl_tf.resize import resize_nearest
    from cpsl_tf.run_config import read_run_config
    from cpsl_tf.run_layout import RunLayout
    from cpsl_tf.training.inputs import stage_samples

    cfg = read_run_config(run_dir)
    layout = RunLayout(run_dir)
    k = cfg.data.num_classes
    model, _ = load_segmenter(layout.stage("warmup").model, k)
    pseudo = layout.stage("pseudo")
    store = PseudoLabelStore(pseudo.pseudo_store)
    head = initial_head_weights(np.load(pseudo.prototypes), k, cfg.model.head_channels, cfg.train.seed)
    samples = stage_samples(cfg).target_train
    forward = inference_function(model, cfg.data.target_size)
    images = make_eval_dataset([dataclasses.replace(s, label=None) for s in samples], cfg.data.target_size,
                               cfg.eval.batch_size)
    confusions = {name: np.zeros((k, k), np.int64) for name in SOURCES}
    counts = {name: np.zeros(k, np.int64) for name in (*SOURCES, "ground truth")}
    start = 0
    for batch in images:
        features = forward(batch)["features"]
        chunk = samples[start:start + len(batch)]
        start += len(batch)
        p_st = tf.constant(np.stack([store.get(s.name) for s in chunk]), tf.float32)
        if features.shape[1:3] != p_st.shape[1:3]:
            raise ValueError(f"{run_dir}: features {features.shape[1:3]} and P_ST {p_st.shape[1:3]} differ")
        p_sl = self_labeling_probabilities(cosine_scores(features, head), cfg.cpsl.tau)
        labels = {"ST": tf.argmax(p_st, -1), "SL": tf.argmax(p_sl, -1),
                  "rectified": rectify(p_sl, p_st, cfg.cpsl.rectify_threshold)}
        truth = np.stack([np.asarray(resize_nearest(load_label(s.label, s.dataset, k)[..., None],
                                                    p_st.shape[1:3]))[..., 0] for s in chunk])
        valid = truth != IGNORE_INDEX
        counts["ground truth"] += np.bincount(truth[valid], minlength=k)[:k]
        for name, predicted in labels.items():
            predicted = np.asarray(predicted)
            confusions[name] += confusion_matrix(truth, predicted, k)
            counts[name] += np.bincount(predicted[valid].ravel(), minlength=k)[:k]
    names = class_names(k)
    result = {"run": str(run_dir), "images": len(samples), "resolution": list(p_st.shape[1:3]), "sources": {}}
    for name in SOURCES:
        scores = report(confusions[name], k, names)
        rare = [c["iou"] for c in scores["classes"] if c["name"] in RARE_CLASSES and c["iou"] is not None]
        result["sources"][name] = {"miou": scores["miou"], "mpa": scores["mpa"], "pa": scores["pa"],
                                   "rare_miou": float(np.mean(rare)) if rare else None,
                                   "iou": [c["iou"] for c in scores["classes"]],
                                   "share": (counts[name] / counts[name].sum()).tolist()}
    result["ground_truth_share"] = (counts["ground truth"] / counts["ground truth"].sum()).tolist()
    return result


def markdown(results: list[dict], command: str) -> str:
    def spread(values, sign=""):
        values = 100 * np.asarray(values)
        mean = f"{values.mean():{sign}.1f}"
        return f"{mean} ± {values.std(ddof=1):.1f}" if len(values) > 1 else mean

    lines = ["| labels (cell that trains on them) | mIoU | MPA | PA | rare-class mIoU | total variation of "
             "the class shares to the ground truth | runs |", "|---|---|---|---|---|---|---|"]
    cells = {"ST": "ST: argmax P_ST (self-training, w/o SL)",
             "SL": "SL: argmax P_SL at the head's start (w/o ST)",
             "rectified": "rectified: argmax P_SL x P_ST (CPSL)"}
    for name in SOURCES:
        rows = [r["sources"][name] for r in results]
        tv = [total_variation(r["sources"][name]["share"], r["ground_truth_share"]) for r in results]
        scores = " | ".join(spread([r[m] for r in rows]) for m in ("miou", "mpa", "pa", "rare_miou"))
        lines.append(f"| {cells[name]} | {scores} | {spread(tv)} | {len(rows)} |")
    lines += ["", "| paired difference | mIoU | per run | MPA | rare-class mIoU |", "|---|---|---|---|---|"]
    for a, b in (("SL", "ST"), ("rectified", "ST"), ("rectified", "SL")):
        diffs = {m: [r["sources"][a][m] - r["sources"][b][m] for r in results]
                 for m in ("miou", "mpa", "rare_miou")}
        per_run = ", ".join(f"{100 * d:+.1f}" for d in diffs["miou"])
        lines.append(f"| {a} - {b} | {spread(diffs['miou'], '+')} | {per_run} | {spread(diffs['mpa'], '+')} "
                     f"| {spread(diffs['rare_miou'], '+')} |")
    lines += ["", f"Command: `{command}`. Target-train images, scored at the network's output resolution "
              "against the ground truth brought there with the nearest rule; spread: sample standard "
              "deviation over the runs (seeds)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path,
                        default=[REPO / "benchmarks" / "runs" / "shared" / f"seed{s}" for s in (0, 1, 2)],
                        help="run folders with finished warmup and pseudo stages (default: the shared "
                             "2000-step warm-ups of seeds 0-2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "label_sources.json")
    args = parser.parse_args(argv)
    command = "python benchmarks/label_sources.py " + " ".join(argv if argv is not None else sys.argv[1:])
    missing = [str(r) for r in args.runs if not (r / "pseudo" / "prototypes.npy").exists()]
    if missing:
        print(f"error: no finished pseudo stage in {', '.join(missing)}", file=sys.stderr)
        return 2
    results = []
    for run in args.runs:
        results.append(label_sources(run))
        scores = results[-1]["sources"]
        print(f"{run}: " + ", ".join(f"{n} mIoU {100 * scores[n]['miou']:.1f}" for n in SOURCES), flush=True)
    text = markdown(results, command.strip())
    atomic_write_json(args.out, {"command": command.strip(), "runs": results,
                                 "machine": {"cpus": os.cpu_count()}})
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
