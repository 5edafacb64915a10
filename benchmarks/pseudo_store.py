"""Size, accuracy and read speed of the pseudo-label store (cpsl_tf.data.pseudo_store).

Issue 4 part 3: P_ST for 2975 Cityscapes images at 129x257x19 must not need the 7 GB of the official
float32 .npy files, and loading must keep up with training. For each map size (Cityscapes 129x257x19 and
the generated benchmark's 12x24x19) and each encoding it writes a store of synthetic softmax maps
(smooth random logits, bilinearly upsampled from 1/8 resolution, times ``--sharpness``) and measures
bytes per image, the largest probability error, the share of pixels whose argmax changes, write time,
and read throughput (maps per second) sequentially with ``get`` and through tf.data
(``tf_lookup``, 2 parallel calls, as the training pipeline reads it).

    python benchmarks/pseudo_store.py [--images 48] [--small-images 512] [--sharpness 8]

Writes benchmarks/results/pseudo_store.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

from cpsl_tf.data.pseudo_store import PseudoLabelStore, PseudoLabelWriter  # noqa: E402
from cpsl_tf.io_utils import atomic_write_json  # noqa: E402

SETTINGS = (("uint8", 1), ("uint8", 0), ("float16", 1), ("float16", 0))
CITYSCAPES_IMAGES = 2975


def synthetic_maps(rng, count: int, shape, num_classes: int, sharpness: float) -> np.ndarray:
    height, width = shape
    low_h, low_w = max(2, height // 8 + 1), max(2, width // 8 + 1)
    maps = np.empty((count, height, width, num_classes), np.float32)
    for i in range(count):
        low = rng.normal(size=(low_h, low_w, num_classes)).astype(np.float32) * sharpness
        logits = np.stack([cv2.resize(low[..., c], (width, height)) for c in range(num_classes)], -1)
        exp = np.exp(logits - logits.max(-1, keepdims=True))
        maps[i] = exp / exp.sum(-1, keepdims=True)
    return maps


def measure(maps: np.ndarray, encoding: str, compression: int, root: Path) -> dict:
    names = [f"image_{i:05d}" for i in range(len(maps))]
    start = time.perf_counter()
    with PseudoLabelWriter(root, maps.shape[-1], maps.shape[1:3], encoding=encoding,
                           compression=compression) as writer:
        for name, probs in zip(names, maps):
            writer.add(name, probs)
    write_seconds = time.perf_counter() - start
    shard_bytes = sum(p.stat().st_size for p in root.glob("shard-*.bin"))
    store = PseudoLabelStore(root)

    error, flips = 0.0, 0
    for name, probs in zip(names, maps):
        back = store.get(name)
        error = max(error, float(np.abs(back - probs).max()))
        flips += int((back.argmax(-1) != probs.argmax(-1)).sum())

    start = time.perf_counter()
    for name in names:
        store.get(name)
    sequential = len(names) / (time.perf_counter() - start)

    data = tf.data.Dataset.from_tensor_slices(names).map(store.tf_lookup, num_parallel_calls=2).batch(4)
    for _ in data.take(1):
        pass
    start = time.perf_counter()
    for _ in data:
        pass
    pipelined = len(names) / (time.perf_counter() - start)
    store.close()
    per_image = shard_bytes / len(names)
    return {
        "encoding": encoding,
        "compression": compression,
        "bytes_per_image": round(per_image),
        "float32_bytes_per_image": int(np.prod(maps.shape[1:]) * 4),
        "cityscapes_2975_gb": round(per_image * CITYSCAPES_IMAGES / 1e9, 3),
        "max_abs_error": error,
        "error_bound": store.error_bound,
        "argmax_changed_fraction": flips / (len(names) * maps.shape[1] * maps.shape[2]),
        "write_ms_per_map": round(1e3 * write_seconds / len(names), 2),
        "read_maps_per_s_get": round(sequential, 1),
        "read_maps_per_s_tf_data": round(pipelined, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="maps at 129x257x19")
    parser.add_argument("--small-images", type=int, default=512, help="maps at 12x24x19")
    parser.add_argument("--sharpness", type=float, default=8.0, help="scale of the synthetic logits")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pseudo_store.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for shape, count in (((129, 257), args.images), ((12, 24), args.small_images)):
        maps = synthetic_maps(rng, count, shape, 19, args.sharpness)
        mean_top = float(maps.max(-1).mean())
        for encoding, compression in SETTINGS:
            with tempfile.TemporaryDirectory() as tmp:
                row = {"shape": [*shape, 19], "images": count, "mean_top_probability": round(mean_top, 3),
                       **measure(maps, encoding, compression, Path(tmp))}
            results.append(row)
            print(f"{shape[0]}x{shape[1]}x19 {encoding:7s} zlib={compression}: "
                  f"{row['bytes_per_image'] / 1e3:9.1f} kB/image "
                  f"({row['cityscapes_2975_gb']:.2f} GB for 2975), max err {row['max_abs_error']:.1e}, "
                  f"argmax changed {row['argmax_changed_fraction']:.1e}, read "
                  f"{row['read_maps_per_s_get']:.0f} maps/s (tf.data {row['read_maps_per_s_tf_data']:.0f})")
    atomic_write_json(args.out, {
        "benchmark": "pseudo_store",
        "command": "python benchmarks/pseudo_store.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__},
        "maps": "synthetic softmax of smooth random logits (1/8-resolution normal noise x sharpness, "
                "bilinear upsampling); real warm-up maps are more peaked and compress better",
        "sharpness": args.sharpness,
        "official_float32_npy_gb_2975": round(129 * 257 * 19 * 4 * CITYSCAPES_IMAGES / 1e9, 2),
        "results": results,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
