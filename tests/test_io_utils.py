"""Atomic writes give their files the mode a plain open() would: 0666 less the umask, not mkstemp's 0600."""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np
import pytest

from cpsl_tf.io_utils import atomic_path, atomic_write_json, current_umask


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        atomic_write_json(tmp_path / "results.json", {"miou": 0.5})
        with atomic_path(tmp_path / "state.npz") as tmp:
            np.savez(tmp, values=np.zeros(3))
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    for name in ("results.json", "state.npz"):
        assert mode(tmp_path / name) == 0o666 & ~mask == mode(plain), name
