"""The command lines of this project's commands and scripts: one parser maker and one reader.

:func:`command_parser` makes a command's parser (the command's name and examples in its ``--help``)
and :func:`parse_command_line` reads it: options are spelled with hyphens (``--root-path``), and the
old underscore spellings (``--root_path``, ``--force_yml``) are still accepted without being shown.
:func:`parse_train_args` reads the command line of ``lkdn-train`` (here, where the training pipeline and
the command both find it without importing torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

#: how each command was run before it had its own name (shown as the command in the helps)
SCRIPT_PATHS = {"lkdn-train": "lkdn/train.py", "lkdn-test": "lkdn/test.py"}


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


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``lkdn-train`` (BasicSR's, hyphenated, plus ``--root-path``; BasicSR's underscore
    spellings such as ``--auto_resume`` are accepted too)."""
    parser = command_parser(
        "lkdn-train", "Train a super-resolution network from a BasicSR-style YAML file.",
        ["lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml --auto-resume",
         "lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml --force-yml train:total_iter=1000 --root-path runs",
         "torchrun --nproc-per-node=2 lkdn/train.py -opt options/train/LKDN/train_LKDN_x4.yml --launcher pytorch"])
    parser.add_argument("-opt", required=True, help="path to the option YAML file")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                        help="none: one process; pytorch: under torchrun; slurm: under srun")
    parser.add_argument("--auto-resume", action="store_true", help="resume from the latest state of the experiment")
    parser.add_argument("--debug", action="store_true", help="debug_ name prefix, log every iteration, save every 8")
    parser.add_argument("--local-rank", type=int, default=0, help="ignored (torch.distributed.launch)")
    parser.add_argument("--force-yml", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. train:total_iter=1000 datasets:train:batch_size_per_gpu=16")
    parser.add_argument("--root-path", default=None, help="folder of experiments/ and tb_logger/ (default: cwd)")
    return parse_command_line(parser, argv)
