"""Training views per second of cpsl_tf.data.pipeline on this CPU.

Decoding is excluded (images come from memory), so this is the cost of the views themselves: source weak
view, target weak + strong view, full target image, P_ST at crop/4 and CutMix, per source/target pair.

    python benchmarks/views.py [--seconds 20]

Paper size: 1024x2048 inputs, 512x896 crops, 19-channel P_ST at 129x257. Benchmark size: 96x192 inputs
and crops. Writes benchmarks/results/views.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.config import load_config  # noqa: E402
from cpsl_tf.data.pipeline import make_training_dataset  # noqa: E402
from cpsl_tf.io_utils import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "views.json"


@dataclasses.dataclass
class MemorySample:
    name: str
    image: Path
    label: Path
    dataset: str = "bench"


def measure(image_size, crop_size, soft_size, seconds, batch_size=4, count=4):
    rng = np.random.default_rng(0)
    images = {f"{i}": rng.integers(0, 256, size=(*image_size, 3), dtype=np.uint8) for i in range(count)}
    labels = {f"{i}_gt": rng.integers(0, 19, size=image_size, dtype=np.uint8) for i in range(count)}
    soft = {f"{i}": rng.random((*soft_size, 19)).astype(np.float16) for i in range(count)}
    samples = [MemorySample(f"{i}", Path(f"{i}"), Path(f"{i}_gt")) for i in range(count)]
    size = list(image_size)
    cfg = load_config(None, [f"data.source_size={size}", f"data.target_size={size}",
                             f"data.crop_size={list(crop_size)}", f"train.batch_size={batch_size}",
                             "cpsl.cutmix_prob=0.5"])
    dataset = make_training_dataset(samples, samples, cfg, seed=0, pseudo_lookup=soft.__getitem__,
                                    load_image=images.__getitem__,
                                    load_label=lambda path, dataset, n: labels[path])
    iterator = iter(dataset)
    next(iterator)  # tracing and warm-up
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        batches += 1
    elapsed = time.perf_counter() - start
    pairs = batches * batch_size / elapsed
    return {"image_size": list(image_size), "crop_size": list(crop_size), "soft_size": list(soft_size),
            "batch_size": batch_size, "batches": batches, "seconds": round(elapsed, 2),
            "pairs_per_second": round(pairs, 2), "batches_per_second": round(batches / elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    results = {
        "what": "source/target training pairs per second of make_training_dataset (views only, no decoding)",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "paper": measure((1024, 2048), (512, 896), (129, 257), args.seconds),
        "benchmark": measure((96, 192), (96, 192), (12, 24), args.seconds, batch_size=8),
    }
    for key in ("paper", "benchmark"):
        r = results[key]
        print(f"{key}: {r['image_size']} -> crop {r['crop_size']}: {r['pairs_per_second']} pairs/s "
              f"({r['batches_per_second']} batches of {r['batch_size']}/s)")
    atomic_write_json(RESULTS, results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
