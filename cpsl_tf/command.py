"""How every command-line script ends: one message for a mistake in what the user gave, a traceback for a bug.

Exit codes, the same for every script in ``scripts/``:

* 0: done;
* 1: a bug (its traceback is printed), or a result the script documents as a failure (an export whose
  parity gate fails, inputs that ``predict.py`` skipped, unreadable files that ``prepare_data.py verify``
  found);
* 2: a mistake in the inputs: a missing or damaged file, a folder of the wrong layout, a bad setting, a full
  disk. One line ``error: <file>: <what was expected>``, no traceback;
* 130: interrupted (Ctrl-C).

An error is a mistake in the inputs when its class derives from :class:`UserError`, when it is a
:class:`~cpsl_tf.io_utils.DiskFullError`, or an ``OSError`` about a named file (not found, not permitted,
not a folder).
"""

from __future__ import annotations

import argparse
import gc
import sys
import traceback
from collections.abc import Callable

from cpsl_tf.io_utils import DiskFullError
from cpsl_tf.quiet import quiet_tensorflow

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Base of the errors whose message names the file or setting at fault and what was expected there."""


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of a mistake in the inputs, or ``None`` for anything else (a bug)."""
    if isinstance(err, (UserError, DiskFullError)):
        return str(err)
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return None


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own log (device set-up, oneDNN, CUDA) and its "
                             "libraries' INFO lines, hidden by default")


def run_command(body: Callable[[], int], interrupted: str = "interrupted",
                verbose: bool | None = None) -> int:
    """Run a script's work and return its exit code; ``interrupted`` is the line printed on Ctrl-C. With
    ``verbose`` given (a script's ``--verbose``), TensorFlow is imported first, quiet unless ``verbose``
    (:func:`cpsl_tf.quiet.quiet_tensorflow`)."""
    try:
        if verbose is not None:
            quiet_tensorflow(verbose)
        return body()
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            traceback.print_exc()
            return EXIT_BUG
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        # A failed tf.data pipeline's traceback holds its iterator in reference cycles. Left to the collection
        # at interpreter shutdown, the iterator's destructor waits for its tf.numpy_function readers, which
        # can no longer take the GIL then: the process hung or aborted after printing its error. Collected
        # here, with the interpreter still running, the readers finish and the process exits.
        gc.collect()
