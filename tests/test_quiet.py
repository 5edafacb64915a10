"""TensorFlow starts without a word unless asked: no oneDNN, CPU-feature or CUDA notices, no cuInit error."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PROGRAM = """
from cpsl_tf.quiet import quiet_tensorflow
quiet_tensorflow()
import tensorflow as tf
tf.config.list_logical_devices()
print(int(tf.constant(1) + 1))
"""


def test_tensorflow_starts_quietly():
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    quiet = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120,
                           cwd=REPO, env=environment)
    assert quiet.returncode == 0 and quiet.stdout == "2\n"
    assert quiet.stderr == ""
