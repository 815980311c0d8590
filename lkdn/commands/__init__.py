"""The console commands: one module per job, each with ``main(argv=None) -> int``.

:data:`COMMANDS` is the one table of commands: ``lkdn-infer`` runs :func:`lkdn.commands.inference.main`,
and so on; setup.py installs each as a console script (:func:`entry_points`), run with the Python of the
environment it was installed in (``.venv/bin/lkdn-test -opt ...`` needs no ``source .venv/bin/activate``).
The commands work from an installed wheel as from the clone; relative paths in the options are read from
the current folder.

Every ``main`` goes through :func:`run` (the :func:`command` decorator): a clear error
(:class:`lkdn.errors.LkdnError`) is one ``error: <message>`` line on stderr and exit status 1,
``LKDN_TRACEBACK=1`` shows its traceback instead, and a Ctrl-C is one line and status 130. Anything
else is a bug and keeps its traceback. argparse's own usage errors keep status 2.

This package imports only the standard library: each command builds its parser and reads its
command line before it imports torch, so ``--help`` and usage errors are fast.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lkdn.errors import LkdnError

#: command -> module of this package holding its ``main``
COMMANDS = {
    "lkdn-train": "train", "lkdn-test": "test", "lkdn-infer": "inference", "lkdn-reparam": "reparameterize",
    "lkdn-export-onnx": "export_onnx", "lkdn-export-openvino": "export_openvino", "lkdn-export-ncnn": "export_ncnn",
    "lkdn-profile": "profile_model", "lkdn-download": "download", "lkdn-convert": "convert_checkpoint",
    "lkdn-compare": "compare_models", "lkdn-ntire": "ntire_esr", "lkdn-demo": "demo", "lkdn-leaderboard": "leaderboard",
    "lkdn-plot-curves": "plot_curves", "lkdn-compare-images": "compare_images",
    "lkdn-strip-checkpoint": "strip_checkpoint", "lkdn-make-lr": "make_lr",
    "lkdn-extract-subimages": "extract_subimages", "lkdn-create-lmdb": "create_lmdb",
}

#: the backends of ``--backend`` (without ``auto``), as :data:`lkdn.backends.BACKENDS` (a test checks they agree);
#: written here so that building a parser imports no torch
BACKENDS = ("torch", "onnxruntime", "openvino", "ncnn")
#: exported files a command runs as they are (suffix -> backend), as :data:`lkdn.backends.files.SUFFIXES`
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".param": "ncnn"}
#: the years of ``lkdn-ntire --year``, as the keys of :data:`lkdn.ntire.SCORE_WEIGHTS`
NTIRE_YEARS = (2024, 2025, 2026)

INTERRUPTED = "interrupted: stopped by Ctrl-C"


class CommandError(LkdnError, ValueError):
    """A command's arguments name something unusable or do not fit together; the message names the option."""


def entry_points() -> list[str]:
    """The ``console_scripts`` of setup.py: ``lkdn-infer = lkdn.commands.inference:main`` and so on."""
    return [f"{command} = lkdn.commands.{module}:main" for command, module in COMMANDS.items()]


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None, *,
        interrupted: str = INTERRUPTED, clear: tuple[type[BaseException], ...] = ()) -> int:
    """``main(argv)`` as a command: its status (``None`` or a result that is not an int: 0), or 1 after one
    ``error: <message>`` line for a :class:`~lkdn.errors.LkdnError` or one of ``clear`` (builtin errors whose
    messages the command words itself, such as an ``OSError`` naming the file; nothing printed when the error
    was logged already, ``lkdn_logged``), or 130 after the line ``interrupted`` for a Ctrl-C.
    ``LKDN_TRACEBACK=1`` re-raises both, to show the traceback."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        print(interrupted, file=sys.stderr)  # noqa: T201 (a command's output)
        return 128 + signal.SIGINT
    except (LkdnError, *clear) as err:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        if not getattr(err, "lkdn_logged", False):
            print(f"error: {err}", file=sys.stderr)  # noqa: T201 (a command's output)
        return 1
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def command(function: Callable[[Sequence[str] | None], Any] | None = None, *,
            interrupted: str = INTERRUPTED, clear: tuple[type[BaseException], ...] = ()) -> Any:
    """Decorate a command's ``main`` with :func:`run`: ``@command`` or ``@command(clear=(OSError,))``."""
    def decorate(function: Callable[[Sequence[str] | None], Any]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(function)
        def main(argv: Sequence[str] | None = None) -> int:
            return run(function, argv, interrupted=interrupted, clear=clear)

        return main

    return decorate if function is None else decorate(function)
