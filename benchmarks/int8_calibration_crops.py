"""Does measuring INT8 ranges on crops (``scripts/export.py --calib-crop``) cost accuracy? Paired by seed.

    python benchmarks/int8_calibration_crops.py    # the CPSL teachers of seeds 0-2, crops of half size

For each seed's CPSL model of the results table (``benchmarks/runs/cpsl_paper/seedN``), ``scripts/export.py
--int8`` runs twice with the current code: calibrating on whole 96x192 target-train images, and on 48x96 crops
of them measured with the graph exported at that size (``--calib-crop 48x96``). Each INT8 model's mIoU drop
against the float32 ONNX model on target val comes from its manifest. Decided before the run: the crops are
fine for users if their drop differs from the whole images' by less than 0.1 mIoU point on every seed.
Writes ``benchmarks/results/int8_calibration_crops.{json,md}``; finished exports are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.io_utils import atomic_write_json, atomic_write_text  # noqa: E402

RUNS = REPO / "benchmarks" / "runs"
RESULTS = REPO / "benchmarks" / "results"
VARIANTS = {"whole images": [], "48x96 crops": ["--calib-crop", "48x96"]}


def int8_drop(seed: int, variant: str) -> float:
    """mIoU drop (points) of the INT8 export of ``seed``'s CPSL model calibrated as ``variant``."""
    out = RUNS / "int8_calibration_crops" / f"seed{seed}" / variant.split()[0]
    manifest = out / "model_int8.manifest.json"
    if not manifest.exists():
        checkpoint = RUNS / "cpsl_paper" / f"seed{seed}" / "cpsl" / "model.weights.h5"
        subprocess.run([sys.executable, "scripts/export.py", "--checkpoint", str(checkpoint), "--out",
                        str(out), "--int8", "--max-int8-miou-drop", "100", *VARIANTS[variant]], cwd=REPO,
                       check=True)
    return 100 * json.loads(manifest.read_text())["parity"]["miou_drop"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    command = "python benchmarks/int8_calibration_crops.py " + " ".join(argv if argv is not None
                                                                         else sys.argv[1:])
    drops = {variant: [int8_drop(seed, variant) for seed in args.seeds] for variant in VARIANTS}
    whole, crops = (np.asarray(drops[v]) for v in VARIANTS)
    paired = crops - whole
    lines = ["| calibration | INT8 mIoU drop against float32 (points), per seed | mean |", "|---|---|---|"]
    for variant, values in drops.items():
        lines.append(f"| {variant} | {', '.join(f'{v:+.2f}' for v in values)} | {np.mean(values):+.2f} |")
    lines += ["", f"Crops minus whole images, paired by seed: {', '.join(f'{v:+.2f}' for v in paired)} "
              f"(largest |difference| {np.abs(paired).max():.2f}; decided before the run: below 0.1 on every "
              f"seed means the crops cost nothing that matters).", "",
              f"Command: `{command.strip()}`. CPSL teachers of `benchmarks/adaptation.py` (seeds "
              f"{', '.join(map(str, args.seeds))}), entropy calibration on the target-train split, "
              "mIoU on target val (ONNX Runtime)."]
    text = "\n".join(lines) + "\n"
    atomic_write_json(RESULTS / "int8_calibration_crops.json",
                      {"command": command.strip(), "seeds": args.seeds, "miou_drop_points": drops,
                       "crops_minus_whole": paired.tolist()})
    atomic_write_text(RESULTS / "int8_calibration_crops.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
