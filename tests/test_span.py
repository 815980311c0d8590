"""SPAN: the NTIRE 2026 baseline checkpoint reproduces its Set5 numbers, Conv3XC folds exactly, the
training form carries the official keys (spandrel's own SPAN reads it with our output), the folded
deploy form loads strictly, and the NTIRE harness counts and score are reproduced."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, shared_file
from ntire_checks import randomize, reference

from lkdn import Upscaler, build_network
from lkdn import test as test_entry
from lkdn.archs.span_arch import Conv3XC, FoldedConv3XC
from lkdn.checkpoint import save_file
from lkdn.loading import deploy_form, load_network
from lkdn.ntire import challenge_pairs, challenge_score, psnr_rgb
from lkdn.profiling import count_parameters, ntire_counts

pytestmark = pytest.mark.usefixtures("one_thread")

STD = 0.2  # random weights; std 0.05 keeps a whole SPAN's output near [0, 1]
C28_DEPLOY = {"type": "SPAN", "feature_channels": 28, "upscale": 4, "deploy": True}


def test_ntire_baseline_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    net = build_network(C28_DEPLOY)
    assert count_parameters(net) == 150_688
    load_network(net, shared_file("pretrained", "SPAN", "SPAN_NTIRE_ESR_c28_x4.pth"), strict=True)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    set5 = shared_file("benchmarks", "Set5", "x4")
    weights = shared_file("pretrained", "SPAN", "SPAN_NTIRE_ESR_c28_x4.pth")
    yml = ROOT / "options" / "test" / "SPAN" / "test_SPAN_NTIRE_ESR_c28_x4.yml"
    results = test_entry.score(["-opt", str(yml), "--root", str(tmp_path), "--force_yml", "num_gpu=0", "val:save_img=false",
                               f"datasets:test_1:dataroot_gt={set5 / 'HR'}", f"datasets:test_1:dataroot_lq={set5 / 'LR'}",
                               f"path:pretrain_network_g={weights}"])
    assert abs(results["Set5"]["psnr"] - 31.75) <= 0.01
    assert abs(results["Set5"]["ssim"] - 0.8898) <= 0.0005


@pytest.mark.parametrize(("c_in", "c_out"), [(3, 8), (8, 8), (8, 5)])
def test_every_conv3xc_folds_exactly(c_in: int, c_out: int) -> None:
    block = randomize(Conv3XC(c_in, c_out), seed=c_in * 10 + c_out, std=STD)
    for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        typed = copy.deepcopy(block).to(dtype)
        fused = typed.fuse()  # folded in the precision it runs in
        assert isinstance(fused, FoldedConv3XC) and fused.eval_conv.weight.dtype == dtype
        x = torch.rand(2, c_in, 13, 9, dtype=dtype)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), reference(typed, x), atol=tolerance, rtol=0)


def test_the_whole_network_folds_exactly_and_the_deploy_options_load_strictly() -> None:
    net = randomize(build_network({"type": "SPAN", "feature_channels": 8, "upscale": 3}).double(), std=STD)
    folded, options = deploy_form(net, {"type": "SPAN", "feature_channels": 8, "upscale": 3})
    assert options["deploy"] is True and not any(isinstance(m, Conv3XC) for m in folded.modules())
    deploy = build_network(options).double()
    deploy.load_state_dict(folded.state_dict(), strict=True)
    x = torch.rand(1, 3, 11, 14, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), reference(net, x), atol=1e-10 * 255, rtol=0)  # outputs on a 0-255 scale


def test_training_form_state_dict_has_the_official_keys_and_folded_kernels() -> None:
    net = randomize(build_network({"type": "SPAN", "feature_channels": 8}), std=STD)
    state = net.state_dict()
    assert {"conv_1.sk.weight", "conv_1.conv.1.weight", "conv_1.eval_conv.weight", "block_6.c3_r.eval_conv.bias"} <= set(state)
    weight, bias = net.conv_1.folded_kernel()
    torch.testing.assert_close(state["conv_1.eval_conv.weight"], weight, atol=0, rtol=0)
    assert count_parameters(net) == sum(v.numel() for k, v in state.items() if "eval_conv" not in k)  # buffers
    other = build_network({"type": "SPAN", "feature_channels": 8})
    other.load_state_dict(state, strict=True)  # an official-layout training checkpoint loads as it is


def test_spandrels_own_span_reads_our_training_form_with_our_output() -> None:
    """An independent implementation: spandrel's SPAN (its code) on our training-form state dict."""
    spandrel_span = pytest.importorskip("spandrel.architectures.SPAN")
    net = randomize(build_network({"type": "SPAN", "feature_channels": 12}), std=0.05)
    descriptor = spandrel_span.SPANArch().load(copy.deepcopy(net.state_dict()))
    x = torch.rand(1, 3, 17, 13)
    with torch.no_grad():
        theirs = descriptor.model.eval()(x)  # eval: re-folds into eval_conv every call
        ours = net.eval()(x)
    expected = reference(net, x)
    assert 0.5 < expected.abs().max() < 10  # outputs of about the range a trained SPAN gives
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_reparameterize_script_folds_a_training_checkpoint_into_the_deploy_form(tmp_path: Path) -> None:
    net = randomize(build_network({"type": "SPAN", "feature_channels": 8}), std=STD)
    save_file({"params": net.state_dict()}, tmp_path / "train.pth")
    yml = tmp_path / "span.yml"
    yml.write_text("name: span\nscale: 4\nnetwork_g: {type: SPAN, feature_channels: 8}\n")
    spec = importlib.util.spec_from_file_location("reparam_script", ROOT / "scripts" / "reparameterize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "deploy.pth"
    assert module.main(["-opt", str(yml), "--input", str(tmp_path / "train.pth"), "--output", str(out),
                        "--output-opt", str(tmp_path / "deploy.yml")]) == 0
    deploy = load_network(build_network({"type": "SPAN", "feature_channels": 8, "deploy": True, "upscale": 4}), out,
                          strict=True)
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), reference(net, x), atol=1e-4 * 255, rtol=1e-5)


