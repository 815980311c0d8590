"""Side-by-side crops: bicubic | SR result(s) | HR, with PSNR/SSIM (Y channel) in the titles.

    lkdn-compare-images --hr datasets/Set5/GTmod4 --lr datasets/Set5/LRbicx4 --scale 4 \
        --sr LKDN=results/test_LKDN_x4/visualization/Set5 --images baby bird --output compare.png \
        [--crop 96] [--pick detail|gain] [--at X,Y]

SR images are found by stem: ``<stem>.png`` or ``<stem>_<suffix>.png`` (what ``lkdn/test.py``
writes). The crop (HR pixels) is where the HR image has the most detail (``--pick detail``, the
default), or where the first SR column gains most over bicubic (``--pick gain``: the largest
drop of squared error on the Y channel, so the gain is one the eye can see; the crop's own PSNR
of every column is then shown, and the row says "largest-gain crop" with the crop's gain, or,
when the SR image is below bicubic everywhere, "below bicubic everywhere: least-loss crop"), or at the top-left corner
``--at X,Y``. The PSNR/SSIM in the titles are over the whole image, Y channel,
``crop_border = scale``, as in the benchmark tables. Without ``--crop`` the crop is 96 pixels, or
the whole HR image when it is smaller; a ``--crop`` larger than an HR image is an error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lkdn.utils import command, command_parser, parse_command_line, refuse_overwriting_inputs

if TYPE_CHECKING:
    import numpy as np

DEFAULT_CROP = 96
"""The crop size (HR pixels) without ``--crop``, or the whole HR image when it is smaller."""


def _fitting_scale(hr: np.ndarray, lr: np.ndarray) -> str:
    """``"; their sizes fit --scale N"`` when the HR image is a whole multiple N of the LR one, else ``""``."""
    ratio, rest = divmod(hr.shape[0], lr.shape[0])
    fits = ratio >= 1 and not rest and hr.shape[1] == lr.shape[1] * ratio
    return f"; their sizes fit --scale {ratio}" if fits else ""


def find_image(folder: Path, stem: str) -> Path:
    """``folder/<stem>.*`` or ``folder/<stem>_<suffix>.*``; a FileNotFoundError names both."""
    from lkdn.images import IMAGE_SUFFIXES

    candidates = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    for path in candidates:
        if path.stem == stem:
            return path
    for path in candidates:
        if path.stem.startswith(f"{stem}_"):
            return path
    raise FileNotFoundError(f"no image named {stem}.* or {stem}_*.* in {folder}")


def detail_crop(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most gradient energy."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(hr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    window = cv2.boxFilter(energy, -1, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT)
    half = size // 2
    h, w = grey.shape
    valid = window[half : max(h - half, half + 1), half : max(w - half, half + 1)]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(x), int(y)


def _y(image: np.ndarray) -> np.ndarray:
    """The Y channel (BT.601, as the benchmark metrics) of a uint8 BGR image, float64 in [16, 235]."""
    import numpy as np
    from basicsr.utils import bgr2ycbcr

    return bgr2ycbcr(image.astype(np.float32) / 255.0, y_only=True).astype(np.float64) * 255.0


def gain_crop(hr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, size: int, border: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window (inside ``border``) where ``sr`` removes the most
    squared Y error of ``bicubic``."""
    import cv2
    import numpy as np

    y_hr = _y(hr)
    reduction = (_y(bicubic) - y_hr) ** 2 - (_y(sr) - y_hr) ** 2
    window = cv2.boxFilter(reduction, -1, (size, size), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
    h, w = y_hr.shape
    top, left = min(border, max(h - size, 0)), min(border, max(w - size, 0))
    valid = window[top: max(h - size - border, top) + 1, left: max(w - size - border, left) + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(x) + left, int(y) + top


def crop_psnr(image: np.ndarray, hr: np.ndarray) -> float:
    """PSNR (Y channel) of two crops."""
    import numpy as np

    mse = float(np.mean((_y(image) - _y(hr)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def compare_images(
    *, hr_dir: Path, lr_dir: Path, sr_dirs: dict[str, Path], stems: Sequence[str], scale: int, output: Path,
    crop: int | None = None, at: tuple[int, int] | None = None, pick: str = "detail",
) -> dict[str, dict[str, dict[str, float]]]:
    """Write the comparison PNG; returns ``{stem: {column: {'psnr', 'ssim'}}}`` (with ``crop_psnr`` for
    ``pick="gain"``, and the crop's corner under ``"crop"``)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lkdn.evaluate import image_metrics
    from lkdn.images import read_image
    from lkdn.resize import bicubic_resize

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"--scale: expected a positive integer (the upscaling factor), got {scale!r}")
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
        raise ValueError(f"--crop: expected a positive number of HR pixels, got {crop!r}")
    if pick not in ("detail", "gain"):
        raise ValueError(f"--pick: expected detail or gain, got {pick!r}")
    if pick == "gain" and not sr_dirs:
        raise ValueError("--pick gain needs an SR column (--sr LABEL=FOLDER)")
    columns = ["Bicubic", *sr_dirs, "HR"]
    fig, axes = plt.subplots(len(stems), len(columns), figsize=(2.6 * len(columns), 3.1 * len(stems)), squeeze=False,
                             layout="constrained")  # titles of one row never run into the images of the row above
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for row, stem in enumerate(stems):
        hr = read_image(find_image(hr_dir, stem))
        lr = read_image(find_image(lr_dir, stem))
        if hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
            raise ValueError(
                f"--scale {scale} does not fit {stem}: the HR image is {hr.shape[1]}x{hr.shape[0]} and the LR "
                f"{lr.shape[1]}x{lr.shape[0]} pixels (x{scale} would make {lr.shape[1] * scale}x{lr.shape[0] * scale})"
                + _fitting_scale(hr, lr))
        if crop is not None and crop > min(hr.shape[:2]):
            raise ValueError(f"--crop {crop} is larger than the HR image {stem} ({hr.shape[1]}x{hr.shape[0]} pixels): "
                             f"use --crop {min(hr.shape[:2])} or less")
        images = {"Bicubic": bicubic_resize(lr, scale)}
        images |= {label: read_image(find_image(folder, stem)) for label, folder in sr_dirs.items()}
        scores[stem] = {}
        for label, image in images.items():
            if image.shape != hr.shape:
                raise ValueError(f"{label} image for {stem} is {image.shape[:2]}, HR is {hr.shape[:2]}")
            scores[stem][label] = image_metrics(image, hr, crop_border=scale)
        images["HR"] = hr
        size = min(DEFAULT_CROP if crop is None else crop, *hr.shape[:2])
        if at is not None:
            x, y = at
        elif pick == "gain":
            x, y = gain_crop(hr, images["Bicubic"], images[next(iter(sr_dirs))], size, scale)
        else:
            x, y = detail_crop(hr, size)
        x, y = min(max(x, 0), hr.shape[1] - size), min(max(y, 0), hr.shape[0] - size)
        scores[stem]["crop"] = {"x": x, "y": y, "size": size}
        for col, label in enumerate(columns):
            ax = axes[row][col]
            patch = images[label][y : y + size, x : x + size]
            ax.imshow(cv2.cvtColor(patch, cv2.COLOR_BGR2RGB), interpolation="nearest")
            title = label if label == "HR" else f"{label}\n{scores[stem][label]['psnr']:.2f} dB / {scores[stem][label]['ssim']:.4f}"
            if pick == "gain" and label != "HR":
                scores[stem][label]["crop_psnr"] = crop_psnr(patch, hr[y : y + size, x : x + size])
                title += f"\ncrop {scores[stem][label]['crop_psnr']:.2f} dB"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        label = stem
        if pick == "gain" and at is None:
            first = next(iter(sr_dirs))
            gain = scores[stem][first]["crop_psnr"] - scores[stem]["Bicubic"]["crop_psnr"]
            label += (f"\nlargest-gain crop ({gain:+.2f} dB)" if gain > 0 else
                      f"\n{first} below bicubic everywhere:\nleast-loss crop ({gain:+.2f} dB)")
        axes[row][0].set_ylabel(label, fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return scores


def parse_sr(entries: Sequence[str]) -> dict[str, Path]:
    result = {}
    for entry in entries:
        label, sep, folder = entry.partition("=")
        if not sep or not label or not folder:
            raise ValueError(f"--sr {entry!r}: expected LABEL=FOLDER")
        result[label] = Path(folder)
    return result


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-compare-images``: 0, or 2 after one ``error: ...`` line (a missing image, a bad size or crop)."""
    parser = command_parser(
        "lkdn-compare-images", __doc__,
        ["lkdn-compare-images --hr datasets/Set5/GTmod4 --lr datasets/Set5/LRbicx4 --scale 4 --sr LKDN=results/test_LKDN_x4/visualization/Set5 --images baby bird --output compare.png"])
    parser.add_argument("--hr", type=Path, required=True, help="HR (ground truth) folder")
    parser.add_argument("--lr", type=Path, required=True, help="LR folder (bicubic column is made from it)")
    parser.add_argument("--sr", nargs="+", default=[], help="LABEL=FOLDER of SR images, one or more")
    parser.add_argument("--images", nargs="+", required=True, help="image stems, e.g. baby bird")
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--crop", type=int, default=None,
                        help=f"crop size in HR pixels (default {DEFAULT_CROP}, or the whole image when smaller)")
    parser.add_argument("--pick", default="detail", choices=("detail", "gain"),
                        help="crop where the HR has most detail (default) or where the first SR gains most over bicubic")
    parser.add_argument("--at", help="top-left corner X,Y of the crop (overrides --pick)")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parse_command_line(parser, argv)  # parsed before numpy and torch are imported, so --help is fast
    try:
        at = tuple(int(v) for v in args.at.split(",")) if args.at else None
        sr_dirs = parse_sr(args.sr)
        refuse_overwriting_inputs({"--output": args.output}, [
            (f"{label} image", path) for label, folder in (("--hr", args.hr), ("--lr", args.lr), *sr_dirs.items())
            if folder.is_dir() for path in folder.iterdir()
        ])
        scores = compare_images(
            hr_dir=args.hr, lr_dir=args.lr, sr_dirs=sr_dirs, stems=args.images, scale=args.scale,
            output=args.output, crop=args.crop, at=at, pick=args.pick,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for stem, row in scores.items():
        cells = (f"{k} {v['psnr']:.2f} dB" + (f" (crop {v['crop_psnr']:.2f} dB)" if "crop_psnr" in v else "")
                 for k, v in row.items() if k != "crop")
        print(f"{stem}: " + ", ".join(cells) + f"; crop at {row['crop']['x']},{row['crop']['y']}")
    print(f"wrote {args.output}")
    return 0

