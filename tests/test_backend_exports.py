"""scripts/export_openvino.py and scripts/export_ncnn.py (verified by their runtime before anything is
written, atomically; refusals write nothing; int8 from a calibration folder), and --backend in
lkdn/test.py (Set5 through OpenVINO reproduces the published PSNR) and scripts/inference.py."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, load_script, shared_file

from lkdn import Upscaler
from lkdn.backends import TOLERANCES, Tolerance, installed
from lkdn.utils import partial_writes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "conv": "BSConvU_rep",
        "upsampler": "pixelshuffle_rep"}


def script(name: str) -> ModuleType:
    return load_script(f"scripts/{name}.py")


def needs(backend: str) -> None:
    if not installed(backend):
        pytest.skip(f"backend {backend} is not installed here")


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """Options and random (perturbed) weights of a small LKDN-S in training form."""
    from lkdn import build_network

    net = build_network(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    weights = tmp_path / "tiny.pth"
    torch.save({"params": net.state_dict()}, weights)
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump({"name": "tiny", "scale": 2, "network_g": TINY,
                                    "path": {"pretrain_network_g": str(weights)}}))
    return path


@pytest.fixture
def check_image(tmp_path: Path) -> Path:
    path = tmp_path / "check.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8))
    return path


def test_export_openvino_fp32_and_bf16(tiny_yaml: Path, check_image: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    needs("openvino")
    from lkdn.backends.openvino_backend import OpenVINOBackend

    export = script("export_openvino")
    out = tmp_path / "out"
    for precision in ("fp32", "bf16"):
        xml = out / f"tiny_{precision}.xml"
        code = export.main(["-opt", str(tiny_yaml), "--output", str(xml), "--precision", precision,
                            "--check-image", str(check_image), "--threads", "1"])
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert xml.is_file() and xml.with_suffix(".bin").is_file()
        assert "random (2, 3, 27, 35)" in printed and "check.png (1, 3, 23, 31)" in printed and "photo" in printed
        runtime = OpenVINOBackend(xml, precision=precision, threads=1)
        assert runtime.metadata()["precision"] == precision and json.loads(runtime.metadata()["network_g"])["type"]
        assert runtime.metadata()["scale"] == "2"
    assert "inference precision hint" in printed  # bf16: says which it is
    assert partial_writes(out) == []


def test_export_openvino_int8_from_a_calibration_folder(tiny_yaml: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    needs("openvino")
    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.GaussianBlur(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), (5, 5), 0))
    export = script("export_openvino")
    xml = tmp_path / "tiny_int8.xml"
    assert export.main(["-opt", str(tiny_yaml), "--output", str(xml), "--precision", "int8"]) == 1
    assert "--precision int8 needs --calibration" in capsys.readouterr().err and not xml.exists()
    code = export.main(["-opt", str(tiny_yaml), "--output", str(xml), "--precision", "int8", "--calibration", str(folder),
                        "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "calibration image 0" in printed and xml.is_file()
    text = xml.read_text()
    assert "FakeQuantize" in text or "FakeConvert" in text  # quantized


def test_export_ncnn_fp32_and_fp16(tiny_yaml: Path, check_image: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    needs("ncnn")
    from lkdn.backends.ncnn_backend import NcnnBackend

    export = script("export_ncnn")
    sizes = {}
    for precision in ("fp32", "fp16"):
        param = tmp_path / f"tiny_{precision}.param"
        code = export.main(["-opt", str(tiny_yaml), "--output", str(param), "--precision", precision,
                            "--check-image", str(check_image), "--threads", "1"])
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert "check.png" in printed
        sizes[precision] = param.with_suffix(".bin").stat().st_size
        assert NcnnBackend(param, precision=precision, threads=1)(torch.rand(1, 3, 9, 7)).shape == (1, 3, 18, 14)
    assert sizes["fp16"] < 0.6 * sizes["fp32"]  # float16 weights


@pytest.mark.parametrize(("name", "suffix", "backend"), [("export_openvino", ".xml", "openvino"),
                                                          ("export_ncnn", ".param", "ncnn")])
def test_export_that_does_not_reproduce_pytorch_writes_nothing(
    tiny_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, suffix: str, backend: str,
) -> None:
    needs(backend)
    target = tmp_path / f"refused{suffix}"
    monkeypatch.setitem(TOLERANCES, (backend, "fp32"), Tolerance(max_abs=0.0))
    assert script(name).main(["-opt", str(tiny_yaml), "--output", str(target), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert f"refusing to write {target.with_suffix('.bin')}, {target}" in err and "does not reproduce PyTorch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pth", "tiny.yml"]


@pytest.mark.parametrize(("name", "module", "extra"), [("export_openvino", "openvino", "openvino"),
                                                        ("export_ncnn", "ncnn", "ncnn")])
def test_export_script_without_its_extra_says_what_to_install(
    tiny_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, module: str, extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    suffix = ".xml" if extra == "openvino" else ".param"
    assert script(name).main(["-opt", str(tiny_yaml), "--output", str(tmp_path / f"x{suffix}")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and f'pip install -e ".[{extra}]"' in err[-1]


@pytest.mark.usefixtures("restore_logging")
def test_lkdn_test_with_backend_openvino_reproduces_set5(tmp_path: Path) -> None:
    needs("openvino")
    set5 = shared_file("benchmarks", "Set5", "x4")
    weights = shared_file("pretrained", "LKDN", "LKDN-S_del_rep_x4.pth")
    test_entry = importlib.import_module("lkdn.test")
    opt = yaml.safe_load((ROOT / "options" / "test" / "LKDN" / "test_LKDN-S_del_rep_x4.yml").read_text())
    opt["datasets"] = {"test_1": opt["datasets"]["test_1"]}
    yml = tmp_path / "lkdn_s.yml"
    yml.write_text(yaml.safe_dump(opt))
    results = test_entry.score([
        "-opt", str(yml), "--root", str(tmp_path), "--backend", "openvino", "--force_yml", "val:save_img=false",
        f"datasets:test_1:dataroot_gt={set5 / 'HR'}", f"datasets:test_1:dataroot_lq={set5 / 'LR'}",
        f"path:pretrain_network_g={weights}",
    ])
    assert abs(results["Set5"]["psnr"] - 32.11) <= 0.01 and abs(results["Set5"]["ssim"] - 0.8938) <= 0.0005


def test_inference_script_with_backend_ncnn(tiny_yaml: Path, tmp_path: Path) -> None:
    needs("ncnn")
    from lkdn.loading import load_network_from_options
    from lkdn.options import load_options

    src = tmp_path / "in"
    src.mkdir()
    image = np.random.default_rng(2).integers(0, 256, (14, 12, 3), dtype=np.uint8)
    cv2.imwrite(str(src / "a.png"), image)
    inference = script("inference")
    assert inference.main(["-opt", str(tiny_yaml), "--input", str(src), "--output", str(tmp_path / "out"),
                           "--backend", "ncnn"]) == 0
    got = cv2.imread(str(tmp_path / "out" / "a.png"))
    expected = Upscaler(load_network_from_options(load_options(tiny_yaml)), device="cpu").upscale_image(image)
    assert got.shape == (28, 24, 3) and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
