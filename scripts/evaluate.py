"""Evaluate a checkpoint or a folder of predicted label PNGs on a labelled dataset split.

Examples:
  python scripts/evaluate.py --checkpoint runs/bench/cpsl/model.weights.h5 --config configs/bench.json
  python scripts/evaluate.py --checkpoint model.weights.h5 --dataset cityscapes --root data/cityscapes
  python scripts/evaluate.py --predictions preds/ --dataset cityscapes --root data/cityscapes --split val
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.evaluation.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
