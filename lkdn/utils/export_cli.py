"""What the export scripts share (``scripts/export_onnx.py``, ``export_openvino.py``, ``export_ncnn.py``).

Every export takes ``-opt`` (``network_g`` and ``path.pretrain_network_g``), ``--weights``,
``--output``, ``--check-image`` and ``--threads``; loads and folds the network; compares the
exported file with PyTorch on a random batch and on a check image (Set5's ``baby`` at the
options' scale when Set5 is found, README "Data and weights"); and reports one ``error: ...``
line with exit status 1 for any clear error, having written nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lkdn.export import ExportError
from lkdn.images import read_image
from lkdn.loading import load_network_from_options, weights_file
from lkdn.options import Options, OptionsError, load_options
from lkdn.schema import SchemaError
from lkdn.utils.checkpoint import CheckpointError
from lkdn.utils.command_line import command_parser
from lkdn.utils.files import refuse_overwriting_inputs
from lkdn.utils.logger import setup_logging
from lkdn.zoo import find_benchmark


def default_check_image(scale: int) -> Path | None:
    """Set5's ``baby.png`` LR image at ``scale`` from the reference lookup order (README "Data and weights")."""
    found = find_benchmark("Set5", scale)
    return next((p for p in sorted(found[1].iterdir()) if p.stem.startswith("baby")), None) if found else None


def export_parser(command: str, doc: str, output_help: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``command`` (:func:`lkdn.utils.command_line.command_parser`) with the arguments every export takes; the
    script adds its own."""
    parser = command_parser(command, doc, examples)
    parser.add_argument("-opt", required=True, type=Path, help="YAML options with network_g (and path.pretrain_network_g)")
    parser.add_argument("--weights", type=Path, help="checkpoint (.pth or .safetensors); default path.pretrain_network_g")
    parser.add_argument("--output", required=True, type=Path, help=output_help)
    parser.add_argument("--check-image", type=Path, help="LR image to compare on (default Set5 baby when found)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the runtime")
    return parser


class ExportJob:
    """The loaded, folded network of an export script's arguments, with its check images."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.opt: Options = load_options(args.opt)
        self.scale: int = self.opt.scale
        self.weights: Path = weights_file(self.opt, args.weights)
        self.net = load_network_from_options(self.opt, weights=self.weights)
        image_path = args.check_image or default_check_image(self.scale)
        self.images: list[tuple[str, np.ndarray]] = (
            [(image_path.name, read_image(image_path))] if image_path is not None else []
        )
        if not self.images:
            print("note: no check image (Set5 not found); checking on a random input only", file=sys.stderr)  # noqa: T201


def refuse_overwriting(args: argparse.Namespace, also_writes: Sequence[str] = (), weights: Path | None = None) -> None:
    """An :class:`~lkdn.utils.files.OutputIsInputError` when ``--output`` (or its companion files of the
    suffixes ``also_writes``: the ``.bin`` beside an IR) is ``-opt``, the weights or ``--check-image``."""
    outputs = [("--output", args.output), *((f"the {s} file of --output", args.output.with_suffix(s)) for s in also_writes)]
    inputs = [("-opt", args.opt), ("--weights", args.weights), ("--check-image", args.check_image)]
    if weights is not None and args.weights is None:
        inputs.append(("path.pretrain_network_g", weights))
    refuse_overwriting_inputs(outputs, inputs)


def run_export(
    args: argparse.Namespace, export: Callable[[ExportJob], Any], *,
    check: Callable[[argparse.Namespace], None] | None = None, errors: tuple[type, ...] = (),
    also_writes: Sequence[str] = (),
) -> int:
    """``check(args)``, load the network, ``export(job)`` and print its report.

    No file written (``--output`` and its companions of the suffixes ``also_writes``) may be an
    input (``-opt``, the weights, ``--check-image``). Returns 0, or 1 after one ``error: ...``
    line for a clear error (``errors`` adds the script's own kinds to those of loading and exporting).
    """
    setup_logging()
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be a positive number of CPU threads, got {args.threads}", file=sys.stderr)  # noqa: T201
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        refuse_overwriting(args, also_writes)
        if check is not None:
            check(args)
        job = ExportJob(args)
        refuse_overwriting(args, also_writes, job.weights)
        report = export(job)
    except (*errors, ExportError, OptionsError, SchemaError, CheckpointError, ValueError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 (a command's output)
        return 1
    print(report.summary())  # noqa: T201 (a command's output)
    return 0
