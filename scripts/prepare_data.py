"""Dataset preparation tools: ``python scripts/prepare_data.py verify --dataset gta5 --root DIR``."""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpsl_tf.data.verify import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
