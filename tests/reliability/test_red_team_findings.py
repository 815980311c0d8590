"""Outcomes of ``benchmarks/red_team.py`` that were tracebacks, unclear errors or silent results, each now a clear
error naming the file, key or value (and what is valid)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import load_script
from reliability_common import (
    METRICS,
    SCALE,
    TINY_NET,
    make_images,
    one_line,
    options,
    script,
    test_set_options,
    tiny_weights,
    write_yaml,
)

from lkdn import build_network
from lkdn.checkpoint import load_file, save_file
from lkdn.options import SchemaError, load_options, parse_options


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


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """32x32 HR images a..d and their 16x16 x2 LR images."""
    return make_images(tmp_path_factory.mktemp("red_team_pairs"))


def _training_options(tmp_path: Path, pairs: tuple[Path, Path], **changes: Any) -> Path:
    opt = options(*pairs, val=True, **changes)
    return write_yaml(tmp_path, opt)


def _without(path: Path, *keys: str) -> Path:
    """Remove the key at ``keys`` from the YAML file ``path`` (in place); returns it."""
    opt = yaml.safe_load(path.read_text())
    node = opt
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


@pytest.mark.parametrize(("changes", "removed", "message"), [
    ({}, ("datasets", "train", "gt_size"),
     "datasets.train: missing key 'gt_size' (the HR patch size of training, a multiple of the scale, e.g. 192 at x4)"),
    ({}, ("val", "metrics", "psnr", "crop_border"),
     "val.metrics.psnr: missing key 'crop_border' (pixels removed at each border before scoring; basicsr requires it, "
     "the benchmark tables use the scale)"),
    ({"datasets__train__dataset_enlarge_ratio": 10**9}, (),
     "datasets.train.dataset_enlarge_ratio: must be an integer from 1 to 10000, got 1000000000"),
    ({"datasets__train__num_worker_per_gpu": 10**9}, (),
     "datasets.train.num_worker_per_gpu: must be an integer from 0 to 64, got 1000000000"),
    ({"datasets__train__num_worker_per_gpu": 65}, (),
     "datasets.train.num_worker_per_gpu: must be an integer from 0 to 64, got 65"),
    ({"train__optim_g__lr": "abc"}, (),
     "train.optim_g.lr: expected a learning rate: a number above 0 and at most 1 (e.g. 2e-4), got 'abc'"),
    ({"train__optim_g__lr": [1, 2]}, (),
     "train.optim_g.lr: expected a learning rate: a number above 0 and at most 1 (e.g. 2e-4), got [1, 2]"),
    ({"train__optim_g__lr": None}, (),
     "train.optim_g.lr: expected a learning rate: a number above 0 and at most 1 (e.g. 2e-4), got None"),
    ({"train__optim_g__lr": 1e9}, (), "train.optim_g.lr: must be at most 1 (a learning rate, e.g. 2e-4), got 1000000000.0"),
], ids=["gt_size removed", "crop_border removed", "enlarge ratio 1e9", "workers 1e9", "workers 65", "lr text",
        "lr list", "lr null", "lr 1e9"])
def test_training_options_name_the_key_value_and_valid_range(
    tmp_path: Path, pairs: tuple[Path, Path], changes: dict[str, Any], removed: tuple[str, ...], message: str,
) -> None:
    path = _training_options(tmp_path, pairs, **changes)
    if removed:
        _without(path, *removed)
    with pytest.raises(SchemaError) as err:
        parse_options(path, is_train=True, root_path=tmp_path)
    errors = str(err.value).splitlines()[1:]
    assert len(errors) == 1 and errors[0].strip().startswith(f"{path}:"), str(err.value)
    assert errors[0].strip().split(": ", 1)[1] == message
    assert not (tmp_path / "experiments").exists()


def test_the_bounds_themselves_and_auto_workers_are_accepted(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    for workers, ratio, lr in ((64, 10_000, 1), ("auto", 1, 1e-4), (0, 3, 0.5)):
        path = _training_options(tmp_path, pairs, datasets__train__num_worker_per_gpu=workers,
                                 datasets__train__dataset_enlarge_ratio=ratio, train__optim_g__lr=lr)
        opt = parse_options(path, is_train=True, root_path=tmp_path)
        assert (opt["datasets"]["train"]["dataset_enlarge_ratio"], opt["train"]["optim_g"]["lr"]) == (ratio, lr)


def test_test_options_without_a_metric_crop_border_name_the_metric(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    assert list(METRICS) == ["psnr"]
    path = _without(test_set_options(tmp_path, pairs, tiny_weights(tmp_path), name="t"), "val", "metrics", "psnr",
                    "crop_border")
    with pytest.raises(SchemaError, match=r"t\.yml:\d+: val\.metrics\.psnr: missing key 'crop_border'"):
        parse_options(path, is_train=False, root_path=tmp_path)


@pytest.mark.parametrize(("override", "message"), [
    ("network_g:num_feat=abc", "network_g.num_feat: expected an integer (LKDN's default is 56), got 'abc'"),
    ("network_g:num_feat=1.5", "network_g.num_feat: expected an integer (LKDN's default is 56), got 1.5"),
    ("network_g:num_feat=true", "network_g.num_feat: expected an integer (LKDN's default is 56), got True"),
])
def test_an_override_that_does_not_fit_the_keys_type_is_refused(tmp_path: Path, override: str, message: str) -> None:
    path = write_yaml(tmp_path, {"name": "net", "scale": SCALE, "network_g": dict(TINY_NET)})
    with pytest.raises(SchemaError) as err:
        load_options(path, overrides=[override])
    lines = [line.strip() for line in str(err.value).splitlines()]
    assert lines[1] == f"{path}:5: {message}" and lines[2] == f"(after --force-yml {override})", str(err.value)
    assert load_options(path, overrides=["network_g:num_feat=16"]).network_g["num_feat"] == 16


def _compare(pairs: tuple[Path, Path], output: Path, *flags: str) -> list[str]:
    hr, lr = pairs
    return ["--hr", str(hr), "--lr", str(lr), "--sr", f"x={hr}", "--images", "a", "--output", str(output), *flags]


@pytest.mark.parametrize(("flags", "message"), [
    (("--scale", "0"), "--scale: expected a positive integer (the upscaling factor), got 0"),
    (("--scale", "-2"), "--scale: expected a positive integer (the upscaling factor), got -2"),
    (("--scale", "3"), "--scale 3 does not fit a: the HR image is 32x32 and the LR 16x16 pixels (x3 would make 48x48); "
                       "their sizes fit --scale 2"),
    (("--scale", "2", "--crop", "0"), "--crop: expected a positive number of HR pixels, got 0"),
    (("--scale", "2", "--crop", "-4"), "--crop: expected a positive number of HR pixels, got -4"),
    (("--scale", "2", "--crop", "100000"), "--crop 100000 is larger than the HR image a (32x32 pixels): use --crop 32 or less"),
])
def test_compare_images_refuses_bad_scales_and_crops(tmp_path: Path, pairs: tuple[Path, Path], flags: tuple[str, ...],
                                                     message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert script("compare_images").main(_compare(pairs, tmp_path / "c.png", *flags)) == 2
    assert one_line(capsys.readouterr().err) == f"error: {message}"
    assert not (tmp_path / "c.png").exists()


def test_compare_images_without_crop_takes_the_whole_small_image(tmp_path: Path, pairs: tuple[Path, Path]) -> None:
    assert script("compare_images").main(_compare(pairs, tmp_path / "c.png", "--scale", "2")) == 0
    scores = script("compare_images").compare_images(
        hr_dir=pairs[0], lr_dir=pairs[1], sr_dirs={}, stems=["a"], scale=2, output=tmp_path / "d.png")
    assert scores["a"]["crop"] == {"x": 0, "y": 0, "size": 32}  # 96 by default, at most the 32x32 image
    assert cv2.imread(str(tmp_path / "c.png")) is not None


@pytest.fixture
def records(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text("".join(json.dumps({"iter": i, "lr": 1e-3, "l_pix": 1.0 / i}) + "\n"
                                                 for i in range(1, 5)))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iter": i, "epoch": 0, "dataset": "val", "psnr": 30.0 + i,
                                                           "ssim": 0.9}) + "\n" for i in (2, 4)))
    return run


@pytest.mark.parametrize(("flags", "message"), [
    (("--smooth", "-1"), "--smooth: expected a moving-average window of 0 or more points (0 and 1: none), got -1"),
    (("--metric", "lpips"), "--metric 'lpips': not in the validation logs (metrics.jsonl) of {run}; they hold psnr, ssim"),
])
def test_plot_curves_refuses_a_negative_window_and_a_metric_not_logged(
    tmp_path: Path, records: Path, flags: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert script("plot_curves").main([str(records), "--output", str(tmp_path / "p.png"), *flags]) == 2
    assert one_line(capsys.readouterr().err) == "error: " + message.format(run=records)
    assert not (tmp_path / "p.png").exists()
    assert script("plot_curves").main([str(records), "--output", str(tmp_path / "p.png"), "--metric", "ssim"]) == 0


def test_convert_refuses_a_param_key_the_checkpoint_does_not_hold(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    params, ema = build_network(TINY_NET).state_dict(), build_network(TINY_NET).state_dict()
    source = save_file({"params": params, "params_ema": ema}, tmp_path / "net.pth")
    common = ["--input", str(source), "--network-json", json.dumps(TINY_NET)]
    convert = script("convert_checkpoint")
    assert convert.main([*common, "--output", str(tmp_path / "x.safetensors"), "--param-key", "nokey"]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"error: {source}: no key 'nokey' (--param-key); the checkpoint holds 'params', 'params_ema'")
    assert not (tmp_path / "x.safetensors").exists()
    assert convert.main([*common, "--output", str(tmp_path / "p.safetensors"), "--param-key", "params"]) == 0
    written = load_file(tmp_path / "p.safetensors")
    assert written.keys() == params.keys() and all(torch.equal(written[k], params[k]) for k in params)
    assert not all(torch.equal(written[k], ema[k]) for k in ema if k.endswith("weight"))
