"""Copy each benchmark's results table into README.md, or check that README.md holds the current ones.

A README block ``<!-- NAME: PATH -->`` ... ``<!-- end NAME -->`` is a verbatim copy of the file PATH that a
benchmark script wrote, so every figure in it comes from a command anyone can rerun.

    python benchmarks/readme_tables.py           # refresh the blocks from the files
    python benchmarks/readme_tables.py --check   # exit 1 naming each block that differs from its file
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cpsl_tf.io_utils import atomic_write_text  # noqa: E402

BLOCK = re.compile(r"(<!-- (?P<name>[^:>]+): (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end (?P=name) -->)", re.S)


def stale_blocks(readme: str, repo: Path = REPO) -> list[str]:
    """Names of the blocks whose body is not their file's text."""
    return [m["name"] for m in BLOCK.finditer(readme)
            if m["body"].strip() != (repo / m["path"]).read_text().strip()]


def refreshed(readme: str, repo: Path = REPO) -> str:
    """``readme`` with every block's body replaced by its file's text."""
    return BLOCK.sub(lambda m: m[1] + (repo / m["path"]).read_text().strip() + "\n" + m[5], readme)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report blocks that differ from their file")
    args = parser.parse_args(argv)
    path = REPO / "README.md"
    readme = path.read_text()
    if args.check:
        stale = stale_blocks(readme)
        for name in stale:
            print(f"README.md: the block '{name}' differs from its file; "
                  "run python benchmarks/readme_tables.py")
        return 1 if stale else 0
    updated = refreshed(readme)
    if updated != readme:
        atomic_write_text(path, updated)
        print("README.md: blocks refreshed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
