"""Convert an official CPSL/ProDA PyTorch checkpoint to a Keras segmenter checkpoint.

    python scripts/convert_checkpoint.py model.pth out.weights.h5

Writes out.weights.h5, its sidecar out.json (architecture, classes; ``load_segmenter`` reads it) and,
when the checkpoint holds them, the self-labeling prototypes to out.prototypes.npy. Needs PyTorch
(``pip install 'cpsl-tf[convert]'``). The checkpoint is read with torch's safe loader (``weights_only=True``
plus the NumPy scalar and array types the official files hold); a file that needs anything more to unpickle
could run code and is refused (exit code 2). ``--trust-checkpoint-code`` unpickles it without restriction:
only for a file you trust, as any code in it then runs.

Exit codes: 0 converted; 1 a bug (traceback); 2 a mistake in the inputs: a missing, damaged, unsafe or
foreign checkpoint, PyTorch not installed, a full disk (one message); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.command import add_verbose_flag, run_command  # noqa: E402
from cpsl_tf.models.official_checkpoint import OFFICIAL_ASPP_RATES, TRUST_FLAG  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/convert_checkpoint.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official checkpoint (.pth / *_best_model.pkl) or a bare state dict")
    parser.add_argument("destination", help="output Keras weights, must end with .weights.h5")
    parser.add_argument("--aspp-rates", type=int, nargs="+", default=list(OFFICIAL_ASPP_RATES),
                        help="dilation rates of the head's 3x3 branches (not stored in weights; default: "
                             "%(default)s)")
    parser.add_argument(TRUST_FLAG, dest="trust_code", action="store_true",
                        help="UNSAFE: unpickle the checkpoint without torch's safe loader "
                             "(weights_only=False), so any code in it runs; only for a file you trust that "
                             "the safe loader refuses")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if not args.destination.endswith(".weights.h5"):
        parser.error(f"destination {args.destination!r} must end with .weights.h5")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(lambda: convert(args), verbose=args.verbose)


def convert(args: argparse.Namespace) -> int:
    from cpsl_tf.models.convert import convert_checkpoint

    if args.trust_code:
        print(f"WARNING: {TRUST_FLAG}: {args.source} is unpickled without restriction; any code in it runs "
              "now, with your permissions", file=sys.stderr)
    meta = convert_checkpoint(args.source, args.destination, aspp_rates=args.aspp_rates,
                              trust_code=args.trust_code)
    model = meta["model"]
    print(f"converted {args.source} -> {args.destination}: {model['backbone']} "
          f"(width {model['base_width']}), "
          f"{meta['num_classes']} classes, bn_pretrain={meta['bn_pretrain']}"
          + (f", prototypes -> {meta['prototypes']}" if "prototypes" in meta else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
