"""Data preparation scripts: sub-image extraction (BasicSR's recipe) and LMDB creation, on tiny images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import load_script
from test_train_common import bicubic_down, natural_image

import lkdn  # noqa: F401 (registers; the torchvision alias basicsr needs)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("prep")
    hr = natural_image("coffee")[:200, :250]
    lr = bicubic_down(hr, 2)
    (folder / "HR").mkdir()
    (folder / "LR").mkdir()
    cv2.imwrite(str(folder / "HR" / "0001.png"), hr)
    cv2.imwrite(str(folder / "LR" / "0001x2.png"), lr)  # DIV2K names its LR images <name>x<s>
    return folder / "HR", folder / "LR", hr, lr


def test_crop_positions_cover_the_border() -> None:
    extract = load_script("scripts/data_preparation/extract_subimages.py")
    assert extract.crop_positions(200, 96, 48, 0) == [0, 48, 96, 104]
    assert extract.crop_positions(192, 96, 48, 0) == [0, 48, 96]
    assert extract.crop_positions(200, 96, 48, 10) == [0, 48, 96]
    assert extract.crop_positions(50, 96, 48, 0) == []
    assert extract.image_stem(Path("0001x4.png")) == "0001" and extract.image_stem(Path("box2.png")) == "box2"


def test_hr_and_lr_subimages_correspond(tmp_path: Path, source) -> None:
    extract = load_script("scripts/data_preparation/extract_subimages.py")
    hr_dir, lr_dir, hr, lr = source
    n_hr = extract.extract_subimages(hr_dir, tmp_path / "HR_sub", crop_size=96, step=48, n_thread=2)
    n_lr = extract.extract_subimages(lr_dir, tmp_path / "LR_sub", crop_size=48, step=24, n_thread=1)
    assert n_hr == n_lr == 4 * 5
    names = sorted(p.name for p in (tmp_path / "HR_sub").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "LR_sub").iterdir())
    assert names[0] == "0001_s001.png" and names[-1] == "0001_s020.png"
    # crop 7 is row 1 (top 48), column 1 (left 48) of the 4 x 5 grid
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "HR_sub" / "0001_s007.png")), hr[48:144, 48:144])
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "LR_sub" / "0001_s007.png")), lr[24:72, 24:72])
    # the last crop is flush with the bottom-right corner
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "HR_sub" / "0001_s020.png")), hr[-96:, -96:])
    with pytest.raises(FileExistsError, match="HR_sub exists"):
        extract.extract_subimages(hr_dir, tmp_path / "HR_sub", crop_size=96, step=48)


def test_lmdb_holds_the_images_and_feeds_paired_image_dataset(tmp_path: Path, source) -> None:
    extract, lmdb_script = load_script("scripts/data_preparation/extract_subimages.py"), load_script("scripts/data_preparation/create_lmdb.py")
    hr_dir, lr_dir, _, _ = source
    extract.extract_subimages(hr_dir, tmp_path / "HR_sub", crop_size=96, step=48, n_thread=1)
    extract.extract_subimages(lr_dir, tmp_path / "LR_sub", crop_size=48, step=24, n_thread=1)
    assert lmdb_script.create_lmdb(tmp_path / "HR_sub", tmp_path / "HR_sub.lmdb", n_thread=1) == 20
    assert lmdb_script.create_lmdb(tmp_path / "LR_sub", tmp_path / "LR_sub.lmdb", n_thread=2) == 20
    meta = (tmp_path / "HR_sub.lmdb" / "meta_info.txt").read_text().splitlines()
    assert len(meta) == 20 and meta[0] == "0001_s001.png (96,96,3) 1"
    with pytest.raises(ValueError, match="must end with .lmdb"):
        lmdb_script.create_lmdb(tmp_path / "HR_sub", tmp_path / "other")

    from basicsr.data import build_dataset

    def dataset(gt: Path, lq: Path, backend: str):
        return build_dataset({"name": "t", "type": "PairedImageDataset", "dataroot_gt": str(gt), "dataroot_lq": str(lq),
                              "io_backend": {"type": backend}, "phase": "val", "scale": 2})

    from_lmdb = dataset(tmp_path / "HR_sub.lmdb", tmp_path / "LR_sub.lmdb", "lmdb")
    from_disk = dataset(tmp_path / "HR_sub", tmp_path / "LR_sub", "disk")
    assert len(from_lmdb) == len(from_disk) == 20
    disk_items = {Path(item["gt_path"]).stem: item for item in (from_disk[i] for i in range(len(from_disk)))}
    for index in (0, 6, 19):
        a = from_lmdb[index]
        b = disk_items[Path(a["gt_path"]).stem]  # LMDB keys are the image names
        assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["lq"], b["lq"])


def test_dataset_layout_matches_the_training_configs() -> None:
    extract, lmdb_script = load_script("scripts/data_preparation/extract_subimages.py"), load_script("scripts/data_preparation/create_lmdb.py")
    root = Path("datasets/DF2K")
    lmdbs = {str(dst) for _, dst in lmdb_script.dataset_jobs("DF2K", root, [2, 3, 4])}
    crops = {str(dst): (crop, step) for _, dst, crop, step in extract.dataset_jobs("DF2K", root, [2, 3, 4])}
    assert crops["datasets/DF2K/DF2K_train_LR_bicubic/X3_sub"] == (160, 80)
    assert crops["datasets/DF2K/DF2K_train_HR_sub"] == (480, 240)
    for scale in (2, 3, 4):
        train = yaml.safe_load((ROOT / "options" / "train" / "LKDN" / f"train_LKDN_x{scale}.yml").read_text())
        train = train["datasets"]["train"]
        assert {train["dataroot_gt"], train["dataroot_lq"]} <= lmdbs
        # the sub-image folders are the inputs of the LMDB jobs
        assert any(str(src).endswith(f"X{scale}_sub") for src, _ in lmdb_script.dataset_jobs("DF2K", root, [scale]))
