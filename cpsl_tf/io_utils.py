"""Atomic file output: a reader never sees half a file, and a crash never destroys the previous one.

A full disk (or quota) is one :class:`DiskFullError` naming the file, the space it needs and the space free;
the temporary of the failed write is removed, so the previous file stays and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How TensorFlow's file system reports those errnos: as text, in a ResourceExhaustedError or an OSError
# without errno.
_DISK_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


class DiskFullError(OSError):
    """A write failed for lack of space on its device; the message names the file and the space needed."""


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
        return True
    return any(text in str(err) for text in _DISK_FULL_TEXTS)


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g} {unit}"
    return f"{num_bytes} bytes"


def _free_bytes(path: Path) -> int:
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def current_umask() -> int:
    """The process' umask. Read from ``/proc`` where Linux shows it: setting the umask to read it back would,
    for an instant, change the mode of files that other threads create."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def disk_full_error(path: str | Path, needed: int | None) -> DiskFullError:
    """The error for a write of ``needed`` bytes (None: unknown) to ``path`` that does not fit."""
    path = Path(path)
    need = f"it needs {_size(needed)}, " if needed is not None else ""
    free = _size(_free_bytes(path))
    return DiskFullError(f"no space left on the device for {path} ({need}{free} free there); free some space "
                         "and run the same command again")


def require_space(path: str | Path, needed: int) -> None:
    """Raise :class:`DiskFullError` before writing ``needed`` bytes to ``path`` if they cannot fit."""
    if _free_bytes(Path(path)) < needed:
        raise disk_full_error(path, needed)


@contextlib.contextmanager
def disk_full_named(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn a full-disk error raised inside (from Python, h5py or TensorFlow) into a :class:`DiskFullError`
    naming ``path``; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(path, needed) from err


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The file gets the mode a plain ``open()`` would give it (0666 less the umask). The temporary name keeps
    the final suffix so that writers which choose a format by extension (``.png``, ``.npz``,
    ``.weights.h5``) still work. ``size`` (bytes), when known, is checked against the
    free space before anything is written.
    """
    path = Path(path)
    # Outermost, so that the free space it reports is measured once the temporary is gone.
    with disk_full_named(path, size):
        path.parent.mkdir(parents=True, exist_ok=True)
        if size is not None:
            require_space(path, size)
        suffix = "".join(path.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        # mkstemp creates the file 0600; the result gets the mode open() would give it.
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
