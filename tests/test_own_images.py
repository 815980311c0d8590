"""Training on a folder of HR images only: LR made on the fly (MATLAB bicubic), validation on a
held-out split chosen by name hash (options/train/own_images/train_LKDN-S_x4_own_images.yml)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from basicsr.utils.matlab_functions import imresize
from test_train_common import ROOT, SKIMAGE_IMAGES, natural_image, read_jsonl, run_training

from lkdn.data.multiscale_dataset import MultiScaleImageDataset, split_holdout
from lkdn.schema import SchemaError

TEMPLATE = ROOT / "options" / "train" / "own_images" / "train_LKDN-S_x4_own_images.yml"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_split_is_disjoint_complete_and_stable() -> None:
    paths = [f"/data/img_{i:03d}.png" for i in range(40)]
    held = split_holdout(paths, 5, "holdout", "datasets.val")
    train = split_holdout(paths, 5, "train", "datasets.train")
    assert len(held) == 5 and set(held) | set(train) == set(paths) and not set(held) & set(train)
    assert train == [p for p in paths if p not in held]  # folder order kept
    assert split_holdout([p.replace("/data", "/elsewhere") for p in paths], 5, "holdout", "x") == [
        p.replace("/data", "/elsewhere") for p in held]  # by file name, not by location
    more = split_holdout(paths + [f"/data/new_{i}.png" for i in range(4)], 5, "holdout", "x")
    assert len(set(more) & set(held)) >= 3  # adding 10% more images changes few of the held-out ones


@pytest.mark.parametrize(("holdout", "subset", "expected"), [
    (-1, "train", "holdout: expected a number of images"),
    (4, "train", "holdout: 4 of 4 images would leave none to train on"),
    (0, "holdout", "subset: holdout needs holdout: N"),
    (1, "val", "subset: expected train or holdout, got 'val'"),
])
def test_bad_splits_are_named(holdout: int, subset: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        split_holdout(["a.png", "b.png", "c.png", "d.png"], holdout, subset, "datasets.x")


def test_holdout_on_a_paired_dataset_is_refused(tmp_path: Path) -> None:
    text = TEMPLATE.read_text().replace("type: MultiScaleImageDataset\n    dataroot_gt: datasets/my_images\n    io_backend:\n"
                                        "      type: disk\n    scales: [4]\n    holdout: 5        # the same",
                                        "type: PairedImageDataset\n    dataroot_gt: datasets/my_images\n    io_backend:\n"
                                        "      type: disk\n    scales: [4]\n    holdout: 5        # the same")
    (tmp_path / "t.yml").write_text(text)
    with pytest.raises(SchemaError, match="datasets.val.holdout: only MultiScaleImageDataset"):
        run_training(tmp_path / "t.yml", tmp_path)


def test_the_template_trains_on_a_folder_and_validates_on_held_out_images(tmp_path: Path) -> None:
    folder = tmp_path / "my_images"
    folder.mkdir()
    for name in SKIMAGE_IMAGES:
        cv2.imwrite(str(folder / f"{name}.png"), natural_image(name)[:96, :100])
    overrides = [f"datasets:train:dataroot_gt={folder}", f"datasets:val:dataroot_gt={folder}", "num_gpu=0",
                 "datasets:train:holdout=2", "datasets:val:holdout=2", "datasets:train:gt_size=48",
                 "datasets:train:batch_size_per_gpu=2", "datasets:train:num_worker_per_gpu=0",
                 "datasets:train:dataset_enlarge_ratio=1", "network_g:num_feat=8", "network_g:num_atten=8",
                 "network_g:num_block=1", "train:total_iter=2", "val:val_freq=2", "logger:print_freq=1",
                 "logger:save_checkpoint_freq=2", "logger:use_tb_logger=false"]
    assert run_training(TEMPLATE, tmp_path, "--force_yml", *overrides) == 0
    run = tmp_path / "experiments" / "LKDN-S_x4_own_images"
    (record,) = read_jsonl(run / "metrics.jsonl")
    assert record["dataset"] == "my_images_holdout" and record["psnr"] > 15
    shown = sorted(p.stem.rsplit("_", 1)[0] for p in (run / "visualization").rglob("*.png"))
    held = sorted(Path(p).stem for p in split_holdout(sorted(str(p) for p in folder.iterdir()), 2, "holdout", "x"))
    assert shown == held


def test_lr_is_matlab_bicubic_of_the_hr_patch(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), natural_image("astronaut")[:64, :64])
    dataset = MultiScaleImageDataset({"name": "v", "phase": "val", "dataroot_gt": str(tmp_path), "scales": [4]})
    sample = dataset[0]
    gt = sample["gt"].numpy().transpose(1, 2, 0)[..., ::-1]
    expected = np.clip(np.round(imresize(np.ascontiguousarray(gt), 1 / 4) * 255), 0, 255) / 255
    np.testing.assert_allclose(sample["lq"].numpy().transpose(1, 2, 0)[..., ::-1], expected, atol=1e-6)
