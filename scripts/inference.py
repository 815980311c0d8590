"""Super-resolve your own images (no ground truth) with a network described by a test YAML.

    python scripts/inference.py -opt options/test/LKDN/test_LKDN_x4.yml --input photos/ --output results/photos_x4
    python scripts/inference.py -opt options/test/LKDN/test_LKDN_x4.yml --input big.png --output out/ --tile 256

``-opt`` supplies ``network_g``, the weights (``path.pretrain_network_g``, ``param_key_g``,
``strict_load_g``; ``--weights`` overrides the file), ``num_gpu`` and the defaults of
``val.tile`` and ``val.self_ensemble``. Every image is written as ``<output>/<stem>.png``:
colour stays colour, grey stays grey (the network sees it replicated to three channels), 16-bit
stays 16-bit, and an alpha channel is upscaled bicubically and re-attached (``--alpha error``
refuses such images instead). Unreadable files are reported by name and skipped; the exit
status is 1 when any file failed, 2 for bad arguments or options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lkdn.evaluate import IMAGE_SUFFIXES
from lkdn.inference import load_model, tile_options, upscale_image
from lkdn.options import OptionsError, device_of, parse_options
from lkdn.upscaler import Upscaler
from lkdn.utils.checkpoint import CheckpointError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-opt", required=True, help="test option YAML (network_g and path.pretrain_network_g)")
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
    parser.add_argument("--force_yml", nargs="+", default=[], metavar="KEY=VALUE", help="override options")
    return parser.parse_args(argv)


def list_inputs(path: Path) -> list[Path]:
    """The image files to process: ``path`` itself, or the images directly inside the folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return files
    raise FileNotFoundError(f"--input: no such file or folder: {path}")


def read_any(path: Path) -> np.ndarray:
    """Read an image unchanged (bit depth, grey, alpha kept); a ValueError names the file."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path} (empty, corrupt or not an image OpenCV can decode)")
    return image


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        opt = parse_options(args.opt, is_train=False, overrides=args.force_yml)
        device = torch.device(args.device) if args.device else device_of(opt)
        inputs = list_inputs(Path(args.input))
        val = opt.get("val") or {}
        tile, tile_pad = tile_options(val)
        net = load_model(opt, weights=args.weights, device=device)
        upscaler = Upscaler(net, device=device, optimize=bool(val.get("optimize", True)))
    except (OptionsError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tile = args.tile if args.tile is not None else tile
    tile_pad = args.tile_pad if args.tile_pad is not None else tile_pad
    self_ensemble = args.self_ensemble or bool(val.get("self_ensemble", False))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in tqdm(inputs, desc="Super-resolve", unit="image", dynamic_ncols=True):
        try:
            image = read_any(path)
            result = upscale_image(
                upscaler, image, device=device, tile=tile or None,
                tile_pad=upscaler.tile_pad if tile_pad is None else tile_pad, self_ensemble=self_ensemble,
                alpha=args.alpha,
            )
        except ValueError as error:
            failures.append(f"{path}: {error}")
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
            continue
        target = output / f"{path.stem}.png"
        if not cv2.imwrite(str(target), result):
            failures.append(f"{path}: could not write {target}")
            tqdm.write(f"error: could not write {target}", file=sys.stderr)
    print(f"{len(inputs) - len(failures)} of {len(inputs)} image(s) written to {output}")
    if failures:
        print("failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
