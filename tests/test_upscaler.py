"""lkdn.Upscaler, lkdn.upscaler and the networks' own inference paths: the optimized output equals
the reference forward (autograd on: out-of-place ops, concatenated trunk; what the official code
runs) within 1e-4 for every registered architecture of ours, official checkpoints through
from_config, self-describing safetensors through from_checkpoint, tiling / self-ensemble
passthrough, and the safety net that drops a fold which changes the output."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from conftest import ROOT, shared_file

import lkdn
from lkdn import Upscaler, build_network, upscaler
from lkdn.archs import our_architectures
from lkdn.checkpoint import CheckpointError, save_file
from lkdn.images import run_network
from lkdn.loading import load_network_from_options, save_network_file
from lkdn.options import load_options
from lkdn.upscaler import optimize_network

TOLERANCE = 1e-4
EXTRA_VARIANTS = [
    ("LKDN_S", {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "num_in": 4}),  # LKDN-S training form
]
# Every architecture of ours in its contract's test configuration and variants.
CASES = [
    (name, {**entry.test_options, **variant})
    for name, entry in our_architectures().items() for variant in ({}, *entry.test_variants)
] + [(name, {**our_architectures()[name].test_options, **extra}) for name, extra in EXTRA_VARIANTS]


def case_id(case: tuple[str, dict]) -> str:
    name, extra = case
    small = our_architectures()[name].test_options
    return name + "".join(f"-{k}={v}" for k, v in extra.items() if k not in small)


@torch.no_grad()
def randomize(net: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter and BatchNorm statistic so that no branch is trivially zero or identity."""
    generator = torch.Generator().manual_seed(1)
    for p in net.parameters():
        p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    for name, buffer in net.named_buffers():
        if name.endswith("running_var"):
            buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
        elif name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return net


def eager(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference forward: autograd on, so every block runs its out-of-place ops (the official code's)."""
    with torch.enable_grad():
        return net.eval()(x.clone().requires_grad_(True)).detach()


def test_upscaler_is_exported() -> None:
    assert lkdn.Upscaler is Upscaler


def test_every_network_of_ours_has_a_case() -> None:
    assert {name for name, _ in CASES} == set(our_architectures())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_inference_path_of_every_network_equals_its_reference(case: tuple[str, dict]) -> None:
    """In inference the networks write their element-wise ops in place and skip the trunk concatenation."""
    name, options = case
    net = randomize(build_network({"type": name, **options, "upscale": 2})).eval()
    x = torch.rand(1, options.get("num_in_ch", 3), 17, 15)
    with torch.no_grad():
        fast = net(x)
    torch.testing.assert_close(fast, eager(net, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_optimized_equals_eager(case: tuple[str, dict]) -> None:
    name, options = case
    opt = {"type": name, **options, "upscale": 3}
    net = randomize(build_network(opt)).eval()
    channels = opt.get("num_in_ch", 3)
    x = torch.rand(2, channels, 23, 19)
    expected = eager(net, x)
    up = Upscaler(net, device="cpu", optimize=True)
    with torch.inference_mode():
        raw = up.network(x.contiguous(memory_format=torch.channels_last))
    assert raw.shape == expected.shape
    assert (raw - expected).abs().max().item() <= TOLERANCE
    sr = up(x)
    assert sr.dtype == torch.float32 and sr.is_contiguous()
    assert (sr - expected.clamp(0, 1)).abs().max().item() <= TOLERANCE
    assert 0.0 <= sr.min().item() and sr.max().item() <= 1.0
    assert "channels_last" in up.optimizations


def test_optimize_network_folds_and_sets_channels_last() -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2, "conv": "BSConvU_rep",
                         "upsampler": "pixelshuffle_rep"})
    applied: list[str] = []
    fast = optimize_network(net, applied=applied)
    assert applied == ["re-parameterization", "channels_last"]
    assert type(fast) is type(net) and fast.num_in == 1 and not fast.training
    assert not any(hasattr(m, "rep1x1") for m in fast.modules())  # RBSB folded
    assert fast.B1.c1_r.dw.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.num_in == 4 and type(net.B1.c1_r).__name__ == "RBSB"  # the input network is untouched


@pytest.mark.parametrize("name", ["LKDN", "BSRN"])
def test_inference_trunk_never_builds_the_block_concatenation(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"type": name, **our_architectures()[name].test_options, "num_block": 4}
    net = build_network(options).eval()
    widths: list[int] = []
    cat = torch.cat

    def recording_cat(tensors, dim=0, **kwargs):
        out = cat(tensors, dim, **kwargs)
        widths.append(out.shape[1] if out.ndim == 4 else 0)
        return out

    monkeypatch.setattr(torch, "cat", recording_cat)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        net(x)
    feat = options["num_feat"]
    assert widths and max(widths) < 4 * feat  # the blocks' own concatenations (2 * feat) only; num_in 4 is 12 channels
    widths.clear()
    with torch.enable_grad():
        net(x.requires_grad_(True))
    assert 4 * feat in widths  # with autograd on: the reference concatenation


def test_training_keeps_autograd_working() -> None:
    """With autograd on the blocks use out-of-place ops: gradients flow to the input and every parameter."""
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2})).train()
    x = torch.rand(1, 3, 11, 13, requires_grad=True)
    net(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters())


