"""``<run folder>/train.log``: what each ``train.py`` invocation logged and printed, appended."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import traceback
from pathlib import Path
from typing import TextIO

from cpsl_tf.command import user_error_message

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Records kept until the log file opens: the start-up header and what comes before the run folder is locked.
_EARLY_RECORDS = 10_000


def how_it_ended(err: BaseException) -> str:
    """What the script prints when ``err`` ends it (:func:`cpsl_tf.command.run_command`), for the log."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    message = user_error_message(err) if isinstance(err, Exception) else None
    return f"error: {message}" if message is not None else "".join(traceback.format_exception(err)).rstrip()


class RunLog:
    """While entered, every log record (and every Python warning) is kept for the log at ``path``, which
    :meth:`start` opens once the run folder is this process's (a process that finds it locked by another
    writes nothing there), with the records kept so far. :meth:`print` prints, and writes to the open log;
    an error that ends the run is written to it as the script prints it. ``path=None`` (a worker other than
    the chief) writes no file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.handler: logging.FileHandler | None = None
        self._early = logging.handlers.BufferingHandler(_EARLY_RECORDS)
        self._root_level = logging.NOTSET

    def __enter__(self) -> RunLog:
        logging.captureWarnings(True)
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(min(root.level, logging.INFO))  # the log holds the INFO lines whatever else is set up
        root.addHandler(self._early)
        return self

    def start(self) -> None:
        if self.path is None:
            return
        root = logging.getLogger()
        root.removeHandler(self._early)
        self.handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        for record in self._early.buffer:
            self.handler.handle(record)
        self._early.buffer.clear()
        root.addHandler(self.handler)

    def __exit__(self, kind, err, trace) -> None:
        logging.captureWarnings(False)
        root = logging.getLogger()
        root.setLevel(self._root_level)
        root.removeHandler(self._early)
        if err is not None:
            self._write(how_it_ended(err))
        if self.handler is not None:
            root.removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    def print(self, text: str, file: TextIO | None = None) -> None:
        print(text, file=file or sys.stdout)
        self._write(text)

    def _write(self, text: str) -> None:
        if self.handler is not None:
            self.handler.acquire()
            try:
                self.handler.stream.write(text + "\n")
                self.handler.flush()
            finally:
                self.handler.release()
