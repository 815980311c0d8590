"""What the export commands share (``lkdn-export-onnx``, ``lkdn-export-openvino``, ``lkdn-export-ncnn``).

Every export takes ``-opt`` (``network_g`` and ``path.pretrain_network_g``), ``--weights``,
``--output``, ``--check-image`` and ``--threads``; loads and folds the network; compares the
exported file with PyTorch on a random batch and on a check image (Set5's ``baby`` at the
options' scale when Set5 is found, README "Data and weights"); and reports one ``error: ...``
line with exit status 1 for any clear error, having written nothing (:func:`lkdn.utils.run`).
Building the parser imports no torch; the rest imports it when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lkdn.errors import CommandError
from lkdn.utils import command_parser, refuse_overwriting_inputs, setup_logging
from lkdn.zoo import find_benchmark

if TYPE_CHECKING:
    import numpy as np

    from lkdn.options import Options

#: the ONNX opset of ``lkdn-export-onnx`` by default, as :data:`lkdn.export.DEFAULT_OPSET` (a test checks they agree)
DEFAULT_OPSET = 17

#: the errors of the export commands that are builtin, with messages of their own (a runtime that is missing)
EXPORT_ERRORS = (ValueError, ImportError, OSError)


def default_check_image(scale: int) -> Path | None:
    """Set5's ``baby.png`` LR image at ``scale`` from the reference lookup order (README "Data and weights")."""
    found = find_benchmark("Set5", scale)
    return next((p for p in sorted(found[1].iterdir()) if p.stem.startswith("baby")), None) if found else None


def export_parser(command: str, doc: str, output_help: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``command`` (:func:`lkdn.utils.command_parser`) with the arguments every export takes; the
    command adds its own."""
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
        from lkdn.images import read_image
        from lkdn.loading import load_network_from_options, weights_file
        from lkdn.options import load_options

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
    """An :class:`~lkdn.utils.OutputIsInputError` when ``--output`` (or its companion files of the
    suffixes ``also_writes``: the ``.bin`` beside an IR) is ``-opt``, the weights or ``--check-image``."""
    outputs = [("--output", args.output), *((f"the {s} file of --output", args.output.with_suffix(s)) for s in also_writes)]
    inputs = [("-opt", args.opt), ("--weights", args.weights), ("--check-image", args.check_image)]
    if weights is not None and args.weights is None:
        inputs.append(("path.pretrain_network_g", weights))
    refuse_overwriting_inputs(outputs, inputs)


def run_export(
    args: argparse.Namespace, export: Callable[[ExportJob], Any], *,
    check: Callable[[argparse.Namespace], None] | None = None, also_writes: Sequence[str] = (),
) -> int:
    """``check(args)``, load the network, ``export(job)`` and print its report; return 0.

    No file written (``--output`` and its companions of the suffixes ``also_writes``) may be an
    input (``-opt``, the weights, ``--check-image``). A clear error is raised before anything is
    written (the command prints it as one ``error: ...`` line, status 1).
    """
    setup_logging()
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be a positive number of CPU threads, got {args.threads}")
    refuse_overwriting(args, also_writes)
    if check is not None:
        check(args)
    import torch  # after the checks of the command line

    if args.threads:
        torch.set_num_threads(args.threads)
    job = ExportJob(args)
    refuse_overwriting(args, also_writes, job.weights)
    report = export(job)
    print(report.summary())  # noqa: T201 (a command's output)
    return 0
