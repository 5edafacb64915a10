"""Export a segmenter checkpoint for deployment: ONNX + parity gate + manifest (+ INT8, FP16, TensorRT).

    python scripts/export.py --checkpoint runs/bench/distill2/model.weights.h5 --out exports/x \
        --dataset bench --root data/bench/target --split val \
        [--calib-root data/bench/target --calib-split train] [--int8] [--fp16] [--tensorrt]

Evaluation images: --dataset/--root/--split (cpsl_tf.data.datasets) or --images DIR [--labels DIR] (train-id
PNGs). INT8 calibration uses target *training* images: --calib-images DIR or --calib-root/--calib-split.
Exit status 1 with the figures when a parity gate fails (the manifests are still written).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.config import ExportConfig  # noqa: E402


def parse_args(argv=None):
    defaults = ExportConfig()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="<name>.weights.h5 with its <name>.json sidecar")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--layout", choices=["nhwc", "nchw"], default=defaults.layout)
    parser.add_argument("--output", choices=["argmax", "logits"], default=defaults.output)
    parser.add_argument("--argmax-dtype", choices=["uint8", "int32"], default=defaults.argmax_dtype)
    parser.add_argument("--opset", type=int, default=defaults.opset)
    parser.add_argument("--images", help="folder of evaluation images")
    parser.add_argument("--labels", help="folder of train-id label PNGs named like the images")
    parser.add_argument("--dataset", help="dataset of the evaluation images (cityscapes, folder, bench)")
    parser.add_argument("--root", help="dataset root of the evaluation images")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="use at most this many evaluation images")
    parser.add_argument("--calib-images", help="folder of target training images for INT8 calibration")
    parser.add_argument("--calib-root", help="dataset root of the calibration images (same --dataset)")
    parser.add_argument("--calib-split", default="train")
    parser.add_argument("--calib-count", type=int, default=defaults.calibration_images)
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (Q/DQ)")
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (GPU host)")
    parser.add_argument("--max-int8-miou-drop", type=float, default=0.01, help="fraction; 0.01 = 1 point")
    parser.add_argument("--max-fp16-miou-drop", type=float, default=0.005)
    parser.add_argument("--batch-size", type=int, default=2)
    return parser.parse_args(argv)


def dataset_name(name: str) -> str:
    from cpsl_tf.data.datasets import reader_for

    return reader_for(name, "target")


def main(argv=None) -> int:
    args = parse_args(argv)
    from cpsl_tf.export.parity import ParityError
    from cpsl_tf.export.pipeline import ExportOptions, export_model
    from cpsl_tf.export.samples import dataset_samples, folder_samples
    from cpsl_tf.models.checkpoint import load_segmenter

    model, meta = load_segmenter(args.checkpoint)
    num_classes = int(meta["num_classes"])
    if args.images:
        eval_samples = folder_samples(args.images, args.labels, args.limit)
    elif args.dataset and args.root:
        eval_samples = dataset_samples(dataset_name(args.dataset), args.root, args.split, num_classes,
                                       args.limit)
    else:
        print("error: the parity gate needs target images: pass --images DIR [--labels DIR] or "
              "--dataset NAME --root DIR [--split val]", file=sys.stderr)
        return 2
    calibration = []
    if args.int8 or args.tensorrt:
        if args.calib_images:
            calibration = folder_samples(args.calib_images, None, args.calib_count)
        elif args.dataset and args.calib_root:
            calibration = dataset_samples(dataset_name(args.dataset), args.calib_root, args.calib_split,
                                          num_classes, args.calib_count)
        elif args.int8:
            print("error: --int8 needs target training images: --calib-images DIR or --calib-root DIR",
                  file=sys.stderr)
            return 2
    cfg = dataclasses.replace(ExportConfig(), height=args.height, width=args.width, layout=args.layout,
                              output=args.output, argmax_dtype=args.argmax_dtype, opset=args.opset)
    options = ExportOptions(int8=args.int8, fp16=args.fp16, tensorrt=args.tensorrt,
                            max_int8_miou_drop=args.max_int8_miou_drop,
                            max_fp16_miou_drop=args.max_fp16_miou_drop, batch_size=args.batch_size)
    try:
        export_model(model, meta, args.out, cfg, eval_samples, calibration, options,
                     checkpoint=args.checkpoint)
    except ParityError as err:
        print(f"EXPORT FAILED: {err}", file=sys.stderr)
        return 1
    print(f"export passed: {Path(args.out) / 'model.onnx'}, {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