def test_tiles_are_exact_and_the_upscaler_folds() -> None:
    net = randomize(build_network({"type": "SPAN", "feature_channels": 8, "upscale": 2}), std=0.05)
    up = Upscaler(net, device="cpu")
    assert up.tiling.exact and up.tile_pad == 21  # 20 Conv3XC and the upsampler: one pixel each
    assert "re-parameterization" in up.optimizations
    x = torch.rand(1, 3, 70, 50) * 0.2 + 0.4
    torch.testing.assert_close(up(x, tile=24), up(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(up(x), reference(net, x).clamp(0, 1), atol=1e-4, rtol=0)


# --- the NTIRE protocol ----------------------------------------------------------------------


def test_ntire_counts_match_the_harness() -> None:
    """The published results.txt of the NTIRE 2026 harness: SPAN c28 and LKDN x4."""
    pytest.importorskip("fvcore")
    span = ntire_counts(build_network(C28_DEPLOY))
    assert (span.params, span.activations, span.convs) == (150_688, 41_680_896, 22)
    assert round(span.flops / 1e9, 2) == 9.83 and round(span.activations / 1e6, 2) == 41.68
    lkdn = ntire_counts(build_network({"type": "LKDN", "upscale": 4}))
    assert (round(lkdn.flops / 1e9, 2), round(lkdn.activations / 1e6, 2), lkdn.convs) == (20.88, 417.86, 134)


def test_the_score_function_reproduces_the_2026_winner() -> None:
    spanv2 = {"runtime": 5.24, "flops": 1.59, "params": 0.139}
    span = {"runtime": 7.74, "flops": 9.83, "params": 0.151}
    assert round(challenge_score(spanv2, span, year=2026)["final"], 2) == 3.87
    assert challenge_score(span, span, year=2024)["final"] == pytest.approx(np.exp(2))  # the baseline scores e^2
    with pytest.raises(ValueError, match="no scoring rule for 2023"):
        challenge_score(spanv2, span, year=2023)


def test_rgb_psnr_is_the_harness_formula() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-3, 4, hr.shape), 0, 255).astype(np.uint8)
    mse = np.mean((sr[4:-4, 4:-4].astype(float) - hr[4:-4, 4:-4]) ** 2)
    assert psnr_rgb(sr, hr, border=4) == pytest.approx(20 * np.log10(255 / np.sqrt(mse)))


