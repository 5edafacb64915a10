"""Parameters and GFLOPs of the teacher and the real-time student, counted from their graphs (nothing runs).

    python benchmarks/network_cost.py

Rows: DeepLab-v2 ResNet-101 (configs/gta.json's network) and MobileNetV3-Large + LR-ASPP at 1024x2048 and
512x1024; the benchmark teacher (configs/bench.json, a narrow ResNet-18) and the student at the widths a
benchmark student could take, at the benchmark's 96x192. GFLOPs from ``cpsl_tf.models.cost.count_flops``
(a multiply-add counts 2). Writes benchmarks/results/network_cost.json and network_cost.md (the table
README copies).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.quiet import quiet_tensorflow  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "network_cost.json"
TABLE = OUT.with_suffix(".md")
DEPLOYMENT_SIZES = ((1024, 2048), (512, 1024))
BENCH_SIZE = (96, 192)
# (width, LR-ASPP channels) of benchmark students.
BENCH_STUDENTS = ((1.0, 128), (0.75, 128), (0.5, 64), (0.35, 32))


def main() -> int:
    quiet_tensorflow()
    from cpsl_tf.config import load_config
    from cpsl_tf.io_utils import atomic_write_json, atomic_write_text
    from cpsl_tf.models.cost import count_flops
    from cpsl_tf.models.lraspp import build_lraspp_student
    from cpsl_tf.models.segmenter import build_segmenter

    rows = []
    lines = ["| network | input | parameters | GFLOPs | cost vs its teacher |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)

    def add(network: str, model, size, reference_gflops: float | None = None) -> float:
        gflops = count_flops(model, size) / 1e9
        rows.append({"network": network, "input": list(size), "params": int(model.count_params()),
                     "gflops": gflops,
                     "cost_vs_teacher": None if reference_gflops is None else gflops / reference_gflops})
        ratio = "-" if reference_gflops is None else f"1/{reference_gflops / gflops:.1f}"
        params = f"{model.count_params() / 1e6:.2f} M"
        lines.append(f"| {network} | {size[0]}x{size[1]} | {params} | {gflops:.4g} | {ratio} |")
        print(lines[-1], flush=True)
        return gflops

    teacher = build_segmenter(load_config(REPO / "configs/gta.json",
                                          ["model.imagenet_weights=false"]).model, 19)
    student = build_lraspp_student(19)
    for size in DEPLOYMENT_SIZES:
        reference = add("DeepLab-v2 ResNet-101 (gta.json)", teacher, size)
        add("MobileNetV3-Large + LR-ASPP (width 1.0)", student, size, reference)
    bench_teacher = build_segmenter(load_config(REPO / "configs/bench.json").model, 19)
    reference = add("benchmark teacher, ResNet-18 narrow (bench.json)", bench_teacher, BENCH_SIZE)
    for width, channels in BENCH_STUDENTS:
        add(f"MobileNetV3-Large + LR-ASPP (width {width}, head {channels})",
            build_lraspp_student(19, width=width, head_channels=channels), BENCH_SIZE, reference)
    atomic_write_json(OUT, {"command": "python benchmarks/network_cost.py", "rows": rows})
    atomic_write_text(TABLE, "\n".join(lines) + "\n\nCommand: `python benchmarks/network_cost.py`.\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
