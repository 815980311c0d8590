"""Console commands installed by ``pip install -e .``: ``lkdn-train``, ``lkdn-test`` and one per script.

Each command is the script of the same job, with the same arguments (``lkdn-train -opt ...`` is
``python lkdn/train.py -opt ...``, ``lkdn-reparam ...`` is ``python scripts/reparameterize.py ...``),
run with the Python of the environment it was installed in, so no ``source .venv/bin/activate``
is needed: ``.venv/bin/lkdn-test -opt options/test/LKDN/test_LKDN_x4.yml``. The ``scripts/``
commands need the clone (an editable install, the README's); relative paths in the options are
read from the current folder, as with the scripts.

Every parser is made by :func:`command_parser` (the command's name and examples in its ``--help``) and
read by :func:`parse_command_line`: options are spelled with hyphens (``--root-path``), and the old
underscore spellings (``--root_path``, ``--force_yml``) are still accepted without being shown.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: command -> script under scripts/, without .py (the lkdn-train and lkdn-test commands are below)
SCRIPTS = {
    "lkdn-reparam": "reparameterize", "lkdn-infer": "inference", "lkdn-export-onnx": "export_onnx",
    "lkdn-export-openvino": "export_openvino", "lkdn-export-ncnn": "export_ncnn", "lkdn-profile": "profile_model",
    "lkdn-download": "download", "lkdn-convert": "convert_checkpoint", "lkdn-compare": "compare_models",
    "lkdn-ntire": "ntire_esr", "lkdn-demo": "demo", "lkdn-leaderboard": "leaderboard",
    "lkdn-plot-curves": "plot_curves", "lkdn-compare-images": "compare_images",
    "lkdn-strip-checkpoint": "strip_checkpoint", "lkdn-make-lr": "data_preparation/make_lr",
    "lkdn-extract-subimages": "data_preparation/extract_subimages", "lkdn-create-lmdb": "data_preparation/create_lmdb",
}

#: how each command is run without the console scripts (shown as the command in the helps)
SCRIPT_PATHS = {"lkdn-train": "lkdn/train.py", "lkdn-test": "lkdn/test.py",
                **{command: f"scripts/{script}.py" for command, script in SCRIPTS.items()}}


def command_parser(command: str, description: str | None, examples: Sequence[str],
                   **kwargs: object) -> argparse.ArgumentParser:
    """The parser of ``command``: the command's name in the usage line, ``examples`` (command lines) under the
    options, and ``python <script>`` in ``description`` written as the command it is."""
    for name, path in SCRIPT_PATHS.items():
        description = description and description.replace(f"python {path}", name)
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return argparse.ArgumentParser(prog=command, description=description, epilog=epilog, **kwargs)


def old_spellings(parser: argparse.ArgumentParser, argv: Sequence[str],
                  aliases: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` with the old spellings of ``parser``'s options written the current way: ``--snake_case``
    (and ``--snake_case=value``) as ``--snake-case``, and each ``aliases`` key as its value (``--root`` as
    ``--root-path``). An old spelling is accepted on the command line and not shown in ``--help``."""
    known = parser._option_string_actions  # noqa: SLF001 (argparse has no public list of option strings)
    rewritten = []
    for position, token in enumerate(argv):
        if token == "--":  # the rest are positional arguments
            return [*rewritten, *argv[position:]]
        name, equals, value = token.partition("=")
        if name.startswith("--") and name not in known:
            new = (aliases or {}).get(name, name.replace("_", "-"))
            if new in known:
                token = f"{new}{equals}{value}"
        rewritten.append(token)
    return rewritten


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                       aliases: Mapping[str, str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` of ``argv`` (default: the command line) with the old spellings accepted
    (:func:`old_spellings`)."""
    return parser.parse_args(old_spellings(parser, sys.argv[1:] if argv is None else list(argv), aliases))


def train() -> int:
    """``lkdn-train``: :mod:`lkdn.train`."""
    from lkdn.train import main

    return main()


def test() -> int:
    """``lkdn-test``: :mod:`lkdn.test`, clear errors as one ``error: ...`` line (status 1)."""
    from lkdn import test as entry

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
