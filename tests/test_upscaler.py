"""lkdn.Upscaler and lkdn.optimize: optimized output equals the plain eager network (1e-4) for every
registered architecture of ours, official checkpoints through from_config, self-describing
safetensors through from_checkpoint, tiling / self-ensemble passthrough, and the safety net that
drops a rewrite which changes the output."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import ROOT, shared_file

import lkdn
from lkdn import Upscaler, build_network
from lkdn import optimize as lkdn_optimize
from lkdn.inference import load_model, run_network
from lkdn.optimize import FastLKDB, FastLKDN, PixelNormNHWC, optimize_network, use_nhwc_pixel_norm
from lkdn.options import load_yaml
from lkdn.utils.checkpoint import CheckpointError, save_file, save_network_file

TOLERANCE = 1e-4

# Small options per registered network; the registry test keeps the authoritative table (every
# network of ours has an entry there), this one is the fallback when it is not importable.
try:
    from test_archs_registry import SMALL, VARIANTS
except ImportError:  # pragma: no cover (the registry test was renamed)
    SMALL, VARIANTS = {"LKDN": {"num_feat": 8, "num_atten": 8, "num_block": 2}}, []
EXTRA_VARIANTS = [
    ("LKDN_S", {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "num_in": 4}),  # LKDN-S training form
]


def our_networks() -> list[str]:
    return sorted(name for name, obj in ARCH_REGISTRY._obj_map.items() if obj.__module__.startswith("lkdn."))


CASES = [(name, SMALL.get(name, {})) for name in our_networks()] + [
    (name, {**SMALL.get(name, {}), **extra}) for name, extra in VARIANTS + EXTRA_VARIANTS if name in our_networks()
]


def case_id(case: tuple[str, dict]) -> str:
    name, extra = case
    return name + "".join(f"-{k}={v}" for k, v in extra.items() if k not in SMALL.get(name, {}))


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
    with torch.no_grad():
        return net.eval()(x)


def test_upscaler_is_exported() -> None:
    assert lkdn.Upscaler is Upscaler


def test_every_network_of_ours_has_a_case() -> None:
    assert {name for name, _ in CASES} == set(our_networks())


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


def test_lkdn_gets_every_rewrite() -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2, "conv": "BSConvU_rep",
                         "upsampler": "pixelshuffle_rep"})
    applied: list[str] = []
    fast = optimize_network(net, applied=applied)
    assert applied == ["re-parameterization", "PixelNormNHWC", "FastLKDB blocks", "FastLKDN trunk", "channels_last"]
    assert isinstance(fast, FastLKDN) and fast.num_in == 1
    assert all(isinstance(b, FastLKDB) and isinstance(b.pixel_norm, PixelNormNHWC) for b in fast.blocks)
    assert not any(hasattr(m, "rep1x1") for m in fast.modules())  # RBSB folded
    assert net.num_in == 4 and type(net.B1.c1_r).__name__ == "RBSB"  # the input network is untouched


def test_rewrites_keep_autograd_working() -> None:
    """Outside inference the fast modules use out-of-place ops: same output, gradients flow."""
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2})).eval()
    fast = optimize_network(net, channels_last=False)
    x = torch.rand(1, 3, 11, 13, requires_grad=True)
    out = fast(x)
    out.mean().backward()
    assert (out.detach() - eager(net, x.detach())).abs().max().item() <= TOLERANCE
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_rewrite_that_changes_the_output_is_dropped(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def broken(self: FastLKDN, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, x.shape[2] * self.upscale, x.shape[3] * self.upscale)

    monkeypatch.setattr(lkdn_optimize.FastLKDN, "forward", broken)
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1}))
    applied: list[str] = []
    with caplog.at_level(logging.WARNING, logger="lkdn.optimize"):
        fast = optimize_network(net, applied=applied)
    assert "FastLKDN trunk" not in applied and not isinstance(fast, FastLKDN)
    assert "FastLKDN trunk dropped" in caplog.text
    x = torch.rand(1, 3, 9, 10)
    with torch.inference_mode():
        assert (fast(x) - eager(net, x)).abs().max().item() <= TOLERANCE


def test_nhwc_pixel_norm_for_training_keeps_keys_and_function() -> None:
    net = randomize(build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 2}))
    keys = list(net.state_dict())
    x = torch.rand(2, 3, 9, 11)
    expected = eager(net, x)
    assert use_nhwc_pixel_norm(net) == 2
    assert list(net.state_dict()) == keys and isinstance(net.B2.pixel_norm, PixelNormNHWC)
    net = net.to(memory_format=torch.channels_last).train()
    out = net(x.contiguous(memory_format=torch.channels_last))
    out.mean().backward()
    assert net.B1.pixel_norm.weight.grad is not None
    assert (out.detach() - expected).abs().max().item() <= TOLERANCE


def test_allocator_tuning_is_the_cpu_default_and_can_be_declined() -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1})
    available = lkdn_optimize.tune_cpu_allocator()  # True with glibc; False where mallopt is missing
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
    reference = load_model(load_yaml(yml), weights=str(path))
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
