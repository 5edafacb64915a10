"""Memory of training: measured peak host RSS of the benchmark demo, and a GPU estimate per config.

    python benchmarks/memory.py            # the quick demo + a few real steps of every stage (bench config)
    python benchmarks/memory.py --estimate-only

Measured (this machine, CPU): each run is a child process whose own peak resident set size comes from
``os.wait4`` (``ru_maxrss``): the ``--quick`` demo of ``scripts/train.py`` on the bench config, then each
stage of the bench config at its real size (crops, batch, model, bank) for a few steps, one process per
stage. Target: under 8 GiB.

Estimated (on paper, any config): training memory of the accelerator from parameter and activation
counts of the model the config builds (no weights are loaded):

* weights: f_SEG (float32 master copy), its gradient and SGD momentum, plus f'_SEG: 4 x parameters;
* activations kept for the backward pass: every layer output of the student's forward, counted from the
  functional graph at the crop size, times the batch, for one student pass: a step computes the gradients
  of its passes (CPSL: source, weak target, strong target) one pass at a time (``cpsl_tf/gradients.py``),
  so only one pass's activations are alive; the momentum network runs without a tape and holds one layer's
  output at a time (ignored);
* the memory bank (bank_size x head_channels float32).

Counting every layer output (padding, BN and ReLU outputs included) makes the activation term an upper
bound: frameworks free or fuse some of them. Framework workspace, fragmentation and cuDNN scratch are not
counted; the cards' table keeps 10 % of each card for them. Mixed precision stores activations in 16 bits
(half the activation term). The batch that fits a card is the per-device micro-batch; gradient accumulation
(``train.gradient_accumulation_steps``) reaches the paper's batch 4 with any micro-batch that fits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.io_utils import atomic_write_json  # noqa: E402

GIB = 2**30
TARGET_GIB = 8.0
CONFIGS = ("bench", "synthia", "gta")
STAGE_STEPS = 5


def run_measured(command: list[str], cwd: Path = REPO) -> dict:
    """Run ``command``; its wall time, exit code and peak RSS (GiB) from ``wait4``."""
    begin = time.time()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"command": " ".join(command), "exit_code": process.returncode, "seconds": time.time() - begin,
            "peak_rss_gib": usage.ru_maxrss * 1024 / GIB,  # ru_maxrss is in KiB on Linux
            **({"error": stderr[-2000:]} if process.returncode else {})}


def measure_bench(workdir: Path) -> dict:
    """Peak RSS of the quick demo and of a few steps of every stage at the bench config."""
    train = [sys.executable, "scripts/train.py", "--config", "configs/bench.json"]
    quick_data = [f"--set=data.source_root={workdir}/quick_data/source",
                  f"--set=data.target_root={workdir}/quick_data/target"]
    quick = train + ["--quick", "--run-dir", str(workdir / "quick"), *quick_data]
    results = {"quick_demo": run_measured(quick)}
    few_steps = [f"--set=warmup.iterations={STAGE_STEPS}", f"--set=cpsl.iterations={STAGE_STEPS}",
                 f"--set=distill.iterations={STAGE_STEPS}", "--set=distill.rounds=1",
                 f"--set=train.checkpoint_every={STAGE_STEPS}", "--set=train.eval_every=1000000"]
    for stage in ("warmup", "pseudo", "cpsl", "distill1"):
        command = train + ["--stage", stage, "--run-dir", str(workdir / "steps"), *few_steps]
        results[f"stage_{stage}"] = run_measured(command)
    return results


# --------------------------------------------------------------------------------------------------
# Estimate


def model_counts(cfg) -> dict:
    """Parameters and activation elements (per image at the crop size) of the config's segmenter."""
    import numpy as np

    from cpsl_tf.models.segmenter import build_segmenter

    height, width = cfg.data.crop_size
    model = build_segmenter(cfg.model, cfg.data.num_classes, input_shape=(height, width, 3))
    params = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    buffers = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    activations = 0
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.output_tensors:
                activations += int(np.prod(tensor.shape[1:]))
    return {"parameters": params, "buffers": buffers, "activations_per_image": activations}


CARDS_GIB = (16, 24, 32, 80)
CARD_RESERVE = 0.10  # of each card, for workspace and fragmentation


