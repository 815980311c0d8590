"""Console commands installed by ``pip install -e .``: ``lkdn-train``, ``lkdn-test`` and one per script.

Each command is the script of the same job, with the same arguments (``lkdn-train -opt ...`` is
``python lkdn/train.py -opt ...``, ``lkdn-reparam ...`` is ``python scripts/reparameterize.py ...``),
run with the Python of the environment it was installed in, so no ``source .venv/bin/activate``
is needed: ``.venv/bin/lkdn-test -opt options/test/LKDN/test_LKDN_x4.yml``. The ``scripts/``
commands need the clone (an editable install, the README's); relative paths in the options are
read from the current folder, as with the scripts.

Every parser is made by :func:`lkdn.utils.command_line.command_parser` (the command's name and examples
in its ``--help``) and read by :func:`lkdn.utils.command_line.parse_command_line`: options are spelled with hyphens (``--root-path``), and the old
underscore spellings (``--root_path``, ``--force_yml``) are still accepted without being shown.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from lkdn.utils.command_line import SCRIPTS

ROOT = Path(__file__).resolve().parents[1]

def train() -> int:
    """``lkdn-train``: :mod:`lkdn.train`."""
    from lkdn.train import main  # lazy: each command imports only its own pipeline

    return main()


def test() -> int:
    """``lkdn-test``: :mod:`lkdn.test`, clear errors as one ``error: ...`` line (status 1)."""
    from lkdn import test as entry  # lazy: each command imports only its own pipeline

    try:
        entry.main()
    except entry.CLEAR_ERRORS as err:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 (a command's output)
        return 1
    return 0


def run_script(name: str, argv: list[str] | None = None) -> int:
    """Run ``scripts/<name>.py``'s ``main`` with ``argv`` (default: the command line)."""
    path = ROOT / "scripts" / f"{name}.py"
    if not path.is_file():
        print(f"error: {path} not found: the scripts come with the clone; install with pip install -e . from it",  # noqa: T201
              file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"lkdn_cli_{Path(name).name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return int(module.main(sys.argv[1:] if argv is None else argv) or 0)


def _command(script: str) -> Callable[[], int]:
    def command() -> int:
        return run_script(script)

    command.__name__ = Path(script).name
    command.__doc__ = f"``scripts/{script}.py``"
    return command


for _command_name, _script in SCRIPTS.items():
    globals()[Path(_script).name] = _command(_script)


def entry_points() -> list[str]:
    """The ``console_scripts`` of setup.py."""
    return ["lkdn-train = lkdn.cli:train", "lkdn-test = lkdn.cli:test",
            *(f"{command} = lkdn.cli:{Path(script).name}" for command, script in SCRIPTS.items())]
