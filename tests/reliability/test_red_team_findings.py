"""Outcomes of ``benchmarks/red_team.py`` that were tracebacks, each now a clear error naming the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_script


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_make_lr_names_an_image_too_large_to_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_lr = load_script("scripts/data_preparation/make_lr.py")
    source = tmp_path / "src"
    source.mkdir()
    cv2.imwrite(str(source / "good.png"), np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8))
    (source / "bomb.png").write_bytes(png_claiming(100_000, 100_000))  # OpenCV refuses it with cv2.error
    argv = ["--input", str(source), "--output-hr", str(tmp_path / "hr"), "--output-lr", str(tmp_path / "lr"),
            "--scale", "2"]
    assert make_lr.main(argv) == 1
    err = capsys.readouterr().err
    failed = err.split("failed:\n", 1)[1].strip().splitlines()
    assert len(failed) == 1 and str(source / "bomb.png") in failed[0], err
    assert cv2.imread(str(tmp_path / "lr" / "good.png")).shape == (8, 10, 3)  # the other images are still done


def test_make_lr_refuses_to_write_over_its_input_and_names_an_image_smaller_than_the_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    make_lr = load_script("scripts/data_preparation/make_lr.py")
    source = tmp_path / "src"
    source.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (15, 21, 3), dtype=np.uint8)  # mod-crop by 2 changes it
    cv2.imwrite(str(source / "a.png"), image)
    before = (source / "a.png").read_bytes()
    over = ["--input", str(source), "--output-hr", str(source), "--output-lr", str(tmp_path / "lr"), "--scale", "2"]
    assert make_lr.main(over) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --output-hr") and str(source) in err and "\n" not in err
    assert (source / "a.png").read_bytes() == before and not (tmp_path / "lr").exists()

    big = ["--input", str(source), "--output-hr", str(tmp_path / "hr"), "--output-lr", str(tmp_path / "lr"),
           "--scale", "100"]
    assert make_lr.main(big) == 1
    failed = capsys.readouterr().err.split("failed:\n", 1)[1].strip()
    assert failed == f"{source / 'a.png'}: 21x15 pixels is smaller than the scale 100: no LR pixel is left"


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_export_scripts_refuse_a_thread_count_below_one(tmp_path: Path, threads: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    export_onnx = load_script("scripts/export_onnx.py")
    status = export_onnx.main(["-opt", str(tmp_path / "never_read.yml"), "--output", str(tmp_path / "x.onnx"),
                               "--threads", threads])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --threads must be a positive number of CPU threads, got {threads}")
    assert not (tmp_path / "x.onnx").exists()
