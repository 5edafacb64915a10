"""Command line of ``scripts/train.py``."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from cpsl_tf.command import add_verbose_flag, run_command
from cpsl_tf.config import load_config
from cpsl_tf.quiet import quiet_tensorflow
from cpsl_tf.run_layout import STAGES, RunLayout
from cpsl_tf.training.run_log import LOG_FORMAT, RunLog
from cpsl_tf.training.stages import run_stages, stage_table

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bench.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description=sys.modules["__main__"].__doc__ or __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="experiment config (default: configs/bench.json, the generated benchmark)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.batch_size=2 (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--stage", choices=STAGES, help="run only this stage (its inputs must exist)")
    group.add_argument("--from", dest="start", choices=STAGES,
                       help="re-run from this stage on, training afresh (old checkpoints are kept aside)")
    parser.add_argument("--run-dir", type=Path, help="run folder (default: <train.run_dir>/<config name>)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: shrink the config (tiny model, few steps, few images); a --set "
                             "still wins over what shrinking sets (e.g. --quick --set warmup.iterations=10)")
    parser.add_argument("--force", action="store_true",
                        help="re-run the selected stages afresh even if they finished")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return run_command(lambda: train(args, arguments),
                       interrupted="interrupted; the same command resumes from the last checkpoint")


def train(args: argparse.Namespace, arguments: list[str]) -> int:
    cfg = load_config(args.config, args.overrides, quick=args.quick, training=True)
    run_dir = args.run_dir or Path(cfg.train.run_dir) / cfg.name
    quiet_tensorflow(args.verbose)  # before anything else imports TensorFlow
    from cpsl_tf.training.header import run_header
    from cpsl_tf.training.strategy import is_chief, make_strategy

    # Made before any other TensorFlow work, which MultiWorkerMirroredStrategy requires.
    strategy = make_strategy(cfg.train)
    layout = RunLayout(run_dir)
    with RunLog(layout.train_log if is_chief(strategy) else None) as run_log:
        for line in run_header(cfg, run_dir, arguments, args.config, args.overrides, args.quick, strategy):
            log.info(line)
        results = run_stages(cfg, run_dir, only=args.stage, start=args.start, force=args.force,
                             on_locked=run_log.start)
        run_log.print(stage_table(results))
        run_log.print(f"results: {layout.results}")
        run_log.print(next_commands(layout))
    return 0


def _script(name: str) -> str:
    """How to name ``scripts/<name>`` from the working folder."""
    path = DEFAULT_CONFIG.parents[1] / "scripts" / name
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def next_commands(layout: RunLayout) -> str:
    """The commands that come after training: the run's report, and the evaluation and export of its last
    network (both read the run's settings from its folder)."""
    commands = {"report": [_script("report.py"), str(layout.run_dir)]}
    models = list(layout.final_models().values())
    if models:
        commands["evaluate"] = [_script("evaluate.py"), "--checkpoint", str(models[-1])]
        commands["export"] = [_script("export.py"), "--checkpoint", str(models[-1]), "--out",
                              str(layout.export)]
    return "next:\n" + "\n".join(f"  {what + ':':<10}python {shlex.join(command)}"
                                   for what, command in commands.items())
