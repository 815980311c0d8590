"""``python -m lkdn.commands <command> [arguments]``: run one of :data:`lkdn.commands.COMMANDS` by its name.

The same as the console script (``python -m lkdn.commands lkdn-test -opt ...`` is ``lkdn-test -opt ...``), for
a command run in a process of its own by another command, with the same Python.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lkdn.commands import COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv[0]`` with the rest of ``argv`` (default: the command line); 2 for an unknown name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m lkdn.commands COMMAND [ARGUMENTS]; COMMAND is one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    command = importlib.import_module(f"lkdn.commands.{COMMANDS[argv[0]]}")
    return command.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
