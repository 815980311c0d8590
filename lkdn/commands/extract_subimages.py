"""Crop large training images into overlapping sub-images for faster loading (BasicSR's recipe).

HR images are cut into 480x480 crops every 240 pixels; the LR images of scale s into
(480/s)x(480/s) crops every 240/s pixels, so the crop number k of an HR image and of its LR
image cover the same area. Crops are named ``<image>_s<k:03d>.png``; an LR suffix ``x<s>``
after digits (DIV2K's ``0001x4.png``) is removed so HR and LR crops share names. At the right and bottom
borders one more crop flush with the border is added when more than ``--thresh-size`` pixels
would otherwise be left out.

One folder::

    lkdn-extract-subimages --input datasets/DF2K/DF2K_train_HR \\
        --output datasets/DF2K/DF2K_train_HR_sub --crop-size 480 --step 240

The whole DF2K (or DIV2K) set, HR and LR x2, x3, x4 (folders ``<root>/<name>_train_HR`` and
``<root>/<name>_train_LR_bicubic/X<s>``, as the datasets are distributed)::

    lkdn-extract-subimages --dataset DF2K --root datasets/DF2K --scales 2 3 4
"""

from __future__ import annotations

import re
import sys
from multiprocessing import Pool
from pathlib import Path

from lkdn.utils import command, command_parser, parse_command_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HR_CROP, HR_STEP = 480, 240


def crop_positions(length: int, crop_size: int, step: int, thresh_size: int) -> list[int]:
    """Top (or left) offsets of the crops along one side of ``length`` pixels."""
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def image_stem(path: Path) -> str:
    """The image name without the scale suffix of DIV2K/Flickr2K LR names (``0001x4`` -> ``0001``)."""
    return re.sub(r"(?<=\d)x\d+$", "", path.stem)


def crop_image(path: Path, output: Path, crop_size: int, step: int, thresh_size: int, compression: int) -> int:
    """Write the crops of one image; returns how many were written."""
    import cv2
    import numpy as np

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    h, w = img.shape[:2]
    count = 0
    for top in crop_positions(h, crop_size, step, thresh_size):
        for left in crop_positions(w, crop_size, step, thresh_size):
            count += 1
            crop = np.ascontiguousarray(img[top:top + crop_size, left:left + crop_size, ...])
            target = output / f"{image_stem(path)}_s{count:03d}{path.suffix}"
            if not cv2.imwrite(str(target), crop, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
                raise OSError(f"cannot write {target}")
    return count


def _work(job: tuple[Path, Path, int, int, int, int]) -> tuple[str, int]:
    path = job[0]
    return path.name, crop_image(*job)


def extract_subimages(
    input_folder: str | Path, output_folder: str | Path, *, crop_size: int, step: int, thresh_size: int = 0,
    n_thread: int = 8, compression_level: int = 3,
) -> int:
    """Crop every image of ``input_folder`` into ``output_folder`` (which must not exist); returns the crop count."""
    from tqdm import tqdm

    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_folder}")
    if output_folder.exists():
        raise FileExistsError(f"output folder {output_folder} exists; remove it or choose another")
    if crop_size <= 0 or step <= 0:
        raise ValueError(f"crop size and step must be positive, got {crop_size} and {step}")
    images = sorted(p for p in input_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images in {input_folder}")
    output_folder.mkdir(parents=True)
    jobs = [(p, output_folder, crop_size, step, thresh_size, compression_level) for p in images]
    total = 0
    with tqdm(total=len(jobs), unit="image", desc=f"crop {input_folder.name}") as bar:
        if n_thread <= 1:
            results = map(_work, jobs)
        else:
            pool = Pool(min(n_thread, len(jobs)))
            results = pool.imap_unordered(_work, jobs)
        for _, count in results:
            total += count
            bar.update(1)
        if n_thread > 1:
            pool.close()
            pool.join()
    return total


def dataset_jobs(name: str, root: Path, scales: list[int]) -> list[tuple[Path, Path, int, int]]:
    """(input, output, crop size, step) for the HR folder and each LR scale of a DIV2K-layout dataset."""
    jobs = [(root / f"{name}_train_HR", root / f"{name}_train_HR_sub", HR_CROP, HR_STEP)]
    for scale in scales:
        if HR_CROP % scale or HR_STEP % scale:
            raise ValueError(f"scale {scale} does not divide the HR crop {HR_CROP} and step {HR_STEP}")
        lr_dir = root / f"{name}_train_LR_bicubic"
        jobs.append((lr_dir / f"X{scale}", lr_dir / f"X{scale}_sub", HR_CROP // scale, HR_STEP // scale))
    return jobs


@command
def main(argv: list[str] | None = None) -> int:
    """``lkdn-extract-subimages``: 0, or 1 after one ``error: ...`` line (a missing or existing folder, a bad size)."""
    parser = command_parser(
        "lkdn-extract-subimages", __doc__.split("\n\n")[0],
        ["lkdn-extract-subimages --input datasets/DF2K/DF2K_train_HR --output datasets/DF2K/DF2K_train_HR_sub --crop-size 480 --step 240",
         "lkdn-extract-subimages --dataset DF2K --root datasets/DF2K --scales 2 3 4"])
    parser.add_argument("--input", help="folder of images to crop")
    parser.add_argument("--output", help="folder to create for the crops")
    parser.add_argument("--crop-size", type=int, default=HR_CROP, help="crop size in pixels (480 for HR)")
    parser.add_argument("--step", type=int, default=HR_STEP, help="distance between crops (240 for HR)")
    parser.add_argument("--dataset", help="DF2K or DIV2K: crop HR and LR folders under --root")
    parser.add_argument("--root", help="dataset folder, e.g. datasets/DF2K")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="LR scales to crop with --dataset")
    parser.add_argument("--thresh-size", type=int, default=0, help="border remainder that still gets a crop")
    parser.add_argument("--n-thread", type=int, default=8, help="worker processes")
    parser.add_argument("--compression-level", type=int, default=3, help="PNG compression 0-9 (0: fastest reads)")
    args = parse_command_line(parser, argv)  # parsed before OpenCV is imported, so --help is fast
    if args.dataset:
        if not args.root:
            parser.error("--dataset needs --root")
        jobs = dataset_jobs(args.dataset, Path(args.root), args.scales)
    elif args.input and args.output:
        jobs = [(Path(args.input), Path(args.output), args.crop_size, args.step)]
    else:
        parser.error("give --input and --output, or --dataset and --root")
    for src, dst, crop, step in jobs:
        try:
            count = extract_subimages(src, dst, crop_size=crop, step=step, thresh_size=args.thresh_size,
                                      n_thread=args.n_thread, compression_level=args.compression_level)
        except (FileNotFoundError, FileExistsError, ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{src} -> {dst}: {count} crops of {crop}x{crop}, step {step}")
    return 0

