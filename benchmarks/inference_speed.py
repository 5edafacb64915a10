"""CPU latency/throughput: Keras vs ONNX Runtime float32 vs ONNX Runtime INT8 Q/DQ.

    python benchmarks/inference_speed.py [--iterations 20] [--r101-iterations 3] [--skip-r101]

Models (random weights; speed only): the benchmark model (configs/bench.json, 96x192) and DeepLab-v2
ResNet-101 at 512x1024. Batch 1, argmax deploy graph. Writes benchmarks/results/inference_speed.json with
the ratio ORT float32 / Keras (target <= 1.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def timed(fn, batch, iterations: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    times = np.asarray(times) * 1000
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "iterations": iterations,
            "throughput_fps": float(batch.shape[0] * 1000 / np.median(times))}


def bench(name, model_cfg, size, iterations, workdir):
    from cpsl_tf.export.manifest import make_manifest
    from cpsl_tf.export.onnx_export import export_onnx
    from cpsl_tf.export.quantize import quantize_int8
    from cpsl_tf.export.runners import KerasRunner, OnnxRunner
    from cpsl_tf.labels import class_names
    from cpsl_tf.models.segmenter import build_segmenter

    model = build_segmenter(model_cfg, 19)
    meta = {"model": dataclasses.asdict(model_cfg), "num_classes": 19, "class_names": list(class_names(19))}
    path = Path(workdir) / f"{name}.onnx"
    export_onnx(model, path, height=size[0], width=size[1])
    manifest = make_manifest(artefact=path, kind="onnx", precision="float32", height=size[0], width=size[1],
                             layout="nhwc", output="argmax", argmax_dtype="uint8",
                             class_names=meta["class_names"], input_mean=model_cfg.input_mean,
                             input_std=model_cfg.input_std, opset=17, checkpoint=None,
                             align_corners=model_cfg.align_corners)
    rng = np.random.default_rng(0)
    calib_dir = Path(workdir) / f"{name}_calib"
    calib_dir.mkdir(exist_ok=True)
    import cv2

    for index in range(4):
        cv2.imwrite(str(calib_dir / f"{index}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    from cpsl_tf.export.samples import folder_samples

    int8_path = Path(workdir) / f"{name}_int8.onnx"
    quantize_int8(path, int8_path, folder_samples(calib_dir), size=size, method="minmax")
    batch = rng.random((1, *size, 3), dtype=np.float32)
    keras_runner = KerasRunner(model, meta, size)
    results = {"input_size": list(size), "backbone": model_cfg.backbone, "batch": 1,
               "keras": timed(keras_runner, batch, iterations),
               "ort_float32": timed(OnnxRunner(path, manifest), batch, iterations),
               "ort_int8_qdq": timed(OnnxRunner(int8_path, manifest), batch, iterations)}
    results["ratio_ort_float32_over_keras"] = (results["ort_float32"]["median_ms"]
                                               / results["keras"]["median_ms"])
    results["ratio_ort_int8_over_ort_float32"] = (results["ort_int8_qdq"]["median_ms"]
                                                  / results["ort_float32"]["median_ms"])
    print(json.dumps({name: results}, indent=1))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--r101-iterations", type=int, default=3)
    parser.add_argument("--skip-r101", action="store_true")
    args = parser.parse_args(argv)
    from cpsl_tf.config import ModelConfig, load_config, shrink
    from cpsl_tf.io_utils import atomic_write_json

    report = {"command": " ".join([sys.executable, *sys.argv]),
              "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "note": "random weights, batch 1, argmax deploy graph; INT8 "
              "calibrated with MinMax on 4 random images (speed only)", "models": {}}
    bench_config = Path(__file__).resolve().parents[1] / "configs" / "bench.json"
    small = load_config(bench_config).model if bench_config.is_file() else shrink(load_config()).model
    with tempfile.TemporaryDirectory() as workdir:
        report["models"]["benchmark_96x192"] = bench("bench", small, (96, 192), args.iterations, workdir)
        if not args.skip_r101:
            r101 = ModelConfig(imagenet_weights=False)
            report["models"]["deeplabv2_r101_512x1024"] = bench("r101", r101, (512, 1024),
                                                                args.r101_iterations, workdir)
    out = Path(__file__).resolve().parent / "results" / "inference_speed.json"
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