def test_a_fold_that_changes_the_output_is_dropped(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def broken(net: torch.nn.Module, **kwargs) -> torch.nn.Module:
        wrong = copy.deepcopy(net)
        with torch.no_grad():
            wrong.c2.dw.bias.add_(1.0)
        return wrong

    monkeypatch.setattr(upscaler, "reparameterize_model", broken)
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1,
                                   "conv": "BSConvU_rep"}))
    applied: list[str] = []
    with caplog.at_level(logging.WARNING, logger="lkdn.upscaler"):
        fast = optimize_network(net, applied=applied)
    assert "re-parameterization" not in applied and "re-parameterization dropped" in caplog.text
    x = torch.rand(1, 3, 9, 10)
    with torch.inference_mode():
        assert (fast(x) - eager(net, x)).abs().max().item() <= TOLERANCE


def test_pixel_norm_keeps_the_memory_format_and_trains() -> None:
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2}))
    norm = net.B1.pixel_norm
    x = torch.rand(2, 8, 9, 11)
    nchw, nhwc = norm(x), norm(x.contiguous(memory_format=torch.channels_last))
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw, nhwc, atol=1e-6, rtol=0)
    x = torch.rand(2, 3, 9, 11)
    expected = eager(net, x)
    net = net.to(memory_format=torch.channels_last).train()  # train.channels_last: no extra call needed
    out = net(x.contiguous(memory_format=torch.channels_last))
    out.mean().backward()
    assert net.B1.pixel_norm.weight.grad is not None
    assert (out.detach() - expected).abs().max().item() <= TOLERANCE


def test_allocator_tuning_is_the_cpu_default_and_can_be_declined() -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1})
    available = upscaler.tune_cpu_allocator()  # True with glibc; False where mallopt is missing
    assert ("tuned CPU allocator" in Upscaler(net, device="cpu").optimizations) == available
    assert "tuned CPU allocator" not in Upscaler(net, device="cpu", tune_allocator=False).optimizations
    assert "tuned CPU allocator" not in Upscaler(net, device="cpu", optimize=False).optimizations


def test_tiling_and_self_ensemble_pass_through() -> None:
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2}))
    up = Upscaler(net, device="cpu")
    x = torch.rand(1, 3, 30, 26)
    whole = up(x)
    assert up.tile_pad == 3 + 12 * 1  # LKDN's receptive radius: tiles are exact
    assert (up(x, tile=12) - whole).abs().max().item() <= TOLERANCE
    ensemble = run_network(net.eval(), x, self_ensemble=True).clamp(0, 1)
    assert (up(x, self_ensemble=True) - ensemble).abs().max().item() <= TOLERANCE
    assert (Upscaler(net, device="cpu", tile=10, self_ensemble=True)(x) - ensemble).abs().max().item() <= TOLERANCE


def test_upscale_image_keeps_the_image_kind() -> None:
    import numpy as np

    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2})
    up = Upscaler(net, device="cpu")
    image = (np.random.default_rng(0).random((7, 9, 4)) * 255).astype(np.uint8)
    out = up.upscale_image(image)
    assert out.shape == (14, 18, 4) and out.dtype == np.uint8


def test_bad_arguments_are_reported() -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1})
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        Upscaler(net, precision="fp8")
    up = Upscaler(net, device="cpu", optimize=False)
    assert up.optimizations == []
    with pytest.raises(ValueError, match=r"expected a float tensor of shape N,C,H,W .* got \(3, 8, 8\)"):
        up(torch.rand(3, 8, 8))


def test_bf16_autocast_is_close_on_cpu() -> None:
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1}))
    x = torch.rand(1, 3, 12, 12)
    fp32 = Upscaler(net, device="cpu")(x)
    bf16 = Upscaler(net, device="cpu", precision="bf16")(x)
    assert bf16.dtype == torch.float32
    assert 0 < (bf16 - fp32).abs().max().item() < 0.05  # bf16 changes results, a little


