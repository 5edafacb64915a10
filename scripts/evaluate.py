"""Evaluate a checkpoint or a folder of predicted label PNGs on a labelled target split (see --help)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
