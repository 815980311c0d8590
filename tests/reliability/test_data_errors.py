"""Bad data is an error naming the file and the fix, in training and in lkdn/test.py; skip_bad_images skips."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reliability_common import (
    TEST_SCRIPT,
    TRAIN_SCRIPT,
    assert_same_weights,
    experiment,
    losses,
    make_images,
    options,
    run_cli,
    train,
    weights,
    write_yaml,
)

from lkdn import build_network
from lkdn import test as test_entry
from lkdn.checkpoint import load_file, save_file
from lkdn.data.safe_dataset import SKIPPED_KEY, DataError, build_checked_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _create_lmdb(source: Path, target: Path) -> None:
    from lkdn.commands.create_lmdb import create_lmdb

    create_lmdb(source, target, n_thread=1)


def corrupt(hr: Path, lr: Path) -> tuple[Path, str]:
    path = hr / "b.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path, "cannot decode"


def empty(hr: Path, lr: Path) -> tuple[Path, str]:
    path = lr / "c.png"
    path.write_bytes(b"")
    return path, "empty file (0 bytes)"


def truncated_png(hr: Path, lr: Path) -> tuple[Path, str]:
    path = hr / "d.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated PNG"


def truncated_jpeg(hr: Path, lr: Path) -> tuple[Path, str]:
    for folder in (hr, lr):  # the pair becomes a.jpg; the HR one is cut
        img = cv2.imread(str(folder / "a.png"))
        (folder / "a.png").unlink()
        cv2.imwrite(str(folder / "a.jpg"), img)
    data = (hr / "a.jpg").read_bytes()
    (hr / "a.jpg").write_bytes(data[: len(data) * 2 // 3])
    return hr / "a.jpg", "truncated JPEG"


def wrong_scale(hr: Path, lr: Path) -> tuple[Path, str]:
    img = cv2.imread(str(lr / "b.png"))
    cv2.imwrite(str(lr / "b.png"), cv2.resize(img, (10, 10), interpolation=cv2.INTER_AREA))  # x3.2, not x2
    return lr / "b.png", "LR/HR sizes do not fit scale 2"


def missing_folder(hr: Path, lr: Path) -> tuple[Path, str]:
    shutil.rmtree(lr)
    return lr, "dataroot_lq: folder not found"


def empty_folders(hr: Path, lr: Path) -> tuple[Path, str]:
    for folder in (hr, lr):
        for file in folder.iterdir():
            file.unlink()
    return hr, "no images found in"


def unpaired(hr: Path, lr: Path) -> tuple[Path, str]:
    (lr / "c.png").unlink()
    return lr, "every HR image needs an LR image named filename_tmpl.format(<HR name>)"


FAULTS: dict[str, Callable[[Path, Path], tuple[Path, str]]] = {
    f.__name__: f for f in (corrupt, empty, truncated_png, truncated_jpeg, wrong_scale, missing_folder, empty_folders,
                            unpaired)
}


def _tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1})
    save_file({"params": net.state_dict()}, path)
    return path


def _test_options(tmp_path: Path, hr: Path, lr: Path, weights_file: Path, backend: str = "disk") -> Path:
    opt = {"name": "bad_data", "scale": 2, "num_gpu": 0,
           "network_g": {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1},
           "datasets": {"test_1": {"name": "mine", "type": "PairedImageDataset", "dataroot_gt": str(hr),
                                   "dataroot_lq": str(lr), "io_backend": {"type": backend}}},
           "path": {"pretrain_network_g": str(weights_file), "param_key_g": "params"},
           "val": {"save_img": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2,
                                                           "test_y_channel": True}}}}
    return write_yaml(tmp_path, opt)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_training_names_the_bad_file_and_the_fix(tmp_path: Path, fault: str) -> None:
    hr, lr = make_images(tmp_path / "data")
    path, expected = FAULTS[fault](hr, lr)
    with pytest.raises(DataError) as err:
        train(write_yaml(tmp_path, options(hr, lr, name=f"bad_{fault}", train__total_iter=4)), tmp_path)
    message = str(err.value)
    assert expected in message and str(path) in message, message
    assert "datasets.train" in message
    if fault in ("corrupt", "empty", "truncated_png", "truncated_jpeg"):
        assert "re-create or remove the file" in message and "skip_bad_images: true" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "missing_folder"])  # that one: DatasetMissingError
def test_the_test_pipeline_names_the_bad_file(tmp_path: Path, fault: str) -> None:
    hr, lr = make_images(tmp_path / "data")
    path, expected = FAULTS[fault](hr, lr)
    argv = ["-opt", str(_test_options(tmp_path, hr, lr, _tiny_weights(tmp_path / "w.pth"))), "--root", str(tmp_path)]
    with pytest.raises(DataError) as err:
        test_entry.score(argv)
    message = str(err.value)
    assert expected in message and str(path) in message, message
    assert "datasets.test_1" in message


def test_lr_too_small_for_its_hr_in_a_test_set_is_caught(tmp_path: Path) -> None:
    """basicsr crops the HR image to scale x LR silently; an LR image of another scale would be scored."""
    hr, lr = make_images(tmp_path / "data")
    big = cv2.resize(cv2.imread(str(hr / "a.png")), (64, 64))  # HR 64x64 against its 16x16 LR at scale 2
    cv2.imwrite(str(hr / "a.png"), big)
    argv = ["-opt", str(_test_options(tmp_path, hr, lr, _tiny_weights(tmp_path / "w.pth"))), "--root", str(tmp_path)]
    with pytest.raises(DataError, match=r"a.png.*LR/HR sizes do not fit scale 2: HR 64x64, LR 16x16 \(expected LR 32x32\)"):
        test_entry.score(argv)


@pytest.mark.parametrize("pipeline", ["train", "test"])
def test_lmdb_without_meta_info_is_named_with_the_fix(tmp_path: Path, pipeline: str) -> None:
    hr, lr = make_images(tmp_path / "data")
    _create_lmdb(hr, tmp_path / "hr.lmdb")
    _create_lmdb(lr, tmp_path / "lr.lmdb")
    (tmp_path / "lr.lmdb" / "meta_info.txt").unlink()
    if pipeline == "train":
        opt = options(tmp_path / "hr.lmdb", tmp_path / "lr.lmdb", name="lmdb", datasets__train__io_backend={"type": "lmdb"})
        with pytest.raises(DataError) as err:
            train(write_yaml(tmp_path, opt), tmp_path)
    else:
        argv = ["-opt", str(_test_options(tmp_path, tmp_path / "hr.lmdb", tmp_path / "lr.lmdb",
                                          _tiny_weights(tmp_path / "w.pth"), backend="lmdb")), "--root", str(tmp_path)]
        with pytest.raises(DataError) as err:
            test_entry.score(argv)
    assert f"LMDB {tmp_path / 'lr.lmdb'} has no meta_info.txt; re-create it with scripts/data_preparation/create_lmdb.py" \
        in str(err.value)


def test_command_lines_print_one_error_line_without_a_traceback(tmp_path: Path) -> None:
    hr, lr = make_images(tmp_path / "data")
    path, _ = corrupt(hr, lr)
    done = run_cli(TRAIN_SCRIPT, "-opt", str(write_yaml(tmp_path, options(hr, lr, name="cli"))), "--root_path",
                   str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "cannot decode" in line]
    assert "ERROR" in line and str(path) in line and "skip_bad_images" in line
    log = next(experiment(tmp_path, "cli").glob("train_cli_*.log")).read_text()
    assert f"{path}: cannot decode image" in log  # the reason is kept in the experiment's log

    wrong_scale(hr, lr)
    shutil.copyfile(hr / "a.png", hr / "b.png")  # only the scale fault is left for test.py
    argv = ["-opt", str(_test_options(tmp_path, hr, lr, _tiny_weights(tmp_path / "w.pth"))), "--root", str(tmp_path)]
    done = run_cli(TEST_SCRIPT, *argv, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: datasets.test_1: sample ") and "LR/HR sizes do not fit scale 2" in last
    assert str(lr / "b.png") in last


# ------------------------------------------------------------------------------------------ skipping


def test_skip_bad_images_replaces_and_counts_and_resumes_exactly(tmp_path: Path) -> None:
    hr, lr = make_images(tmp_path / "data")
    bad, _ = corrupt(hr, lr)
    changes = {"train__total_iter": 12, "logger__save_checkpoint_freq": 6, "datasets__train__skip_bad_images": True}
    assert train(write_yaml(tmp_path, options(hr, lr, name="skip", **changes)), tmp_path) == 0
    log = next(experiment(tmp_path, "skip").glob("train_skip_*.log")).read_text().splitlines()
    warnings = [line for line in log if "WARNING: skip_bad_images:" in line]
    assert len(warnings) == 1 and f"{bad}: cannot decode image" in warnings[0]  # once per image
    state = load_file(experiment(tmp_path, "skip") / "training_states" / "12.state")
    # 4 images x ratio 2 = 8 samples an epoch, b.png twice: 12 iterations x batch 2 = 3 epochs -> 6 replacements
    assert state["skipped_images"] == 6
    counted = [line for line in log if "unreadable training sample(s) replaced" in line]
    assert counted[-1].endswith("(6 so far)")
    assert "6 unreadable training sample(s) were replaced during this run" in "\n".join(log)
    assert all(np.isfinite(v) for _, v in losses(tmp_path, "skip"))

    part = write_yaml(tmp_path, options(hr, lr, name="skip_part", **changes))
    assert train(part, tmp_path, "--force_yml", "train:total_iter=6") == 0
    assert train(part, tmp_path, "--auto_resume") == 0
    assert_same_weights(weights(tmp_path, "skip"), weights(tmp_path, "skip_part"))
    resumed = load_file(experiment(tmp_path, "skip_part") / "training_states" / "12.state")
    assert resumed["skipped_images"] == 6


def test_batch_datasets_skip_the_named_image(tmp_path: Path) -> None:
    hr, _ = make_images(tmp_path / "data")
    (hr / "c.png").write_bytes(b"not an image at all")
    opt = {"name": "ms", "type": "MultiScaleImageDataset", "dataroot_gt": str(hr), "scales": [2], "gt_size": 16,
           "phase": "train", "io_backend": {"type": "disk"}, "skip_bad_images": True}
    dataset = build_checked_dataset(opt, where="datasets.train")
    batch = dataset.__getitems__([0, 2, 3])
    assert [Path(s["gt_path"]).name for s in batch] == ["a.png", "d.png", "d.png"]
    assert [s[SKIPPED_KEY] for s in batch] == [0, 1, 0]
    strict = build_checked_dataset(dict(opt, skip_bad_images=False), where="datasets.train")
    with pytest.raises(DataError, match=r"datasets.train: sample 2 \(.*c.png\): .*cannot decode"):
        strict.__getitems__([0, 2])
