"""Build the demo's small dataset from photographs bundled with scikit-image (no download).

Deterministic: the same images, crops and MATLAB-bicubic LR on every machine.

    python scripts/data_preparation/make_demo_data.py [--root datasets/demo] [--scale 4]

Writes ``<root>/train/{GTmod<s>,LRbicx<s>}`` (training photographs, mod-cropped) and
``<root>/test/{GTmod<s>,LRbicx<s>}`` (held-out photographs never seen in training).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from skimage import data

import lkdn  # noqa: F401 (basicsr's torchvision alias before lkdn.resize imports basicsr)
from lkdn.resize import downscale, mod_crop

# scikit-image's bundled colour photographs (grey textures are stacked to 3 channels).
TRAIN_IMAGES = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle", "brick", "gravel")
TEST_IMAGES = ("coffee", "chelsea")


def load(name: str) -> np.ndarray:
    """A bundled image as uint8 BGR (OpenCV's order, what the datasets read)."""
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)


def make_demo_data(root: Path, *, scale: int = 4) -> dict[str, list[str]]:
    """Write the train and test splits; returns the image names of each split."""
    splits = {"train": TRAIN_IMAGES, "test": TEST_IMAGES}
    for split, names in splits.items():
        hr_dir, lr_dir = root / split / f"GTmod{scale}", root / split / f"LRbicx{scale}"
        hr_dir.mkdir(parents=True, exist_ok=True)
        lr_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            hr = mod_crop(load(name), scale)
            if not cv2.imwrite(str(hr_dir / f"{name}.png"), hr) or not cv2.imwrite(
                str(lr_dir / f"{name}.png"), downscale(hr, scale)
            ):
                raise OSError(f"cannot write images under {root / split}")
    return {split: list(names) for split, names in splits.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("datasets/demo"))
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    splits = make_demo_data(args.root, scale=args.scale)
    for split, names in splits.items():
        print(f"{split}: {len(names)} images ({', '.join(names)}) in {args.root / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
