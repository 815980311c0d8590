"""Pack an image folder into an LMDB (BasicSR's format, with ``meta_info.txt``) for fast training reads.

Keys are the image names without extension; ``meta_info.txt`` inside the LMDB lists
``<name>.png (h,w,c) <compression>`` per image, which basicsr's ``PairedImageDataset`` reads
with ``io_backend: {type: lmdb}``. Run it on the folders ``lkdn-extract-subimages`` made.

One folder::

    lkdn-create-lmdb --input datasets/DF2K/DF2K_train_HR_sub \\
        --output datasets/DF2K/DF2K_train_HR_sub.lmdb

The sub-image folders of DF2K (or DIV2K), HR and LR x2, x3, x4, with the names the training
configs use (``<name>_train_HR_sub.lmdb``, ``<name>_train_LR_bicubic_X<s>_sub.lmdb``)::

    lkdn-create-lmdb --dataset DF2K --root datasets/DF2K --scales 2 3 4
"""

from __future__ import annotations

import sys
from pathlib import Path

from lkdn.utils import command, command_parser, parse_command_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def prepare_keys(folder: Path) -> tuple[list[str], list[str]]:
    """Image paths relative to ``folder`` (sorted) and their keys (names without extension)."""
    paths = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    keys = [Path(p).stem for p in paths]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{folder}: two images share a name without extension; LMDB keys must be unique")
    return paths, keys


def create_lmdb(input_folder: str | Path, lmdb_path: str | Path, *, n_thread: int = 8, batch: int = 5000,
                compress_level: int = 1) -> int:
    """Write every image of ``input_folder`` into ``lmdb_path`` (must end in ``.lmdb``, must not exist)."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # lkdn.utils answers its torchvision import

    input_folder, lmdb_path = Path(input_folder), Path(lmdb_path)
    if not input_folder.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_folder}")
    if lmdb_path.suffix != ".lmdb":
        raise ValueError(f"the LMDB path must end with .lmdb, got {lmdb_path}")
    if lmdb_path.exists():
        raise FileExistsError(f"{lmdb_path} exists; remove it or choose another")
    paths, keys = prepare_keys(input_folder)
    if not paths:
        raise FileNotFoundError(f"no images in {input_folder}")
    make_lmdb_from_imgs(str(input_folder), str(lmdb_path), paths, keys, batch=batch, compress_level=compress_level,
                        multiprocessing_read=n_thread > 1, n_thread=n_thread)
    return len(paths)


def dataset_jobs(name: str, root: Path, scales: list[int]) -> list[tuple[Path, Path]]:
    """(sub-image folder, LMDB) pairs of a DIV2K-layout dataset, named as the training configs expect."""
    jobs = [(root / f"{name}_train_HR_sub", root / f"{name}_train_HR_sub.lmdb")]
    for scale in scales:
        jobs.append((root / f"{name}_train_LR_bicubic" / f"X{scale}_sub", root / f"{name}_train_LR_bicubic_X{scale}_sub.lmdb"))
    return jobs


@command
def main(argv: list[str] | None = None) -> int:
    """``lkdn-create-lmdb``: 0, or 1 after one ``error: ...`` line (a missing folder, an existing LMDB)."""
    parser = command_parser(
        "lkdn-create-lmdb", __doc__.split("\n\n")[0],
        ["lkdn-create-lmdb --input datasets/DF2K/DF2K_train_HR_sub --output datasets/DF2K/DF2K_train_HR_sub.lmdb",
         "lkdn-create-lmdb --dataset DF2K --root datasets/DF2K --scales 2 3 4"])
    parser.add_argument("--input", help="folder of images")
    parser.add_argument("--output", help="LMDB to create (ends with .lmdb)")
    parser.add_argument("--dataset", help="DF2K or DIV2K: pack the sub-image folders under --root")
    parser.add_argument("--root", help="dataset folder, e.g. datasets/DF2K")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="LR scales with --dataset")
    parser.add_argument("--n-thread", type=int, default=8, help="reader processes (1: read one by one)")
    args = parse_command_line(parser, argv)  # parsed before basicsr is imported, so --help is fast
    if args.dataset:
        if not args.root:
            parser.error("--dataset needs --root")
        jobs = dataset_jobs(args.dataset, Path(args.root), args.scales)
    elif args.input and args.output:
        jobs = [(Path(args.input), Path(args.output))]
    else:
        parser.error("give --input and --output, or --dataset and --root")
    for src, dst in jobs:
        try:
            count = create_lmdb(src, dst, n_thread=args.n_thread)
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{src} -> {dst}: {count} images")
    return 0

