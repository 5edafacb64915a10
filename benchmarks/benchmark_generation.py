"""Time to generate the default benchmark set (1000 source + 1000 target train + 200 val at 96x192).

Target: under 2 minutes with 2 workers on this 2-core machine.

    python benchmarks/benchmark_generation.py [--workers 2] [--out DIR]

Generates into a temporary folder (or --out, which is wiped first) and writes
benchmarks/results/benchmark_generation.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.benchmark.generate import generate_benchmark, image_rng, render_scene  # noqa: E402
from cpsl_tf.benchmark.style import domain_styles  # noqa: E402
from cpsl_tf.io_utils import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    styles = domain_styles("A")
    render_ms = {}
    for domain, split in (("source", "source"), ("target", "target_train")):
        render_scene(image_rng(0, "A", split, 0), styles[domain], 96, 192)  # warm the texture bank
        start = time.perf_counter()
        for i in range(100):
            render_scene(image_rng(0, "A", split, i), styles[domain], 96, 192)
        render_ms[domain] = 1000 * (time.perf_counter() - start) / 100

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cpsl_bench_"))
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    stats = generate_benchmark(out, workers=args.workers, progress=False)
    seconds = time.perf_counter() - start
    images = sum(stats["parameters"]["counts"].values())
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    result = {
        "images": images, "size": [96, 192], "workers": args.workers, "seconds": round(seconds, 1),
        "target_seconds": 120, "passed": seconds < 120,
        "render_ms_per_image_one_core": {k: round(v, 1) for k, v in render_ms.items()},
        "load_average_at_end": os.getloadavg(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(result)
    atomic_write_json(Path(__file__).resolve().parent / "results" / "benchmark_generation.json", result)


if __name__ == "__main__":
    main()
