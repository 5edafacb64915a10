"""Generate the two-domain street-scene benchmark: source in the GTA5 layout, target in the Cityscapes one.

    python scripts/make_benchmark.py --out data/bench [--variant A|B] [--seed N] [--height 96 --width 192]
        [--num-source 1000 --num-target-train 1000 --num-target-val 200] [--workers 2]

Skips the work when <out>/benchmark.json already records the same parameters.

Exit codes: 0 done; 1 a bug (traceback); 2 bad parameters, an unwritable folder or a full disk (one
message); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.benchmark.generate import format_statistics, generate_benchmark  # noqa: E402
from cpsl_tf.benchmark.style import DEFAULT_SHIFT, VARIANT_SEEDS  # noqa: E402
from cpsl_tf.command import run_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/make_benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/bench", help="output folder (default: data/bench)")
    parser.add_argument("--variant", default="A", choices=sorted(VARIANT_SEEDS),
                        help="domain-shift variant; B is a differently drawn shift of the same strength "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the scene contents (default: %(default)s)")
    parser.add_argument("--height", type=int, default=96, help="image height (default: %(default)s)")
    parser.add_argument("--width", type=int, default=192, help="image width (default: %(default)s)")
    parser.add_argument("--num-source", type=int, default=1000,
                        help="labelled source images (default: %(default)s)")
    parser.add_argument("--num-target-train", type=int, default=1000,
                        help="target training images (default: %(default)s)")
    parser.add_argument("--num-target-val", type=int, default=200,
                        help="target validation images (default: %(default)s)")
    parser.add_argument("--shift", type=float, default=DEFAULT_SHIFT,
                        help=f"strength of the target shift in [0, 1] (default {DEFAULT_SHIFT})")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes; the output is the same for any number (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(lambda: generate(args, parser))


def generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    start = time.perf_counter()
    try:
        stats = generate_benchmark(args.out, variant=args.variant, seed=args.seed, height=args.height,
                                   width=args.width, num_source=args.num_source,
                                   num_target_train=args.num_target_train, num_target_val=args.num_target_val,
                                   workers=args.workers, shift=args.shift)
    except ValueError as error:
        parser.error(str(error))
    print(format_statistics(stats))
    print(f"benchmark in {args.out} ({time.perf_counter() - start:.1f} s; "
          f"histogram: {Path(args.out) / 'class_histogram.png'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
