"""A quick proxy of the generated benchmark's domain gap, before the project's trainer exists.

Trains a tiny fully convolutional Keras net (about 0.2 M parameters, output stride 4) twice on the
benchmark: on source labels (source-only) and on target-train labels (oracle), with the same steps, and
scores both on target val (19-class mIoU). This is NOT the project's DeepLab model: the absolute numbers
differ from the real source-only / oracle runs; it checks that the gap is of the intended size (the
study's "mid" level: source-only well below oracle, far above chance) and that rare classes are learnable.

    python benchmarks/benchmark_gap_proxy.py --data data/bench [--steps 1500] [--batch 8]

Writes benchmarks/results/benchmark_gap_proxy[_<variant>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from cpsl_tf.io_utils import atomic_write_json  # noqa: E402
from cpsl_tf.labels import CLASS_NAMES_19, IGNORE_INDEX, map_labels  # noqa: E402
from cpsl_tf.metrics import confusion_matrix, per_class_iou  # noqa: E402


def load(pairs: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([cv2.imread(str(i))[..., ::-1] for i, _ in pairs]).astype(np.float32) / 127.5 - 1.0
    labels = np.stack([map_labels(cv2.imread(str(lab), cv2.IMREAD_UNCHANGED), "cityscapes")
                       for _, lab in pairs])
    return images, labels


def split_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    if split == "source":
        images = sorted((root / "source" / "images").glob("*.png"))
        return [(p, root / "source" / "labels" / p.name) for p in images]
    images = sorted((root / "target" / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    return [(p, root / "target" / "gtFine" / split / p.parent.name /
             p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")) for p in images]


def tiny_fcn(height: int, width: int) -> keras.Model:
    def block(x, channels, stride=1, dilation=1):
        x = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", dilation_rate=dilation,
                                use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        return keras.layers.ReLU()(x)

    inputs = keras.Input((height, width, 3))
    x = block(inputs, 16, 2)
    x = block(x, 32, 2)
    skip = block(x, 32)
    x = block(skip, 64, 2)
    x = block(x, 64, dilation=2)
    x = block(x, 64, dilation=4)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = block(keras.layers.Concatenate()([x, skip]), 48)
    x = keras.layers.Conv2D(19, 1)(x)
    outputs = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
    return keras.Model(inputs, outputs)


def train_and_score(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], steps: int,
                    batch: int, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    images, labels = train
    model = tiny_fcn(*images.shape[1:3])

    def weighted(x, y):
        weight = tf.cast(y != IGNORE_INDEX, tf.float32)
        return x, tf.where(y == IGNORE_INDEX, 0, tf.cast(y, tf.int32)), weight

    def augment(x, y):
        flip = tf.random.uniform(()) < 0.5
        return tf.where(flip, x[:, ::-1], x), tf.where(flip, y[:, ::-1], y)

    data = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed).repeat()
            .map(augment).batch(batch).map(weighted).prefetch(2))
    schedule = keras.optimizers.schedules.PolynomialDecay(2e-3, steps, 1e-5, power=0.9)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    prediction = np.argmax(model.predict(val[0], batch_size=16, verbose=0), axis=-1)
    confusion = confusion_matrix(val[1], prediction, 19)
    iou = per_class_iou(confusion)
    off_diagonal = confusion - np.diag(np.diag(confusion))
    rows = np.maximum(confusion.sum(axis=1), 1)
    return {"miou": float(np.nanmean(iou) * 100), "train_seconds": round(seconds, 1),
            "iou": {n: round(float(v) * 100, 1) for n, v in zip(CLASS_NAMES_19, iou)},
            "most_confused_with": {n: [CLASS_NAMES_19[int(off_diagonal[c].argmax())],
                                       round(float(off_diagonal[c].max() / rows[c]) * 100, 1)]
                                   for c, n in enumerate(CLASS_NAMES_19)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/bench")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", default=["source_only", "oracle"],
                        choices=["source_only", "oracle"])
    args = parser.parse_args()
    root = Path(args.data)
    meta = json.loads((root / "benchmark.json").read_text())
    val = load(split_pairs(root, "val"))
    result = {"data": str(root), "parameters": meta["parameters"], "steps": args.steps, "batch": args.batch,
              "model": "tiny FCN proxy (not the project's DeepLab)"}
    for name, split in (("source_only", "source"), ("oracle", "train")):
        if name not in args.runs:
            continue
        result[name] = train_and_score(load(split_pairs(root, split)), val, args.steps, args.batch, args.seed)
        print(name, round(result[name]["miou"], 1), result[name]["iou"], flush=True)
    if len(args.runs) == 2:
        result["gap"] = result["oracle"]["miou"] - result["source_only"]["miou"]
        print(f"source-only {result['source_only']['miou']:.1f}  oracle {result['oracle']['miou']:.1f}  "
              f"gap {result['gap']:.1f} mIoU")
    p = meta["parameters"]
    suffix = f"_{p['variant']}_shift{p['shift']}" + ("" if len(args.runs) == 2 else f"_{args.runs[0]}")
    results = Path(__file__).resolve().parent / "results"
    atomic_write_json(results / f"benchmark_gap_proxy{suffix}.json", result)


if __name__ == "__main__":
    main()
