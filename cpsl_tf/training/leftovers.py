"""Remove what interrupted writes leave in a run folder.

A write killed before its rename leaves its temporary: ``atomic_path``'s hidden
``.<name>.<random>.tmp<suffix>`` files, TensorFlow's ``ckpt-<N>_temp/`` folders and ``checkpoint.tmp<random>``
index files, and the scratch checkpoint folder ``.worker_<id>_checkpoints/`` of a multi-worker run. Nothing
reads them, but they pile up and can be large (a whole checkpoint each).

They are removed under the run folder's lock, and only when older than the moment this run took it: the
other workers of a multi-worker run write in the same folder without that lock, and their temporaries are
newer.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_TEMPORARY_FILE = re.compile(r"^(\..+\.tmp.*|checkpoint\.tmp.*)$")
_TEMPORARY_FOLDER = re.compile(r"^(.+_temp|\.worker_.+_checkpoints)$")


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is named as the temporary of an interrupted write."""
    pattern = _TEMPORARY_FOLDER if path.is_dir() and not path.is_symlink() else _TEMPORARY_FILE
    return bool(pattern.match(path.name))


def remove_leftovers(folder: Path, older_than: float, recursive: bool = True) -> list[Path]:
    """Delete the temporaries of interrupted writes in ``folder`` (and its subfolders when ``recursive``;
    symbolic links are not followed) last modified before ``older_than`` (seconds since the epoch).
    Returns what was removed."""
    removed = []
    for root, folders, files in os.walk(folder):
        for name in [*files, *folders]:
            path = Path(root) / name
            try:
                if not is_leftover(path) or path.lstat().st_mtime >= older_than:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    folders.remove(name)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
        if not recursive:
            break
    if removed:
        log.info("removed %d leftover(s) of interrupted writes in %s: %s", len(removed), folder,
                 ", ".join(str(p.relative_to(folder)) for p in removed))
    return removed
