"""scripts/data_preparation/make_lr.py: mod-crop and MATLAB bicubic LR that match the published Set5 LR."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_script, shared_file

from lkdn.resize import downscale


def _load_script():
    return load_script("scripts/data_preparation/make_lr.py")


make_lr = _load_script()


def test_set5_lr_matches_the_published_lr(tmp_path: Path) -> None:
    hr_dir = shared_file("benchmarks", "Set5", "x4", "HR")
    lr_ref = shared_file("benchmarks", "Set5", "x4", "LR")
    argv = ["--input", str(hr_dir), "--output-hr", str(tmp_path / "GTmod4"), "--output-lr", str(tmp_path / "LRbicx4")]
    assert make_lr.main([*argv, "--scale", "4"]) == 0
    within, total = 0, 0
    for ref_path in sorted(lr_ref.glob("*.png")):
        ours = cv2.imread(str(tmp_path / "LRbicx4" / ref_path.name), cv2.IMREAD_UNCHANGED)
        ref = cv2.imread(str(ref_path), cv2.IMREAD_UNCHANGED)
        assert ours.shape == ref.shape, ref_path.name
        diff = np.abs(ours.astype(int) - ref.astype(int))
        within += int((diff <= 1).sum())
        total += diff.size
        hr = cv2.imread(str(hr_dir / ref_path.name), cv2.IMREAD_UNCHANGED)  # already a multiple of 4
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "GTmod4" / ref_path.name), cv2.IMREAD_UNCHANGED), hr)
    assert total > 0
    assert within / total >= 0.99, f"only {within / total:.4f} of LR pixels within 1 grey level of the published LR"


def test_mod_crop_grey_and_16_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, size=(35, 42), dtype=np.uint16)
    colour = rng.integers(0, 256, size=(30, 31, 3), dtype=np.uint8)
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "grey16.png"), grey16)
    cv2.imwrite(str(src / "colour.png"), colour)
    argv = ["--input", str(src), "--output-hr", str(tmp_path / "hr"), "--output-lr", str(tmp_path / "lr"), "--scale", "3"]
    assert make_lr.main(argv) == 0
    hr = cv2.imread(str(tmp_path / "hr" / "grey16.png"), cv2.IMREAD_UNCHANGED)
    lr = cv2.imread(str(tmp_path / "lr" / "grey16.png"), cv2.IMREAD_UNCHANGED)
    assert hr.dtype == lr.dtype == np.uint16
    np.testing.assert_array_equal(hr, grey16[:33, :42])
    assert lr.shape == (11, 14)
    assert cv2.imread(str(tmp_path / "lr" / "colour.png"), cv2.IMREAD_UNCHANGED).shape == (10, 10, 3)
    # A flat image stays flat: MATLAB bicubic weights sum to one.
    flat = np.full((12, 12, 3), 77, np.uint8)
    np.testing.assert_array_equal(downscale(flat, 4), np.full((3, 3, 3), 77, np.uint8))


def test_cv2_method_warns_and_differs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr_dir = shared_file("benchmarks", "Set5", "x4", "HR")
    argv = ["--input", str(hr_dir), "--output-hr", str(tmp_path / "hr"), "--output-lr", str(tmp_path / "lr")]
    assert make_lr.main([*argv, "--scale", "4", "--method", "cv2"]) == 0
    assert "not comparable" in capsys.readouterr().err
    ours = cv2.imread(str(tmp_path / "lr" / "baby.png"))
    ref = cv2.imread(str(shared_file("benchmarks", "Set5", "x4", "LR", "baby.png")))
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() > 0.5  # not the published LR


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--output-hr", str(tmp_path / "hr"), "--output-lr", str(tmp_path / "lr"), "--scale", "2"]
    assert make_lr.main(["--input", str(tmp_path / "absent"), *argv]) == 2
    assert "absent" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.png").write_bytes(b"not a png")
    assert make_lr.main(["--input", str(tmp_path / "src"), *argv]) == 1
    assert "broken.png" in capsys.readouterr().err
