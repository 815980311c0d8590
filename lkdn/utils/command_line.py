"""The command lines of this project's commands and scripts: one parser maker and one reader.

:func:`command_parser` makes a command's parser (the command's name and examples in its ``--help``)
and :func:`parse_command_line` reads it: options are spelled with hyphens (``--root-path``), and the
old underscore spellings (``--root_path``, ``--force_yml``) are still accepted without being shown.
:data:`SCRIPTS` names the console command of each script (:mod:`lkdn.cli` installs them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

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
