"""Every network of ours in ARCH_REGISTRY: output shapes at x2/x3/x4 on odd sizes, gradients
reach every parameter, no NaN; every YAML under options/ of our architectures builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.archs import our_architectures
from lkdn.options import load_options

ROOT = Path(__file__).resolve().parents[1]

# Every architecture of ours in its contract's small test configuration and declared variants
# (lkdn.archs.contract: test_options default to the class's own defaults).
CASES = [
    (name, {**entry.test_options, **variant})
    for name, entry in sorted(our_architectures().items()) for variant in ({}, *entry.test_variants)
]


def case_id(case: tuple[str, dict]) -> str:
    name, extra = case
    return name + "".join(f"-{k}={v}" for k, v in extra.items())


def test_every_registered_network_of_ours_is_tested() -> None:
    ours = sorted(name for name, obj in ARCH_REGISTRY if obj.__module__.startswith("lkdn.archs."))
    assert ours and set(ours) <= {name for name, _ in CASES}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_shape_backward_and_finite(case: tuple[str, dict], scale: int, device: torch.device) -> None:
    name, options = case
    opt = {"type": name, **options, "upscale": scale}
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


CONFIGS = sorted((ROOT / "options").rglob("*.yml"))


def test_there_are_option_files() -> None:
    assert len(CONFIGS) > 20


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_option_file_validates_and_builds(path: Path) -> None:
    opt = load_options(path)
    net = build_network(opt.network_g)
    assert net.upscale == opt.network_g["upscale"] == opt.scale
