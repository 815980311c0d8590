"""Every network of ours in ARCH_REGISTRY: output shapes at x2/x3/x4 on odd sizes, gradients
reach every parameter, no NaN; every YAML under options/ of our architectures builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.options import load_yaml

ROOT = Path(__file__).resolve().parents[1]

# Small options per registered name; every registered network of ours needs an entry here.
# CCA squeezes to channels // 16 (RFDN: // 4) behind a ReLU: enough channels that none is dead.
SMALL = {
    "LKDN": {"num_feat": 8, "num_atten": 8, "num_block": 2},
    "LKDN_S": {"num_feat": 8, "num_atten": 8, "num_block": 2},
    "RFDN": {"num_feat": 32, "num_block": 2},
    "BSRN": {"num_feat": 64, "num_block": 2},
    "IMDN": {"num_feat": 32, "num_block": 2},
    "RepSR": {"num_feat": 8, "num_block": 2},
    "VDSR": {"num_in_ch": 3, "num_feat": 8, "num_layer": 4},
}
# Non-default forms worth the same checks: (registered name, extra options).
VARIANTS = [
    ("LKDN", {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}),
    ("LKDN", {"conv": "BSConvU_idt", "attention": "esa_cca", "num_atten": 16}),
    ("LKDN_S", {"attention": "none", "num_in": 1}),
    ("RFDN", {"attention": "cca", "img_range": 255.0}),
    ("BSRN", {"conv": "BSConvU_rep", "num_in": 1}),
    ("RepSR", {"deploy": True}),
    ("VDSR", {"num_in_ch": 1}),
]
CASES = [(name, {}) for name in sorted(SMALL)] + VARIANTS


def our_networks() -> list[str]:
    return sorted(name for name, obj in ARCH_REGISTRY._obj_map.items() if obj.__module__.startswith("lkdn."))


def case_id(case: tuple[str, dict]) -> str:
    name, extra = case
    return name + "".join(f"-{k}={v}" for k, v in extra.items())


def test_every_registered_network_has_small_options() -> None:
    assert our_networks() == sorted(SMALL)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_shape_backward_and_finite(case: tuple[str, dict], scale: int, device: torch.device) -> None:
    name, extra = case
    opt = {"type": name, **SMALL[name], **extra, "upscale": scale}
    net = build_network(opt).to(device).train()
    channels = opt.get("num_in_ch", 3)
    x = torch.rand(2, channels, 23, 21, device=device)
    out = net(x)
    assert out.shape == (2, channels, 23 * scale, 21 * scale)
    assert torch.isfinite(out).all()
    (out - 0.5).abs().mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    bad = [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


OUR_CONFIG_DIRS = [
    "options/test/RFDN", "options/test/BSRN", "options/train/RFDN", "options/train/BSRN", "options/train/IMDN",
    "options/train/RepSR", "options/train/VDSR", "options/train/LKDN/ablation",
]
OUR_CONFIGS = sorted(p for d in OUR_CONFIG_DIRS for p in (ROOT / d).glob("*.yml"))


def test_config_folders_are_not_empty() -> None:
    for folder in OUR_CONFIG_DIRS:
        assert list((ROOT / folder).glob("*.yml")), f"no YAML in {folder}"


@pytest.mark.parametrize("path", OUR_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses_and_builds(path: Path) -> None:
    opt = load_yaml(path)
    net = build_network(opt["network_g"])
    assert net.upscale == opt["network_g"]["upscale"] == opt["scale"]
