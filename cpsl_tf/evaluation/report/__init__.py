"""The report of a run folder: ``python scripts/report.py RUN_DIR`` -> ``RUN_DIR/report/report.{md,html}``.

What it shows (figures as PNG beside the report, every file written atomically):

1. per stage: target-val mIoU / MPA / PA / rare-class mIoU / wall time, the per-class IoU table and a
   bar chart of it (from ``results.json``);
2. paper Fig. 6: the class distribution of the target-train ground truth vs. the self-training pseudo
   labels (Eq. 10, ``pseudo/soft/class_distribution.json``) vs. the CPSL rectified labels (Eq. 11,
   ``delta_pseudo`` of ``cpsl/self_labeling.npz``), also as ``class_distribution.json``; and how far the
   self-labeling head moved from its initial prototypes;
3. paper Fig. 4/7: mIoU and MPA over training from each stage's ``eval_history.jsonl``;
4. the row-normalised confusion matrix of the last stage's model on target val (also ``confusion.json``);
5. paper Fig. 3: image, ground truth, warm-up, CPSL (and last distillation) predictions of a few target-val
   images.

Parts 4 and 5 run the stage models (``run_models=False`` / ``--no-model`` skips them). A partial run gives
a partial report whose "Missing" section says what is absent and why.

The package reads, says and writes in separate modules: :mod:`.reading` reads the run folder (the only
module that knows its paths), :mod:`.sections`, :mod:`.curves` and :mod:`.model_sections` turn what was read
into Markdown blocks and figures, and :mod:`.rendering` writes the Markdown and the HTML page that
markdown-it-py renders from it. This module puts the report together and holds its command line.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from cpsl_tf.command import add_verbose_flag, run_command
from cpsl_tf.evaluation.report.curves import curves_section
from cpsl_tf.evaluation.report.model_sections import confusion_section, examples_section
from cpsl_tf.evaluation.report.reading import ReportError, RunFolder, read_run
from cpsl_tf.evaluation.report.rendering import ReportFolder, markdown, to_html
from cpsl_tf.evaluation.report.sections import (
    distribution_section,
    head_section,
    mechanism_section,
    stage_sections,
)
from cpsl_tf.io_utils import atomic_write_text

__all__ = ["ReportError", "RunFolder", "build_report", "main", "read_run"]


def build_report(run_dir: str | Path, examples: int = 4, max_images: int | None = None,
                 run_models: bool = True) -> Path:
    """Write ``RUN_DIR/report/report.md``, ``report.html`` and their figures; returns the Markdown path.

    ``max_images`` caps the images read for the ground-truth distribution and the confusion matrix (an
    evenly spaced subset); ``run_models=False`` skips the confusion matrix and the examples.
    """
    run = read_run(run_dir)
    out = ReportFolder(run.report_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    # The distributions first: the per-class figure of the stages orders the classes by frequency.
    distributions = distribution_section(run, out, max_images)
    body = stage_sections(run, out) + distributions + mechanism_section(run, out) + curves_section(run, out)
    if run_models:
        body += confusion_section(run, out, max_images)
        if examples > 0:
            body += examples_section(run, out, examples)
    else:
        run.missing.append("confusion matrix and examples: skipped (`--no-model`)")
    title = f"CPSL run report: {run.cfg.name}"
    text = markdown(head_section(run, title) + body)
    atomic_write_text(out.file("report.md"), text)
    atomic_write_text(out.file("report.html"), to_html(text, title))
    out.remove_stale()
    return out.file("report.md")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/report.py",
        description="Markdown/HTML report of a run folder: per-stage scores, per-class IoU, class "
                    "distributions (Fig. 6), training curves, confusion matrix, qualitative examples.")
    parser.add_argument("run_dir", help="run folder written by scripts/train.py (holds config.json)")
    parser.add_argument("--examples", type=int, default=4, help="target-val images shown (default 4)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="read at most N images (evenly spaced) for the ground-truth distribution and "
                             "the confusion matrix (default: all)")
    parser.add_argument("--no-model", action="store_true",
                        help="do not run models: skip the confusion matrix and the examples")
    add_verbose_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.examples < 0:
        parser.error(f"--examples must be non-negative, got {args.examples}")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be at least 1, got {args.max_images}")
    return run_command(lambda: report_command(args), verbose=args.verbose)


def report_command(args: argparse.Namespace) -> int:
    path = build_report(args.run_dir, args.examples, args.max_images, run_models=not args.no_model)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0