def batches_that_fit(fixed_bytes: float, per_image_bytes: float) -> dict:
    """The largest per-device batch whose estimate fits each card (0: not even one image)."""
    return {f"{card} GiB": max(0, int((card * GIB * (1 - CARD_RESERVE) - fixed_bytes) // per_image_bytes))
            for card in CARDS_GIB}


def estimate(cfg) -> dict:
    counts = model_counts(cfg)
    batch = cfg.train.batch_size
    weights = 4 * (4 * counts["parameters"] + 2 * counts["buffers"])
    per_image = 4 * counts["activations_per_image"]
    bank = 4 * cfg.cpsl.bank_size * cfg.model.head_channels
    activations = batch * per_image
    return {**counts, "batch_size": batch, "crop_size": list(cfg.data.crop_size),
            "weights_gib": weights / GIB, "activations_gib": activations / GIB, "bank_gib": bank / GIB,
            "total_float32_gib": (weights + activations + bank) / GIB,
            "total_mixed_gib": (weights + activations / 2 + bank) / GIB,
            "batch_1_float32_gib": (weights + per_image + bank) / GIB,
            "batch_that_fits_float32": batches_that_fit(weights + bank, per_image),
            "batch_that_fits_mixed": batches_that_fit(weights + bank, per_image / 2)}


def memory_table(result: dict) -> str:
    lines = ["| config | crop | batch | params | GPU estimate fp32 (upper bound) | mixed | batch 1 fp32 | "
             "peak host RSS (measured) |", "|---|---|---|---|---|---|---|---|"]
    measured = result.get("measured", {})
    peak = max((r["peak_rss_gib"] for r in measured.values()), default=None)
    for name, e in result["estimate"].items():
        rss = f"{peak:.2f} GiB" if name == "bench" and peak is not None else "-"
        lines.append(f"| {name} | {e['crop_size'][0]}x{e['crop_size'][1]} | {e['batch_size']} | "
                     f"{e['parameters'] / 1e6:.1f} M | {e['total_float32_gib']:.1f} GiB | "
                     f"{e['total_mixed_gib']:.1f} GiB | {e['batch_1_float32_gib']:.1f} GiB | {rss} |")
    real = [(name, e) for name, e in result["estimate"].items() if name != "bench"]
    if real:
        name, e = real[0]
        lines += ["", f"Per-device batch that fits a card ({' / '.join(n for n, _ in real)}, crop "
                  f"{e['crop_size'][0]}x{e['crop_size'][1]}, {100 * CARD_RESERVE:.0f} % of the card kept for "
                  "workspace; a lower bound, since the activation term is an upper bound):", "",
                  "| card | float32 | mixed precision | paper batch 4 on one card |", "|---|---|---|---|"]
        for card in e["batch_that_fits_float32"]:
            fp32, mixed = e["batch_that_fits_float32"][card], e["batch_that_fits_mixed"][card]
            if fp32 >= 4:
                plan = "directly"
            elif mixed >= 4:
                plan = "mixed precision"
            elif fp32 or mixed:
                micro, kind = (fp32, "float32") if fp32 else (mixed, "mixed")
                plan = f"accumulation {-(-4 // micro)} x {micro} ({kind})"
            else:
                plan = "does not fit"
            lines.append(f"| {card} | {fp32} | {mixed} | {plan} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimate-only", action="store_true", help="skip the measured runs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/memory.json")
    args = parser.parse_args(argv)
    from cpsl_tf.config import load_config

    result: dict = {"target_gib": TARGET_GIB, "estimate": {}}
    for name in CONFIGS:
        result["estimate"][name] = estimate(load_config(REPO / "configs" / f"{name}.json"))
    if not args.estimate_only:
        with tempfile.TemporaryDirectory(prefix="cpsl_memory_") as workdir:
            result["measured"] = measure_bench(Path(workdir))
        peaks = [r["peak_rss_gib"] for r in result["measured"].values()]
        result["peak_rss_gib"] = max(peaks)
        result["under_target"] = max(peaks) < TARGET_GIB and all(
            r["exit_code"] == 0 for r in result["measured"].values())
    result["table"] = memory_table(result)
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=1, default=str))
    print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
