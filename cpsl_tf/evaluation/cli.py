"""Command line of ``scripts/evaluate.py``: TensorFlow is imported after the arguments are parsed."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from cpsl_tf.command import add_verbose_flag, run_command
from cpsl_tf.labels import PRED_FORMATS, SUPPORTED_NUM_CLASSES

DESCRIPTION = """\
Evaluate a checkpoint, or a folder of predicted label PNGs, on a labelled target split.

A checkpoint of a run folder (runs/<name>/<stage>/model.weights.h5) is evaluated as the run evaluated it:
dataset, root, split, input size and batch come from the run's config.json; --config names another config,
and each flag overrides. One line says what was used. Without ground-truth labels there is nothing to score:
the command says so and exits with code 2 (look at predictions instead: scripts/predict.py).

Exit codes: 0 scores written; 1 a bug (traceback); 2 a mistake in the inputs (one message); 130 interrupted.

Examples:
  python scripts/evaluate.py --checkpoint runs/bench/cpsl/model.weights.h5
  python scripts/evaluate.py --checkpoint model.weights.h5 --dataset cityscapes --root data/cityscapes
  python scripts/evaluate.py --checkpoint runs/own/cpsl/model.weights.h5 --label-root data/own/labels
  python scripts/evaluate.py --predictions preds/ --dataset cityscapes --root data/cityscapes --split val
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/evaluate.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model weights (<name>.weights.h5 with its sidecar <name>.json)")
    source.add_argument("--predictions", help="folder of predicted label PNGs, one per image")
    parser.add_argument("--config", help="config JSON for a checkpoint (default: the config.json of the "
                                         "checkpoint's run folder, if it is in one)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of --config, e.g. --set data.target_size=[512,1024] "
                             "(repeatable)")
    parser.add_argument("--dataset", help="cityscapes | folder | bench (default: the config's data.target)")
    parser.add_argument("--root", help="dataset root (default: the config's data.target_root)")
    parser.add_argument("--label-root",
                        help="folder dataset only: label PNGs (Cityscapes labelIds) at "
                             "<label-root>/<image path relative to --root>.png (default: none)")
    parser.add_argument("--split", help="split (default: the config's eval.split, else val)")
    parser.add_argument("--num-classes", type=int, choices=SUPPORTED_NUM_CLASSES,
                        help="class protocol (default: the checkpoint's, else 19)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="model input size (default: the config's data.target_size, else the checkpoint "
                             "sidecar's input_size, else each image's own size)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the config's "
                                                       "eval.batch_size, else 1)")
    parser.add_argument("--pred-format", choices=PRED_FORMATS, default="labelid",
                        help="pixel values of prediction PNGs: Cityscapes labelIds or train ids "
                             "(default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    parser.add_argument("--out",
                        help="results JSON (default: <checkpoint>.eval-<dataset>-<split>.json beside the "
                             "checkpoint, or evaluation-<dataset>-<split>.json in the prediction folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predictions and (args.config or args.overrides):
        parser.error("--config/--set apply to --checkpoint; with --predictions give --dataset/--root")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: evaluate(args), verbose=args.verbose)


def _no_labels(samples, dataset: str, root, split: str, checkpoint) -> str:
    where = ("--label-root DIR holding <DIR>/<image path relative to the root>.png" if dataset == "folder"
             else f"{root}/gtFine/{split}/<city>/<name>_gtFine_labelIds.png")
    model = checkpoint or "MODEL"
    of_split = "" if dataset == "folder" else f" of split {split!r}"
    return (f"{root}: none of its {len(samples)} {dataset} images{of_split} has a ground-truth "
            f"label, so there is nothing to score. To see what the model does there: python "
            f"scripts/predict.py --model {model} {root} --out predictions. To score it, label some images "
            f"({where}).")


def evaluate(args: argparse.Namespace) -> int:
    from cpsl_tf.checkpoint_settings import checkpoint_settings, size_text
    from cpsl_tf.data import datasets
    from cpsl_tf.evaluation.evaluate import EvaluationError, evaluate_model, evaluate_predictions
    from cpsl_tf.evaluation.table import default_subsets, format_table
    from cpsl_tf.io_utils import atomic_write_json

    settings = cfg = None
    if args.checkpoint:
        from cpsl_tf.models.checkpoint import load_segmenter

        model, meta = load_segmenter(args.checkpoint)
        settings = checkpoint_settings(args.checkpoint, meta, args.config, args.overrides)
        cfg = settings.cfg
    num_classes = args.num_classes or (settings.meta.get("num_classes") if settings else None) or 19
    dataset = (datasets.reader_for(args.dataset, "target") if args.dataset
               else cfg and datasets.reader_for(cfg.data.target, "target"))
    root = args.root or (cfg and cfg.data.target_root)
    split = args.split or (cfg.eval.split if cfg else "val")
    if not dataset or not root:
        raise EvaluationError("which images? give --dataset NAME --root DIR, or --config CONFIG (a "
                              "checkpoint outside its run folder has no run config.json to take them from)")
    samples = datasets.list_samples(dataset, root, split, num_classes, label_root=args.label_root)
    samples = samples[:args.limit] if args.limit else samples
    if not any(sample.label for sample in samples):
        raise EvaluationError(_no_labels(samples, dataset, root, split, args.checkpoint))

    if args.checkpoint:
        image_size = tuple(args.image_size) if args.image_size else settings.input_size
        batch_size = args.batch_size or (cfg.eval.batch_size if cfg else 1)
        align_corners = (cfg.model.align_corners if cfg
                         else (meta.get("model") or {}).get("align_corners", True))
        subsets = (sorted(set(cfg.eval.report_subsets) | set(default_subsets(num_classes))) if cfg else None)
        print(settings.line([f"input {size_text(image_size)}", f"dataset {dataset} at {root}",
                             f"split {split}", f"batch {batch_size}"]))
        result = evaluate_model(model, samples, num_classes, image_size=image_size, batch_size=batch_size,
                                align_corners=align_corners, subsets=subsets,
                                class_names=meta.get("class_names"), progress=False if args.quiet else None)
        result.update(checkpoint=str(args.checkpoint), image_size=list(image_size) if image_size else None,
                      align_corners=align_corners)
        out = Path(args.out) if args.out else Path(
            str(args.checkpoint).removesuffix(".weights.h5") + f".eval-{dataset}-{split}.json")
    else:
        result = evaluate_predictions(args.predictions, samples, num_classes, args.pred_format,
                                      progress=False if args.quiet else None)
        result.update(predictions=str(args.predictions), pred_format=args.pred_format)
        out = Path(args.out) if args.out else Path(args.predictions) / f"evaluation-{dataset}-{split}.json"
    result.update(dataset=dataset, root=str(root), split=split)
    print(f"{dataset} {split}: {len(samples)} images")
    print(format_table(result))
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0
