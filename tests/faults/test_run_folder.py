"""The run folder belongs to one run (issue 15): its name cannot lead outside train.run_dir, and a second
training process on it stops with a clear message instead of corrupting the first one's files. The lock
dies with its holder, SIGKILL included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cpsl_tf.config import ConfigError, load_config
from cpsl_tf.training.cli import main
from tests.conftest import REPO

# A stand-in for a first train.py: it takes the documented lock (flock on <run>/.lock, its PID inside), says
# so, then works for a minute.
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\\n".encode())
    print("locked", flush=True)
    time.sleep(60)
""")


def config_without_data(tmp_path: Path, name: str = "lock") -> Path:
    """A config whose stages stop at once (no data): enough to see whether a run gets past its lock."""
    raw = {"name": name, "train": {"run_dir": str(tmp_path / "runs")},
           "data": {"source": "gta5", "source_root": str(tmp_path / "no_gta5"), "target": "cityscapes",
                    "target_root": str(tmp_path / "no_cityscapes"), "source_size": [64, 128],
                    "target_size": [64, 128], "crop_size": [64, 96]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return path


def train(config: Path, capsys, *args) -> tuple[int, str]:
    code = main(["--config", str(config), "--stage", "warmup", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock of ``tmp_path/runs/lock``; yields it, kills it at the end."""
    run = tmp_path / "runs" / "lock"
    run.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process, run
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.parametrize("name", ["../escaped", "a/../../escaped", "..", ".", "", "sub/run", "back\\slash",
                                  "tab\there", " padded"])
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(name):
    with pytest.raises(ConfigError, match=r"key 'name' must be a plain folder name"):
        load_config(REPO / "configs" / "bench.json", [f"name={name}"])


def test_a_run_name_cannot_put_the_run_folder_outside_run_dir(tmp_path, capsys):
    config = config_without_data(tmp_path, name="../escaped")
    code, err = train(config, capsys)
    assert code == 2
    assert str(config) in err and "'name'" in err and "plain folder name" in err
    assert not (tmp_path / "escaped").exists()


def test_a_second_process_on_a_locked_run_folder_stops_naming_folder_and_pid(holder, tmp_path, capsys):
    process, run = holder
    code, err = train(config_without_data(tmp_path), capsys)
    assert code == 2
    assert f"run folder {run} is in use" in err and f"PID {process.pid}" in err
    assert len(err.strip().splitlines()) == 1
    # Refused before touching anything: the holder's files are as they were.
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_lock_whose_holder_was_killed_does_not_block(holder, tmp_path, capsys):
    process, run = holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (run / ".lock").exists()  # the stale file stays; the kernel dropped the lock with its holder
    code, err = train(config_without_data(tmp_path), capsys)
    assert code == 2 and "in use" not in err and "source dataset" in err  # got past the lock, to the data
    assert (run / ".lock").read_text().strip() == str(os.getpid())  # this process took it over
    # Released when the run ended, even though it failed: the next run gets it too.
    code, err = train(config_without_data(tmp_path), capsys)
    assert "in use" not in err


def test_workers_of_one_multi_worker_run_do_not_lock_each_other_out(tmp_path):
    from cpsl_tf.training.runlock import LOCK_NAME, RunFolderBusy, lock_name, run_folder_lock

    def tf_config(index, chief=False):
        cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"], **({"chief": ["127.0.0.1:3"]} if chief else {})}
        return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})

    assert lock_name("multi_worker", tf_config(0)) == LOCK_NAME  # the chief: the single-process lock
    assert lock_name("auto", tf_config(1)) == ".lock-worker-1"
    assert lock_name("auto", tf_config(0, chief=True)) == ".lock-worker-0"
    assert lock_name("one_device", tf_config(1)) == LOCK_NAME  # independent processes: each its own run
    with run_folder_lock(tmp_path, lock_name("auto", tf_config(0))), \
            run_folder_lock(tmp_path, lock_name("auto", tf_config(1))):
        assert (tmp_path / LOCK_NAME).exists() and (tmp_path / ".lock-worker-1").exists()
        # A second run's chief, or a single-process run, is refused.
        with pytest.raises(RunFolderBusy, match="in use"), run_folder_lock(tmp_path, LOCK_NAME):
            pass