# --- official checkpoints --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "weights"),
    [("test_LKDN_x4.yml", "LKDN_x4.pth"), ("test_LKDN-S_x4.yml", "LKDN-S_x4.pth")],
    ids=["LKDN_x4", "LKDN-S_x4-training-form"],
)
def test_from_config_with_official_weights_reproduces_eager(config: str, weights: str) -> None:
    path = shared_file("pretrained", "LKDN", weights)
    yml = ROOT / "options" / "test" / "LKDN" / config
    up = Upscaler.from_config(yml, weights=path, device="cpu")
    assert up.scale == 4
    reference = load_network_from_options(load_options(yml), weights=path)
    x = torch.rand(1, 3, 40, 36)
    expected = eager(reference, x).clamp(0, 1)
    assert (up(x) - expected).abs().max().item() <= TOLERANCE
    if "LKDN-S" in config:  # the training form was folded
        assert "re-parameterization" in up.optimizations


def test_from_config_without_weights_names_the_key(tmp_path: Path) -> None:
    yml = tmp_path / "x.yml"
    yml.write_text("name: x\nnetwork_g:\n  type: LKDN\n  num_feat: 8\n  num_atten: 8\n  num_block: 1\n")
    with pytest.raises(ValueError, match=r"x\.yml: .*path\.pretrain_network_g"):
        Upscaler.from_config(yml)


def test_the_val_keys_mean_the_same_through_every_path(tmp_path: Path) -> None:
    """val.optimize, val.tile and val.self_ensemble reach the Upscaler through from_config as through
    lkdn/test.py (both are Upscaler.from_options); an argument replaces its option, None keeps it."""
    net = build_network({"type": "VDSR", "num_feat": 8, "num_layer": 3, "upscale": 2})
    weights = tmp_path / "w.pth"
    torch.save({"params": net.state_dict()}, weights)
    yml = tmp_path / "x.yml"
    yml.write_text(f"name: x\nscale: 2\nnum_gpu: 0\nnetwork_g:\n  type: VDSR\n  num_feat: 8\n  num_layer: 3\n"
                   f"  upscale: 2\npath:\n  pretrain_network_g: {weights}\n"
                   "val:\n  optimize: false\n  self_ensemble: true\n  tile:\n    size: 24\n    pad: 3\n")
    up = Upscaler.from_config(yml)
    assert (up.tile, up.tile_pad, up.self_ensemble, up.optimizations, up.device.type) == (24, 3, True, [], "cpu")
    up = Upscaler.from_config(yml, tile=0, tile_pad=5, self_ensemble=False, optimize=True)
    assert (up.tile, up.tile_pad, up.self_ensemble) == (0, 5, False)
    assert up.optimizations  # optimize=True replaced val.optimize: false
    up = Upscaler.from_options(load_options(yml, overrides=["val.tile.size=16"]))
    assert (up.tile, up.tile_pad, up.self_ensemble) == (16, 3, True)
    with pytest.raises(ValueError, match="tile_pad must be a non-negative number of LR pixels, got -1"):
        Upscaler.from_config(yml, tile_pad=-1)


# --- self-describing safetensors -------------------------------------------------------------


def test_from_checkpoint_round_trip(tmp_path: Path) -> None:
    options = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 2, "upscale": 3,
               "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}
    net = randomize(build_network(options)).eval()
    path = save_network_file(net.state_dict(), tmp_path / "tiny.safetensors", options)
    up = Upscaler.from_checkpoint(path, device="cpu")
    assert up.scale == 3
    x = torch.rand(1, 3, 15, 17)
    assert (up(x) - eager(net, x).clamp(0, 1)).abs().max().item() <= TOLERANCE


def test_from_checkpoint_without_metadata_is_a_clear_error(tmp_path: Path) -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1})
    bare = save_file(net.state_dict(), tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match=r"bare\.safetensors: no lkdn metadata .*Upscaler\.from_config"):
        Upscaler.from_checkpoint(bare)
    pth = save_file({"params": net.state_dict()}, tmp_path / "net.pth")
    with pytest.raises(CheckpointError, match=r"net\.pth: no lkdn metadata"):
        Upscaler.from_checkpoint(pth)


def test_fp16_keeps_the_overflow_prone_stages_in_float32() -> None:
    """LKDN's attention stage exceeds float16's range (official weights: ~1e11); under fp16 autocast the
    contract's fp32_stages run in float32, so the output stays finite and near the float32 one."""
    torch.manual_seed(0)
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2}).eval()
    with torch.no_grad():
        net.B1.c5.weight.mul_(3e4)  # activations of the attention stage far beyond 65504
    x = torch.rand(1, 3, 12, 13)
    reference = Upscaler(net, device="cpu")(x)
    half = Upscaler(net, device="cpu", precision="fp16")
    assert "float32 overflow-prone stages" in half.optimizations
    out = half(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0)
