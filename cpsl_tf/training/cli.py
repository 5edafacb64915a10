"""Command line of ``scripts/train.py``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cpsl_tf.command import run_command
from cpsl_tf.config import load_config
from cpsl_tf.training.stages import STAGES, run_stages, stage_table

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(lambda: train(args),
                       interrupted="interrupted; the same command resumes from the last checkpoint")


def train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, quick=args.quick, training=True)
    run_dir = args.run_dir or Path(cfg.train.run_dir) / cfg.name
    results = run_stages(cfg, run_dir, only=args.stage, start=args.start, force=args.force)
    print(stage_table(results))
    print(f"results: {run_dir / 'results.json'}")
    return 0
