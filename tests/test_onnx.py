"""ONNX export: onnxruntime reproduces PyTorch (official LKDN x4 and LKDN-S training form), Set5
PSNR through onnxruntime, dynamic shapes, float16, and the refusal path that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFICIAL_LKDN, load_script, shared_file

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from lkdn import build_network  # noqa: E402
from lkdn.evaluate import evaluate_folder  # noqa: E402
from lkdn.export import (  # noqa: E402
    FP16_TOLERANCE,
    ExportError,
    OnnxRuntimeNetwork,
    export_onnx,
    onnx_metadata,
)
from lkdn.images import read_image  # noqa: E402
from lkdn.loading import load_network  # noqa: E402

TINY = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2}


def _script():
    return load_script("scripts/export_onnx.py")


@pytest.fixture(scope="module")
def lkdn_x4() -> torch.nn.Module:
    opt, _, _, _ = OFFICIAL_LKDN["LKDN_x4"]
    return load_network(build_network(opt), shared_file("pretrained", "LKDN", "LKDN_x4.pth")).eval()


@pytest.fixture(scope="module")
def lkdn_x4_onnx(lkdn_x4: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "LKDN_x4.onnx"
    image = read_image(shared_file("benchmarks", "Set5", "x4", "LR", "butterfly.png"))
    report = export_onnx(lkdn_x4, path, check_images=[("butterfly", image)])
    assert [c.name for c in report.checks] == ["random", "butterfly"]
    assert all(c.max_abs <= 1e-4 for c in report.checks), report.summary()
    return path


def test_lkdn_x4_set5_psnr_through_onnxruntime_equals_pytorch(lkdn_x4: torch.nn.Module, lkdn_x4_onnx: Path) -> None:
    root = shared_file("benchmarks", "Set5", "x4")
    ours = evaluate_folder(lkdn_x4, root / "HR", root / "LR", scale=4)
    onnx = evaluate_folder(OnnxRuntimeNetwork(lkdn_x4_onnx, threads=2), root / "HR", root / "LR", scale=4)
    assert sorted(onnx) == sorted(ours) and len(ours) == 5
    for name in ours:
        assert abs(onnx[name]["psnr"] - ours[name]["psnr"]) <= 0.01, name
    mean = np.mean([m["psnr"] for m in onnx.values()])
    assert abs(mean - OFFICIAL_LKDN["LKDN_x4"][2]) <= 0.01


def test_dynamic_shapes_one_file(lkdn_x4: torch.nn.Module, lkdn_x4_onnx: Path) -> None:
    runtime = OnnxRuntimeNetwork(lkdn_x4_onnx, threads=2)
    for shape in ((1, 3, 20, 33), (3, 3, 41, 17)):
        x = torch.rand(*shape)
        got = runtime(x)
        assert got.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
        with torch.no_grad():
            torch.testing.assert_close(got, lkdn_x4(x), atol=1e-4, rtol=0)


def test_lkdn_s_training_form_exported_by_the_script(tmp_path: Path) -> None:
    opt, _, _, _ = OFFICIAL_LKDN["LKDN-S_x4"]
    weights = shared_file("pretrained", "LKDN", "LKDN-S_x4.pth")
    yml = tmp_path / "lkdn_s.yml"
    yml.write_text(json.dumps({"name": "t", "scale": 4, "network_g": opt, "path": {"pretrain_network_g": str(weights)}}))
    output = tmp_path / "out" / "LKDN-S_x4.onnx"
    image = shared_file("benchmarks", "Set5", "x4", "LR", "butterfly.png")
    assert _script().main(["-opt", str(yml), "--output", str(output), "--check-image", str(image)]) == 0
    meta = onnx_metadata(output)
    assert json.loads(meta["network_g"]) == {
        "type": "LKDN_S", "conv": "BSConvU", "upsampler": "pixelshuffledirect", "num_in": 1, "upscale": 4,
    }
    assert meta["scale"] == "4" and meta["precision"] == "float32"
    train_form = load_network(build_network(opt), weights).eval()  # RBSB + pixelshuffle_rep, num_in 4
    x = torch.rand(1, 3, 27, 30)
    with torch.no_grad():
        torch.testing.assert_close(OnnxRuntimeNetwork(output, threads=2)(x), train_form(x), atol=1e-4, rtol=0)
    assert [p.name for p in output.parent.iterdir()] == ["LKDN-S_x4.onnx"]  # no temporary file left


def test_fp16_export_is_mixed_precision_and_within_tolerance(tmp_path: Path) -> None:
    opt, _, _, _ = OFFICIAL_LKDN["LKDN-S_x4"]
    net = load_network(build_network(opt), shared_file("pretrained", "LKDN", "LKDN-S_x4.pth")).eval()
    report = export_onnx(net, tmp_path / "s16.onnx", fp16=True, size=(16, 16))
    assert report.dtype == "float16" and report.tolerance == FP16_TOLERANCE
    runtime = OnnxRuntimeNetwork(tmp_path / "s16.onnx", threads=2)
    assert runtime.input_dtype == np.float16
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert (runtime(x) - net(x)).abs().max() <= FP16_TOLERANCE


def test_static_export_fixes_the_shape(tmp_path: Path) -> None:
    net = build_network(TINY).train()
    small = np.random.default_rng(0).integers(0, 256, (6, 17, 3), dtype=np.uint8)  # mirrored to 12 rows, cropped to 10
    report = export_onnx(net, tmp_path / "static.onnx", dynamic=False, size=(12, 10), check_images=[("small", small)])
    assert [(c.name, c.shape) for c in report.checks] == [("random", (1, 3, 12, 10)), ("small", (1, 3, 12, 10))]
    assert net.training  # the caller's network keeps its mode
    runtime = OnnxRuntimeNetwork(tmp_path / "static.onnx", threads=1)
    assert runtime.session.get_inputs()[0].shape == [1, 3, 12, 10]
    assert runtime(torch.rand(1, 3, 12, 10)).shape == (1, 3, 24, 20)


def test_refusal_writes_nothing(tmp_path: Path) -> None:
    net = build_network(TINY).eval()
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous file")
    with pytest.raises(ExportError, match="(?s)refusing to write .*model.onnx.*> tolerance 0.0e\\+00"):
        export_onnx(net, target, tolerance=0.0)
    tampered = build_network(TINY).eval()
    tampered.load_state_dict(net.state_dict())
    with torch.no_grad():
        tampered.upsampler[0].bias.add_(1e-3)
    with pytest.raises(ExportError, match="refusing to write"):
        export_onnx(net, target, reference=tampered)
    assert target.read_bytes() == b"previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    fresh = tmp_path / "new.onnx"
    with pytest.raises(ExportError):
        export_onnx(net, fresh, tolerance=0.0)
    assert not fresh.exists()


def test_script_refuses_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lkdn.checkpoint import save_file

    weights = save_file({"params": build_network(TINY).state_dict()}, tmp_path / "tiny.pth")
    yml = tmp_path / "tiny.yml"
    yml.write_text(json.dumps({"name": "t", "network_g": TINY, "path": {"pretrain_network_g": str(weights)}}))
    output = tmp_path / "tiny.onnx"
    assert _script().main(["-opt", str(yml), "--output", str(output), "--tolerance", "0"]) == 1
    assert "refusing to write" in capsys.readouterr().err
    assert not output.exists()
