"""Logging set-up for the entry points (library modules only call ``logging.getLogger``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (not when it was made),
    so redirections made later (tqdm, test harnesses) are followed and a closed stream is never used."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if "tqdm" not in sys.modules:
            super().emit(record)
            return
        from tqdm import tqdm  # already imported (checked above)

        # A progress bar on the terminal is cleared, then redrawn. Without tqdm's lock: it is shared with
        # forked processes (data workers, a forked trainer), and a fork taken while a thread of this
        # process held it would leave both processes waiting for each other at their next log line.
        with tqdm.external_write_mode(file=self.stream, nolock=True):
            super().emit(record)


def setup_logging(log_file: str | os.PathLike[str] | None = None, *, level: int = logging.INFO, rank: int = 0) -> logging.Logger:
    """Send the ``lkdn`` and ``basicsr`` loggers to stderr and, if given, ``log_file``.

    Only rank 0 logs at ``level``; other ranks log errors only. Returns the ``lkdn`` logger.
    Calling it again replaces the handlers (no duplicated lines).
    """
    level = level if rank == 0 else logging.ERROR
    handlers: list[logging.Handler] = [StderrHandler()]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    for name in ("lkdn", "basicsr"):
        log = logging.getLogger(name)
        for old in list(log.handlers):
            log.removeHandler(old)
            old.close()
        for handler in handlers:
            log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False
    return logging.getLogger("lkdn")
