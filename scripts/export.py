"""Export a segmenter checkpoint for deployment: ONNX + parity gate + manifest (+ INT8, FP16, TensorRT).

    python scripts/export.py --checkpoint runs/bench/distill2/model.weights.h5 --out exports/bench [--int8]
    python scripts/export.py --checkpoint model.weights.h5 --out exports/x --height 512 --width 1024 \
        --dataset cityscapes --root data/cityscapes --split val --calib-root data/cityscapes --int8

A checkpoint of a run folder (runs/<name>/<stage>/model.weights.h5) is exported as its run says: the input
size of the config's export section, the parity gate on the target split the run evaluated on (data.target,
data.target_root, eval.split) and INT8 calibration on the target training split. Each flag overrides; one
line says what was used. A checkpoint outside its run folder takes its sidecar's input size, else 1024x2048,
and needs its images as flags: --dataset/--root/--split (cpsl_tf.data.datasets) or --images DIR
[--labels DIR] (train-id PNGs); calibration images --calib-images DIR or --calib-root/--calib-split.

Without labels the gate compares the exported model's class maps with the checkpoint's (agreement only; no
mIoU and no mIoU-drop gate for INT8/FP16).

Exit codes: 0 exported and every gate passed; 1 a parity gate failed (its figures are printed and the
manifests written), or a bug (traceback); 2 a mistake in the inputs (one message); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.command import UserError, add_verbose_flag, run_command  # noqa: E402
from cpsl_tf.config import ExportConfig  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    defaults = ExportConfig()
    parser = argparse.ArgumentParser(prog="scripts/export.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="<name>.weights.h5 with its <name>.json sidecar")
    parser.add_argument("--out", required=True, help="output folder (made if missing)")
    parser.add_argument("--height", type=int, help="input height of the exported model (default: the run's "
                                                   "export.height, else the sidecar's, else 1024)")
    parser.add_argument("--width", type=int, help="input width of the exported model (default: the run's "
                                                  "export.width, else the sidecar's, else 2048)")
    parser.add_argument("--layout", choices=["nhwc", "nchw"], default=defaults.layout,
                        help="input and output layout (default: %(default)s)")
    parser.add_argument("--output", choices=["argmax", "logits"], default=defaults.output,
                        help="what the model returns: a class map or per-class logits (default: %(default)s)")
    parser.add_argument("--argmax-dtype", choices=["uint8", "int32"], default=defaults.argmax_dtype,
                        help="integer type of the class map (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=defaults.opset, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--images", help="folder of evaluation images for the parity gate (default: the "
                                         "run's target split, see --dataset)")
    parser.add_argument("--labels", help="folder of train-id label PNGs named like --images (default: none, "
                                         "the gate then checks agreement only)")
    parser.add_argument("--dataset", help="dataset of the evaluation images: cityscapes, folder or bench "
                                          "(default: the run's data.target)")
    parser.add_argument("--root", help="dataset root of the evaluation images (default: the run's "
                                       "data.target_root)")
    parser.add_argument("--split", help="split of the evaluation images (default: the run's eval.split, "
                                        "else val)")
    parser.add_argument("--limit", type=int, help="use at most this many evaluation images (default: all)")
    parser.add_argument("--calib-images", help="folder of target training images for INT8 calibration")
    parser.add_argument("--calib-root", help="dataset root of the calibration images, read as --dataset "
                                             "(default: the run's data.target_root when the images come "
                                             "from the run)")
    parser.add_argument("--calib-split", default="train",
                        help="split of the calibration images (default: %(default)s)")
    parser.add_argument("--calib-count", type=int, default=defaults.calibration_images,
                        help="calibration images used at most (default: %(default)s)")
    parser.add_argument("--calib-crop", type=_height_width, metavar="HxW",
                        help="measure the INT8 ranges on crops of this size, with the graph exported at that "
                             "size, when calibrating at the full size does not fit in host memory (e.g. "
                             "512x1024 for DeepLab-v2 R101 at 1024x2048; default: whole images)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (Q/DQ)")
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (GPU host)")
    parser.add_argument("--max-int8-miou-drop", type=float, default=1.0, metavar="POINTS",
                        help="INT8 gate: largest mIoU drop against float32, in mIoU points as printed "
                             "(1.0 = one point, 75.0%% -> 74.0%%; the manifest stores it as a fraction, "
                             "0.01) (default: %(default)s)")
    parser.add_argument("--max-fp16-miou-drop", type=float, default=0.5, metavar="POINTS",
                        help="FP16 gate: largest mIoU drop against float32, in mIoU points "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=2,
                        help="images per batch of the parity gate (default: %(default)s)")
    add_verbose_flag(parser)
    return parser


def _height_width(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HEIGHTxWIDTH, got {text!r}")
    return height, width


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: export(args), verbose=args.verbose)


def export(args) -> int:
    from cpsl_tf.checkpoint_settings import DEFAULT_INPUT_SIZE, checkpoint_settings, size_text
    from cpsl_tf.data.datasets import reader_for
    from cpsl_tf.export.parity import ParityError
    from cpsl_tf.export.pipeline import ExportOptions, export_model
    from cpsl_tf.export.samples import dataset_samples, folder_samples
    from cpsl_tf.models.checkpoint import load_segmenter

    model, meta = load_segmenter(args.checkpoint)
    settings = checkpoint_settings(args.checkpoint, meta)
    run = settings.cfg
    num_classes = int(meta["num_classes"])
    known = settings.export_size
    height, width = known or DEFAULT_INPUT_SIZE
    size = (args.height or height, args.width or width)
    used = [f"input {size_text(size)}" + ("" if known or (args.height and args.width)
                                          else " (the default: nothing says this checkpoint's)")]
    dataset = args.dataset or (run.data.target if run else None)
    root = args.root or (run.data.target_root if run else None)
    split = args.split or (run.eval.split if run else "val")
    calib_root = args.calib_root or (run.data.target_root if run and not args.dataset else None)
    if args.images:
        eval_samples = folder_samples(args.images, args.labels, args.limit)
        evaluation = {"image_folder": str(args.images), "label_folder": args.labels and str(args.labels)}
        used.append(f"parity images {args.images}")
    elif dataset and root:
        eval_samples = dataset_samples(reader_for(dataset, "target"), root, split, num_classes, args.limit)
        evaluation = {"dataset": dataset, "root": str(root), "split": split}
        used.append(f"parity images {dataset} {split} at {root}")
    else:
        raise UserError("the parity gate needs target images: pass --images DIR [--labels DIR] or --dataset "
                        "NAME --root DIR [--split val] (a checkpoint outside its run folder has no run "
                        "config.json to take them from)")
    calibration = []
    if args.int8 or args.tensorrt:
        if args.calib_images:
            calibration = folder_samples(args.calib_images, None, args.calib_count)
            used.append(f"calibration images {args.calib_images}")
        elif dataset and calib_root:
            calibration = dataset_samples(reader_for(dataset, "target"), calib_root, args.calib_split,
                                          num_classes, args.calib_count)
            used.append(f"calibration {dataset} {args.calib_split} at {calib_root}")
        elif args.int8:
            raise UserError("--int8 needs target training images: --calib-images DIR or --calib-root DIR")
    print(settings.line(used))
    cfg = dataclasses.replace(ExportConfig(), height=size[0], width=size[1], layout=args.layout,
                              output=args.output, argmax_dtype=args.argmax_dtype, opset=args.opset)
    options = ExportOptions(int8=args.int8, fp16=args.fp16, tensorrt=args.tensorrt,
                            max_int8_miou_drop=args.max_int8_miou_drop / 100,
                            max_fp16_miou_drop=args.max_fp16_miou_drop / 100, batch_size=args.batch_size,
                            int8_calibration_crop=args.calib_crop)
    try:
        export_model(model, meta, args.out, cfg, eval_samples, calibration, options,
                     checkpoint=args.checkpoint, evaluation_data=evaluation)
    except ParityError as err:
        print(f"EXPORT FAILED: {err}", file=sys.stderr)
        return 1
    print(f"export passed: {Path(args.out) / 'model.onnx'}, {Path(args.out) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