def test_ntire_script_writes_the_harness_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two tiny networks on a set in the challenge's DIV2K_LSDIR_valid layout."""
    root = tmp_path / "DIV2K_LSDIR_valid"
    (root / "DIV2K_LSDIR_valid_HR").mkdir(parents=True)
    (root / "DIV2K_LSDIR_valid_LR").mkdir()
    rng = np.random.default_rng(1)
    for name in ("0801", "0000001"):
        hr = cv2.resize(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), (28, 24), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "DIV2K_LSDIR_valid_HR" / f"{name}.png"), hr)
        cv2.imwrite(str(root / "DIV2K_LSDIR_valid_LR" / f"{name}x4.png"), cv2.resize(hr, (7, 6), interpolation=cv2.INTER_AREA))
    assert [p[0].stem for p in challenge_pairs(root)] == ["0000001", "0801"]
    ymls = []
    for name, network in (("base", "{type: SPAN, feature_channels: 4, deploy: true}"),
                          ("team", "{type: LKDN_S, num_feat: 4, num_atten: 4, num_block: 1}")):
        net = build_network(__import__("yaml").safe_load(network) | {"upscale": 4})
        save_file({"params": net.state_dict()}, tmp_path / f"{name}.pth")
        yml = tmp_path / f"{name}.yml"
        yml.write_text(f"name: {name}\nscale: 4\nnetwork_g: {network}\npath: {{pretrain_network_g: {tmp_path / name}.pth}}\n")
        ymls.append(yml)
    spec = importlib.util.spec_from_file_location("ntire_script", ROOT / "scripts" / "ntire_esr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    assert module.main(["-opt", str(ymls[1]), "--baseline", str(ymls[0]), "--dataset", str(root), "--device", "cpu",
                        "--output", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    base, team = report["rows"]
    assert (base["model"], team["model"]) == ("base", "team") and base["score"]["final"] == pytest.approx(np.exp(2))
    assert team["params_m"] == count_parameters(build_network({"type": "LKDN_S", "num_feat": 4, "num_atten": 4,
                                                                "num_block": 1})) / 1e6
    assert set(team["per_image"]["psnr"]) == {"0801", "0000001"} and team["timer"] == "wall time (CPU)"
    header = (out / "results.txt").read_text().splitlines()[0].split("\t")
    assert [h.strip() for h in header] == ["Model", "Val PSNR", "Val Time [ms]", "Params [M]", "FLOPs [G]", "Acts [M]",
                                           "Mem [M]", "Conv"]
    assert "| team |" in capsys.readouterr().out


def test_onnx_export_of_the_training_form_is_verified_by_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lkdn.export import OnnxRuntimeNetwork, export_onnx

    net = randomize(build_network({"type": "SPAN", "feature_channels": 8}), std=0.05).eval()
    report = export_onnx(net, tmp_path / "span.onnx", size=(16, 20))  # folded first; written only when verified
    assert report.checks and all(check.max_abs <= 1e-4 for check in report.checks)
    x = torch.rand(1, 3, 13, 17)
    torch.testing.assert_close(OnnxRuntimeNetwork(tmp_path / "span.onnx", threads=1)(x), reference(net, x), atol=1e-4,
                               rtol=0)


def test_official_c28_exports_to_onnx_with_the_default_tolerances(tmp_path: Path) -> None:
    """SPAN computes at 255x the image scale: on uniform noise onnxruntime differs by up to 1.6e-4."""
    pytest.importorskip("onnxruntime")
    from lkdn.export import FP32_TOLERANCE, NOISE_TOLERANCE, export_onnx

    net = build_network({"type": "SPAN", "feature_channels": 28, "deploy": True}).eval()
    load_network(net, shared_file("pretrained", "SPAN", "SPAN_NTIRE_ESR_c28_x4.pth"), strict=True)
    image = (np.random.default_rng(3).random((40, 52, 3)) * 40 + 100).astype(np.uint8)  # a smooth-ish patch
    report = export_onnx(net, tmp_path / "span.onnx", check_images=[("patch", cv2.GaussianBlur(image, (5, 5), 0))])
    checks = {c.name: c.max_abs for c in report.checks}
    assert checks["random"] <= NOISE_TOLERANCE and checks["patch"] <= FP32_TOLERANCE
    assert (tmp_path / "span.onnx").is_file()
