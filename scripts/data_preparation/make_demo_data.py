"""Build the demo's small dataset from photographs bundled with scikit-image (no download).

Deterministic: the same images, crops and MATLAB-bicubic LR on every machine.

    python scripts/data_preparation/make_demo_data.py [--root datasets/demo] [--scale 4]

Writes ``<root>/train/{GTmod<s>,LRbicx<s>}`` (the training photographs cut into 128x128 HR
tiles, so a random training patch decodes a small file) and ``<root>/test/{GTmod<s>,LRbicx<s>}``
(whole held-out photographs, mod-cropped, never seen in training).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from lkdn.resize import downscale, mod_crop

# scikit-image's bundled colour photographs (grey textures are stacked to 3 channels).
TRAIN_IMAGES = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle", "brick", "gravel")
TEST_IMAGES = ("coffee", "chelsea")
TILE = 128  # HR pixels, rounded down to a multiple of the scale


def load(name: str) -> np.ndarray:
    """A bundled image as uint8 BGR (OpenCV's order, what the datasets read)."""
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)


def tiles(image: np.ndarray, name: str, size: int = TILE) -> dict[str, np.ndarray]:
    """Non-overlapping ``size`` x ``size`` pieces of ``image``, named ``<name>_<row>_<col>``."""
    height, width = image.shape[:2]
    return {
        f"{name}_{y // size:02d}_{x // size:02d}": image[y : y + size, x : x + size]
        for y in range(0, height - size + 1, size)
        for x in range(0, width - size + 1, size)
    }


def make_demo_data(root: Path, *, scale: int = 4) -> dict[str, list[str]]:
    """Write the train and test splits; returns the image names of each split."""
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 < scale <= 8:
        raise ValueError(f"--scale must be an integer from 2 to 8, got {scale!r}")
    splits = {"train": TRAIN_IMAGES, "test": TEST_IMAGES}
    for split, names in splits.items():
        hr_dir, lr_dir = root / split / f"GTmod{scale}", root / split / f"LRbicx{scale}"
        hr_dir.mkdir(parents=True, exist_ok=True)
        lr_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            image = mod_crop(load(name), scale)
            pieces = tiles(image, name, TILE - TILE % scale) if split == "train" else {name: image}
            for stem, hr in pieces.items():
                if not cv2.imwrite(str(hr_dir / f"{stem}.png"), hr) or not cv2.imwrite(
                    str(lr_dir / f"{stem}.png"), downscale(hr, scale)
                ):
                    raise OSError(f"cannot write images under {root / split}")
    return {split: list(names) for split, names in splits.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("datasets/demo"))
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        splits = make_demo_data(args.root, scale=args.scale)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, names in splits.items():
        count = len(list((args.root / split / f"GTmod{args.scale}").glob("*.png")))
        print(f"{split}: {count} images from {', '.join(names)} in {args.root / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
