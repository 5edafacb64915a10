"""Report of a run folder: per-stage scores, class distributions (Fig. 6), curves, confusion, examples.

Examples:
  python scripts/report.py runs/bench
  python scripts/report.py runs/gta --max-images 500 --examples 6
  python scripts/report.py runs/gta --no-model      # only what the run folder holds, no inference
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.evaluation.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
