"""Make a benchmark pair from HR images: mod-cropped HR (GTmod<s>) and its bicubic LR (LRbicx<s>).

    lkdn-make-lr --input datasets/Set14/original \\
        --output-hr datasets/Set14/GTmod4 --output-lr datasets/Set14/LRbicx4 --scale 4

Each HR image is cropped to a multiple of the scale (bottom and right rows/columns removed, as
``basicsr.data.transforms.mod_crop``), then downscaled:

* ``--method matlab`` (default): ``basicsr.utils.matlab_functions.imresize`` on the image in
  [0, 1], MATLAB's antialiased bicubic, rounded to the input's integer type as MATLAB does.
  This is the protocol of every published SR table.
* ``--method cv2``: OpenCV ``INTER_CUBIC`` (no antialiasing). The LR images, and so the PSNR/SSIM,
  differ from the published protocol: the numbers are NOT comparable with papers.

Outputs are PNG (lossless) named after the input stems; grey images stay grey, 16-bit stays
16-bit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lkdn.utils import command, command_parser, parse_command_line, refuse_overwriting_inputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CV2_WARNING = (
    "warning: --method cv2 uses OpenCV INTER_CUBIC (no antialiasing); the LR images differ from MATLAB's "
    "bicubic and PSNR/SSIM on them are not comparable with published numbers"
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-make-lr", __doc__.splitlines()[0],
        ["lkdn-make-lr --input datasets/Set14/original --output-hr datasets/Set14/GTmod4 --output-lr datasets/Set14/LRbicx4 --scale 4"])
    parser.add_argument("--input", required=True, help="folder of HR images")
    parser.add_argument("--output-hr", required=True, help="folder for the mod-cropped HR images (GTmod<s>)")
    parser.add_argument("--output-lr", required=True, help="folder for the LR images (LRbicx<s>)")
    parser.add_argument("--scale", type=int, required=True, help="downscaling factor (2, 3, 4, ...)")
    parser.add_argument("--method", choices=("matlab", "cv2"), default="matlab", help="bicubic implementation")
    return parse_command_line(parser, argv)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-make-lr``: 0, 1 when some image failed (each named), 2 after one ``error: ...`` line for bad arguments."""
    args = parse_args(argv)  # parsed before torch and OpenCV are imported, so --help is fast
    if args.scale < 1:
        print(f"error: --scale must be a positive integer, got {args.scale}", file=sys.stderr)
        return 2
    source = Path(args.input)
    if not source.is_dir():
        print(f"error: --input: folder not found: {source}", file=sys.stderr)
        return 2
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"error: --input: no images in {source}", file=sys.stderr)
        return 2
    if args.method == "cv2":
        print(CV2_WARNING, file=sys.stderr)
    out_hr, out_lr = Path(args.output_hr), Path(args.output_lr)
    try:  # mod-cropped or downscaled images written over their sources
        refuse_overwriting_inputs([("--output-hr", out_hr), ("--output-lr", out_lr)], [("--input", source)])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import cv2
    from tqdm import tqdm

    from lkdn.images import read_image_unchanged
    from lkdn.resize import downscale, mod_crop

    out_hr.mkdir(parents=True, exist_ok=True)
    out_lr.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in tqdm(files, desc=f"x{args.scale} {args.method}", unit="image", dynamic_ncols=True):
        try:
            image = read_image_unchanged(path)  # a ValueError naming the file: unreadable, truncated, too large
            hr = mod_crop(image, args.scale)
            if hr.size == 0:
                raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels is smaller than the scale "
                                 f"{args.scale}: no LR pixel is left")
            lr = downscale(hr, args.scale, method=args.method)
        except ValueError as error:
            message = " ".join(str(error).split())  # one line per file (OpenCV's messages end in a newline)
            failures.append(message if str(path) in message else f"{path}: {message}")
            continue
        cv2.imwrite(str(out_hr / f"{path.stem}.png"), hr)
        cv2.imwrite(str(out_lr / f"{path.stem}.png"), lr)
    print(f"{len(files) - len(failures)} of {len(files)} image(s): HR -> {out_hr}, LR -> {out_lr}")
    if failures:
        print("failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0

