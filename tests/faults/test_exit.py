"""An unattended train.py fails, it does not hang: after a stage stops on bad data, the process exits with its
one-line error.

It used to hang (or abort, exit code 134) in about one run of three: the stopped stage's tf.data iterator
was freed only at interpreter shutdown, while tf.numpy_function readers of the next samples were still in
flight; they could no longer take the GIL, and the iterator's destructor waited for them forever. Slow
readers make that certain, so each run here would hang without the fix; the time limit bounds the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from PIL import Image

from tests.conftest import REPO
from tests.faults.conftest import copy_bench, tiny_config, write_config

# scripts/train.py's main() with image reads that take a second: readers are in flight when the stage stops.
SLOW_READERS = textwrap.dedent("""
    import sys, time
    from cpsl_tf.data import datasets
    from cpsl_tf.training.cli import main

    read = datasets.load_image

    def slow_load_image(*args, **kwargs):
        time.sleep(1.0)
        return read(*args, **kwargs)

    datasets.load_image = slow_load_image
    sys.exit(main(sys.argv[1:]))
""")
RUNS = 2
# Seconds a run may take: about 12 s on a busy 2-core machine.
TIME_LIMIT = 90


def test_train_exits_after_a_bad_label_with_readers_in_flight(tiny_bench, tmp_path):
    bench = copy_bench(tiny_bench, tmp_path / "bench")
    colour = sorted((bench / "source" / "labels").glob("*.png"))[0]
    with Image.open(colour) as label:
        label.convert("RGB").save(colour)
    config = write_config(tmp_path / "tiny.json", tiny_config(bench))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = [subprocess.Popen([sys.executable, "-c", SLOW_READERS, "--config", str(config),
                              "--stage", "warmup", "--run-dir", str(tmp_path / f"run{i}")],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for i in range(RUNS)]
    results = []
    try:
        for run in runs:
            _, err = run.communicate(timeout=TIME_LIMIT)
            results.append((run.returncode, err))
    finally:
        for run in runs:
            run.kill()
            run.wait()
    for code, err in results:
        assert code == 2, f"exit code {code}:\n{err[-2000:]}"
        assert f"{colour}: expected a single-channel label image" in err
        assert "Traceback" not in err
