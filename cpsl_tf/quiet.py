"""Quiet by default: TensorFlow's start-up notices and its libraries' INFO lines bury the useful ones.

:func:`quiet_tensorflow` imports TensorFlow with its C++ log limited to fatal messages (it hides the oneDNN
and CPU-feature notices, and the ``failed call to cuInit`` that a machine without a GPU logs as an error),
and absl's INFO lines (``Sharding callback duration``) hidden; ``verbose=True`` shows all of it. A
``TF_CPP_MIN_LOG_LEVEL`` set by the user is kept unless ``verbose``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 goes to the null device: what C++ libraries print while this lasts is dropped."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def quiet_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow (a no-op once imported), quiet unless ``verbose``.

    TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, when it is first imported; the libraries it loads print
    their notices (oneDNN, CUDA stubs) before it sets up its log, so those are dropped by discarding the
    standard error of the import itself."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        logging.getLogger("absl").setLevel(logging.NOTSET)
        importlib.import_module("tensorflow")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.WARNING)
    if "tensorflow" not in sys.modules:
        with _stderr_discarded():
            importlib.import_module("tensorflow")
