"""Run CPSL end to end: warm-up, soft pseudo labels, CPSL adaptation, distillation, evaluation.

Examples:
  python scripts/train.py                                   # the generated benchmark (made if missing)
  python scripts/train.py --config configs/gta.json         # GTA5 -> Cityscapes with the paper's settings
  python scripts/train.py --stage pseudo                    # one stage only
  python scripts/train.py --from pseudo --set cpsl.preset=official  # its prototypes differ from paper
  python scripts/train.py --quick                           # a smoke run of every stage in minutes
"""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
