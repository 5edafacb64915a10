"""Paths typed by the user: a missing one is named with what was expected there and, when a name beside it is
close (``model.onx`` beside ``model.onnx``), the path that probably was meant."""

from __future__ import annotations

import difflib
from pathlib import Path

from cpsl_tf.command import UserError


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder given by the user does not exist."""


def did_you_mean(path: str | Path) -> str:
    """``" (did you mean <path>?)"`` for an existing path that differs from ``path`` by a close name in its
    first missing part, else ``""``."""
    parts = Path(path).parts
    for depth in range(1, len(parts) + 1):
        head = Path(*parts[:depth])
        if head.exists():
            continue
        if not head.parent.is_dir():
            return ""
        names = [entry.name for entry in head.parent.iterdir()]
        for name in difflib.get_close_matches(head.name, names, n=3, cutoff=0.6):
            candidate = head.parent / name / Path(*parts[depth:])
            if candidate.exists():
                return f" (did you mean {candidate}?)"
        return ""
    return ""


def require_file(path: str | Path, expected: str) -> Path:
    """``path`` if it is a file; else :class:`MissingPathError` saying what was ``expected`` there."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise MissingPathError(f"{path}: is a folder; expected {expected}")
    raise MissingPathError(f"{path}: no such file; expected {expected}{did_you_mean(path)}")


def require_folder(path: str | Path, expected: str) -> Path:
    """``path`` if it is a folder; else :class:`MissingPathError` saying what was ``expected`` there."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise MissingPathError(f"{path}: is a file, not a folder; expected {expected}")
    raise MissingPathError(f"{path}: no such folder; expected {expected}{did_you_mean(path)}")
