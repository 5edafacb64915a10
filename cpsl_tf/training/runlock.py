"""One training process per run folder: an exclusive ``flock`` on ``<run_dir>/.lock`` for the whole run.

The lock belongs to the open file, so the kernel drops it whenever the process ends, however it ends
(an error, Ctrl-C, SIGKILL, the OOM killer): the lock file stays behind but never blocks a later run. The
file holds the holder's PID, which a second process names in its error. The file is never deleted (deleting
a lock file another process has open would let two processes hold "the" lock).

Under a multi-worker run every worker runs the stages on the same folder, so they cannot all take the one
lock: the chief takes ``.lock`` (the same lock a single-process run takes), every other worker takes its
own ``.lock-<task type>-<index>``. A second run on the folder then fails in its chief, or in the worker
whose file is taken, and ``scripts/launch_workers.py`` stops the rest of that run.

``flock`` is advisory and local: processes on other machines sharing the folder over NFS may not see it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from cpsl_tf.run_layout import LOCK as LOCK_NAME
from cpsl_tf.run_layout import RunLayout
from cpsl_tf.training.stage import StageError

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

log = logging.getLogger(__name__)


class RunFolderBusy(StageError):
    """Another process holds the run folder's lock."""


def lock_name(strategy: str = "auto", tf_config: str | None = None) -> str:
    """The lock file of this process: ``.lock`` for a single-process run and for the chief of a multi-worker
    run (``train.strategy`` multi_worker, or auto with several workers in ``TF_CONFIG``; the chief as in
    ``strategy.is_chief``), ``.lock-<type>-<index>`` for the other workers."""
    raw = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if strategy not in ("auto", "multi_worker") or not raw:
        return LOCK_NAME
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec.get("task", {})
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        kind, index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return LOCK_NAME  # the strategy reports a malformed TF_CONFIG
    if strategy == "auto" and workers <= 1:
        return LOCK_NAME
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return LOCK_NAME if chief else f"{LOCK_NAME}-{kind}-{index}"


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if text:
            return f"PID {text}"
    return "PID unknown"


@contextlib.contextmanager
def run_folder_lock(run_dir: str | Path, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold an exclusive lock on ``run_dir/name`` inside the ``with``; :class:`RunFolderBusy` (naming the
    folder and the holder's PID) when another process holds it. Never waits."""
    run_dir = Path(run_dir)
    path = RunLayout(run_dir).lock(name)
    if fcntl is None:
        log.warning("no file locking on this platform: nothing stops a second process on %s", run_dir)
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"run folder {run_dir} is in use by another training process ({_holder(fd)}, lock file "
                f"{path}); wait for it to finish or stop it, or give this run another --run-dir") from None
        except OSError as err:  # a file system without flock: run as before, unprotected
            log.warning("cannot lock %s (%s): nothing stops a second process on this run folder", path, err)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
