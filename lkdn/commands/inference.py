"""Super-resolve your own images (no ground truth) with a network described by a test YAML.

    lkdn-infer -opt options/test/LKDN/test_LKDN_x4.yml --input photos/ --output results/photos_x4
    lkdn-infer -opt options/test/LKDN/test_LKDN_x4.yml --input big.png --output out/ --tile 256
    lkdn-infer -opt options/test/LKDN/test_LKDN_x4.yml --input photos/ --output out/ --backend auto
    lkdn-infer --model LKDN_x4.onnx --input photos/ --output out/      # or .xml (OpenVINO), .param (ncnn)

``-opt`` supplies ``network_g``, the weights (``path.pretrain_network_g``, ``param_key_g``,
``strict_load_g``; ``--weights`` overrides the file), ``num_gpu`` and the defaults of
``val.tile`` and ``val.self_ensemble``. ``--model`` runs an exported file instead (``.onnx`` with
onnxruntime, an OpenVINO ``.xml``, an ncnn ``.param``; :class:`lkdn.backends.files.ExportedModel`):
its scale is measured and checked against the one the file records and ``--scale``. Every image is
written as ``<output>/<stem>.png``:
colour stays colour, grey stays grey (the network sees it replicated to three channels), 16-bit
stays 16-bit, and an alpha channel is upscaled bicubically and re-attached (``--alpha error``
refuses such images instead). Unreadable files are reported by name and skipped; the exit
status is 1 when any file failed, 2 for bad arguments or options. Nothing is written over an
input: an ``--output`` that is the input folder (or would replace an input image, ``-opt`` or
``--weights``) and two inputs of one stem (``x.png``, ``x.jpg``) are refused before any work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lkdn.commands import BACKENDS, EXPORTED_SUFFIXES
from lkdn.errors import CommandError, LkdnError
from lkdn.utils import command, command_parser, parse_command_line, refuse_overwriting_inputs, setup_logging

if TYPE_CHECKING:
    from lkdn.backends.files import ExportedModel
    from lkdn.upscaler import Upscaler


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-infer", __doc__.splitlines()[0],
        ["lkdn-infer -opt options/test/LKDN/test_LKDN_x4.yml --input photos/ --output results/photos_x4",
         "lkdn-infer -opt options/test/LKDN/test_LKDN_x4.yml --input big.png --output out/ --tile 256 --self-ensemble",
         "lkdn-infer --model LKDN_x4.onnx --input photos/ --output out/"])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("-opt", help="test option YAML (network_g and path.pretrain_network_g)")
    model.add_argument("--model", default=None,
                       help=f"an exported file to run instead: {', '.join(f'{s} ({b})' for s, b in EXPORTED_SUFFIXES.items())}")
    parser.add_argument("--scale", type=int, default=None,
                        help="with --model: the expected scale (default: the file's; a mismatch is an error)")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output", required=True, help="folder for the results (<stem>.png)")
    parser.add_argument("--weights", default=None, help="checkpoint to load instead of path.pretrain_network_g")
    parser.add_argument("--tile", type=int, default=None, help="tile size in LR pixels (default: val.tile.size, or none)")
    parser.add_argument(
        "--tile-pad", type=int, default=None,
        help="context around each tile in LR pixels (default: val.tile.pad, or the network's receptive radius)",
    )
    parser.add_argument("--self-ensemble", action="store_true", help="x8 geometric self-ensemble (8x the time)")
    parser.add_argument("--alpha", choices=("bicubic", "error"), default="bicubic", help="what to do with an alpha channel")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: from num_gpu; CUDA when present)")
    parser.add_argument(
        "--backend", default=None, choices=(*BACKENDS, "auto"),
        help="inference runtime (default torch); onnxruntime, openvino, ncnn run the folded network on the CPU, "
             "verified against PyTorch when built; auto: the fastest of those installed, chosen and timed on the "
             "first image (logged; docs/deployment.md). With --model: the file's own runtime",
    )
    parser.add_argument("--force-yml", nargs="+", default=[], metavar="KEY=VALUE", help="override options")
    return parse_command_line(parser, argv)


def list_inputs(path: Path) -> list[Path]:
    """The image files to process: ``path`` itself, or the images directly inside the folder."""
    from lkdn.images import IMAGE_SUFFIXES

    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    raise FileNotFoundError(f"--input: no such file or folder: {path}")


def result_paths(inputs: Sequence[Path], output: Path) -> list[Path]:
    """``<output>/<stem>.png`` for each input; a ValueError when two inputs share a stem (``x.png``, ``x.jpg``)."""
    targets: dict[Path, Path] = {}
    for path in inputs:
        target = output / f"{path.stem}.png"
        if target in targets:
            raise ValueError(f"{targets[target]} and {path} would both be written as {target}; rename one of them")
        targets[target] = path
    return list(targets)


def build_exported(args: argparse.Namespace) -> ExportedModel:
    """``--model FILE``: the exported file in its own runtime; options of the YAML route are refused."""
    from lkdn.backends.files import ExportedModel, backend_of
    from lkdn.upscaler import resolve_device

    runtime = backend_of(args.model)
    if args.backend not in (None, "auto", runtime):
        raise ValueError(f"--backend {args.backend} cannot run {args.model} (a file for {runtime}); leave --backend out")
    for flag, value in (("--weights", args.weights), ("--force-yml", args.force_yml)):
        if value:
            raise ValueError(f"{flag} belongs to -opt; --model {args.model} is a complete exported model")
    if args.device and resolve_device(args.device).type != "cpu":
        raise ValueError(f"--model {args.model} runs on the CPU, not {args.device}")
    if args.scale is not None and args.scale < 1:
        raise ValueError(f"--scale must be a positive integer, got {args.scale}")
    for name, value in (("--tile", args.tile), ("--tile-pad", args.tile_pad)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be a non-negative number of LR pixels, got {value}")
    return ExportedModel(args.model, scale=args.scale, tile=args.tile, tile_pad=args.tile_pad,
                         self_ensemble=args.self_ensemble)


def build_upscaler(args: argparse.Namespace) -> Upscaler | ExportedModel:
    """``--model``'s exported file, or the :class:`~lkdn.upscaler.Upscaler` of ``-opt`` and the flags."""
    from lkdn.options import parse_options
    from lkdn.upscaler import Upscaler

    if args.model is not None:
        return build_exported(args)
    if args.scale is not None:
        raise CommandError("--scale is for --model; with -opt the scale is the options' scale")
    args.backend = args.backend or "torch"
    opt = parse_options(args.opt, is_train=False, overrides=args.force_yml)
    for name, value in (("--tile", args.tile), ("--tile-pad", args.tile_pad)):
        if value is not None and value < 0:
            raise CommandError(f"{name} must be a non-negative number of LR pixels, got {value}")
    return Upscaler.from_options(opt, weights=args.weights, device=args.device or None, tile=args.tile,
                                 tile_pad=args.tile_pad, self_ensemble=True if args.self_ensemble else None,
                                 backend=args.backend)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-infer``: 0, 1 when some image failed (each named), 2 after one ``error: ...`` line for bad
    arguments, options or weights."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    from tqdm import tqdm

    from lkdn.backends import BackendError
    from lkdn.images import InferenceMemoryError, read_image_unchanged, write_image

    setup_logging()  # the backends' verification and auto's choice, with its measured times
    try:
        inputs = list_inputs(Path(args.input))
        output = Path(args.output)
        targets = result_paths(inputs, output)
        refuse_overwriting_inputs(
            [("--output folder", output), *((f"result {t.name}", t) for t in targets)],
            [("--input", args.input), *(("input image", p) for p in inputs), ("-opt", args.opt), ("--weights", args.weights),
             ("--model", args.model)],
        )
        upscaler = build_upscaler(args)
        output.mkdir(parents=True, exist_ok=True)
    except (LkdnError, FileNotFoundError, ValueError) as error:  # bad arguments, options or weights: status 2
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot create the output folder {args.output} ({error.strerror or error})", file=sys.stderr)
        return 2
    failures = []
    for path, target in tqdm(list(zip(inputs, targets, strict=True)), desc="Super-resolve", unit="image", dynamic_ncols=True):
        try:
            result = upscaler.upscale_image(read_image_unchanged(path), alpha=args.alpha)
            write_image(target, result)
        except (ValueError, InferenceMemoryError, BackendError) as error:
            failures.append(f"{path}: {error}")
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
        except OSError as error:
            failures.append(f"{path}: could not write {target} ({error.strerror or error})")
            tqdm.write(f"error: could not write {target} ({error.strerror or error})", file=sys.stderr)
    print(f"{len(inputs) - len(failures)} of {len(inputs)} image(s) written to {output}")
    if failures:
        print("failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0

