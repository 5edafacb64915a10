"""How far a float32 network is from its own float64 self, against how far its ONNX export is from it: is an
export's logit difference a fault or float32 rounding?

    python benchmarks/float32_noise.py --checkpoint runs/bench/distill2/model.weights.h5 \\
        --dataset cityscapes --root data/bench/target --height 96 --width 192 --name bench
    python benchmarks/float32_noise.py --checkpoint <real_size workdir>/runs/gta/distill2/model.weights.h5 \\
        --dataset cityscapes --root <workdir>/data/cityscapes/target --height 1024 --width 2048 --name gta

On the first val image(s), at the export's size:

* ``keras_float32_vs_float64``: max |logit| difference between the Keras network in float32 and the same
  weights in float64 (the network's own float32 rounding: no runtime can promise less);
* ``onnx_vs_keras_float32``: what the export's float32 gate measures (ONNX Runtime vs Keras float32);
* ``max_abs_logit``: the float64 network's largest |logit|.

Logits are compared at the network's output resolution for float32 vs float64 (TensorFlow's bilinear resize
has no float64 kernel) and at input resolution for ONNX vs Keras; bilinear interpolation is a convex
combination, so it cannot enlarge a maximum difference. Appends one entry per ``--name`` to
``benchmarks/results/float32_noise.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.quiet import quiet_tensorflow  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "float32_noise.json"


def load_float64(checkpoint: Path):
    """The checkpoint's network built under Keras' float64 policy (its weights cast on load)."""
    import keras

    from cpsl_tf.models.checkpoint import load_segmenter

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model, _ = load_segmenter(checkpoint)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dataset", default="cityscapes")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--name", required=True, help="the entry's key in the results file")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    quiet_tensorflow()
    import numpy as np
    import tensorflow as tf

    from cpsl_tf.export.onnx_export import export_onnx
    from cpsl_tf.export.runners import KerasRunner, OnnxRunner
    from cpsl_tf.export.samples import dataset_samples, eval_dataset
    from cpsl_tf.io_utils import atomic_write_json
    from cpsl_tf.models.checkpoint import load_segmenter

    model, meta = load_segmenter(args.checkpoint)
    samples = dataset_samples(args.dataset, args.root, args.split, meta["num_classes"])[: args.images]
    size = (args.height, args.width)
    images = np.concatenate([(batch[0] if isinstance(batch, tuple) else batch).numpy()
                             for batch in eval_dataset(samples, size, 1, meta["num_classes"])])
    keras_runner = KerasRunner(model, meta, size)
    keras_logits = np.concatenate([keras_runner(images[i:i + 1])["logits"] for i in range(len(images))])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logits.onnx"
        export_onnx(model, path, height=args.height, width=args.width, output="logits")
        onnx_runner = OnnxRunner(path, manifest=logits_manifest(meta, size))
        onnx_logits = np.concatenate([onnx_runner(images[i:i + 1])["logits"] for i in range(len(images))])
    native32 = tf.function(lambda x: model(x, training=False)["logits"])
    twin = load_float64(args.checkpoint)
    assert all(w.dtype == "float64" for w in twin.weights), "the float64 twin holds float32 weights"
    native64 = tf.function(lambda x: twin(x, training=False)["logits"])
    k32 = np.concatenate([native32(tf.constant(images[i:i + 1])).numpy() for i in range(len(images))])
    k64 = np.concatenate([native64(tf.constant(images[i:i + 1], tf.float64)).numpy()
                          for i in range(len(images))])
    entry = {
        "checkpoint": str(args.checkpoint), "size": list(size), "images": len(images),
        "keras_float32_vs_float64": float(np.abs(k32 - k64).max()),
        "onnx_vs_keras_float32": float(np.abs(onnx_logits - keras_logits).max()),
        "max_abs_logit": float(np.abs(k64).max()),
        "command": " ".join(["python", "benchmarks/float32_noise.py", *(argv or sys.argv[1:])]),
    }
    entry["ratio"] = entry["onnx_vs_keras_float32"] / max(entry["keras_float32_vs_float64"], 1e-30)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.name] = entry
    atomic_write_json(args.out, results)
    print(json.dumps(entry, indent=2))
    return 0


def logits_manifest(meta: dict, size: tuple[int, int]) -> dict:
    """The manifest fields OnnxRunner reads, for an NHWC logits graph of ``size`` made from ``meta``."""
    return {"input": {"shape": ["batch", *size, 3], "layout": "nhwc"}, "num_classes": meta["num_classes"],
            "class_names": meta["class_names"]}


if __name__ == "__main__":
    sys.exit(main())
