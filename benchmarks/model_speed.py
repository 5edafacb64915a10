"""Train-step speed of the full network (DeepLab-v2 ResNet-101 + ProDA head) on this CPU: Keras vs. the
PyTorch reference implementation (tests/reference/official_dlv2_torch.py), in one run.

One step = forward in training mode (batch-statistics BN, dropout) -> logits upsampled to the crop with
align-corners bilinear -> cross entropy against random labels -> backward -> SGD (momentum 0.9). Warm-up
steps (graph tracing, allocator) are excluded. Writes benchmarks/results/model_speed.json.

    python benchmarks/model_speed.py [--height 256 --width 512 --steps 5 --warmup 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cpsl_tf.config import ModelConfig  # noqa: E402
from cpsl_tf.io_utils import atomic_write_json  # noqa: E402
from cpsl_tf.models.segmenter import build_segmenter  # noqa: E402
from cpsl_tf.resize import resize_bilinear  # noqa: E402

NUM_CLASSES = 19
LEARNING_RATE = 2.5e-4


def time_steps(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def keras_step_fn(image: np.ndarray, labels: np.ndarray, jit_compile: bool):
    keras.utils.set_random_seed(0)
    model = build_segmenter(ModelConfig(), NUM_CLASSES)
    optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    x, y = tf.constant(image), tf.constant(labels)

    @tf.function(jit_compile=jit_compile)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = resize_bilinear(model(x, training=True)["logits"], tf.shape(x)[1:3], align_corners=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return lambda: float(train_step(x, y))


def torch_step_fn(image: np.ndarray, labels: np.ndarray):
    import torch

    sys.path.insert(0, str(REPO / "tests" / "reference"))
    import official_dlv2_torch as reference

    torch.manual_seed(0)
    model = reference.build(NUM_CLASSES).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))

    def train_step():
        logits = model(x)["out"]
        logits = torch.nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear",
                                                 align_corners=True)
        loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return train_step, torch.__version__, torch.get_num_threads()


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "min_s": min(times), "steps_s": times}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--xla", action="store_true", help="also time the Keras step with jit_compile=True")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "model_speed.json"),
                        help="results JSON (default: %(default)s)")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    image = rng.random((args.batch, args.height, args.width, 3), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, (args.batch, args.height, args.width)).astype(np.int32)
    result = {
        "task": "train step (forward + backward + SGD) of DeepLab-v2 R101 + ProDA head, float32, CPU",
        "input": [args.batch, args.height, args.width, 3], "warmup_steps": args.warmup, "steps": args.steps,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_start": list(os.getloadavg())},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    variants = [("keras", False)] + ([("keras_xla", True)] if args.xla else [])
    for name, jit in variants:
        times = time_steps(keras_step_fn(image, labels, jit), args.warmup, args.steps)
        result[name] = summary(times)
        print(f"{name:10s} median {result[name]['median_s']:.2f} s/step  "
              f"(steps {np.round(times, 2).tolist()})")
        keras.backend.clear_session()
    try:
        step, torch_version, threads = torch_step_fn(image, labels)
    except ImportError as err:
        print(f"PyTorch reference skipped: {err}")
    else:
        times = time_steps(step, args.warmup, args.steps)
        result["pytorch"] = {**summary(times), "threads": threads}
        result["versions"]["torch"] = torch_version
        print(f"{'pytorch':10s} median {result['pytorch']['median_s']:.2f} s/step  "
              f"(steps {np.round(times, 2).tolist()})")
        result["keras_over_pytorch"] = result["keras"]["median_s"] / result["pytorch"]["median_s"]
        print(f"Keras / PyTorch step time: {result['keras_over_pytorch']:.2f}")
    result["machine"]["load_average_end"] = list(os.getloadavg())
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
