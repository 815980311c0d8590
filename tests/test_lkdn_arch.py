"""The LKDN family: official parameter counts, strict loading, shapes, gradients, option errors."""

from __future__ import annotations

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import OFFICIAL_LKDN, shared_file

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.loading import load_network

PARAM_COUNTS = {
    "LKDN_x4": 321_992,
    "LKDN_x3": 311_387,
    "LKDN_x2": 303_812,
    "LKDN-S_x4": 172_449,
    "LKDN-S_del_rep_x4": 129_177,
}


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_official_parameter_counts(name: str) -> None:
    opt = OFFICIAL_LKDN[name][0]
    assert num_params(build_network(opt)) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_LKDN))
def test_official_checkpoints_load_strictly(name: str) -> None:
    path = shared_file("pretrained", "LKDN", f"{name}.pth")
    net = build_network(OFFICIAL_LKDN[name][0])
    load_network(net, path, strict=True)
    ref = torch.load(path, weights_only=True)
    ref = ref.get("params_ema", ref)
    for key, value in net.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_registered_in_basicsr_registry() -> None:
    assert ARCH_REGISTRY.get("LKDN") is lkdn.archs.lkdn_arch.LKDN
    assert ARCH_REGISTRY.get("LKDN_S") is lkdn.archs.lkdn_arch.LKDN_S


def test_lkdn_s_defaults_are_the_small_variant() -> None:
    net = build_network({"type": "LKDN_S"})
    assert net.fea_conv.pw.out_channels == 42
    assert net.num_block == 5 and not hasattr(net, "B6")


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("form", ["deploy", "train", "idt"])
def test_output_shape_on_odd_sizes(scale: int, form: str, device: torch.device) -> None:
    opt = {"type": "LKDN", "num_feat": 16, "num_atten": 16, "num_block": 2, "upscale": scale}
    opt |= {"train": {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}, "idt": {"conv": "BSConvU_idt"}}.get(
        form, {}
    )
    net = build_network(opt).to(device).eval()
    out = net(torch.rand(2, 3, 17, 23, device=device))
    assert out.shape == (2, 3, 17 * scale, 23 * scale)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter_in_training_form() -> None:
    net = build_network(
        {"type": "LKDN_S", "num_feat": 12, "num_atten": 12, "num_block": 2, "conv": "BSConvU_rep",
         "upsampler": "pixelshuffle_rep", "upscale": 3}
    )
    net(torch.rand(1, 3, 13, 11)).abs().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ({"type": "LKDN", "conv": "BSConvV"}, "valid values: BSConvU, BSConvU_idt, BSConvU_rep, RBSB"),
        ({"type": "LKDN", "upsampler": "pixelshuffle"}, "valid values: pixelshuffle_rep, pixelshuffledirect"),
        ({"type": "LKDN", "num_feats": 8}, "network_g.num_feats: unknown option for LKDN; did you mean 'num_feat'?"),
        ({"type": "LKDNN"}, "network_g.type: unknown network 'LKDNN'; did you mean 'LKDN'?"),
    ],
)
def test_bad_options_name_the_key(opt: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")):
        build_network(opt)


def test_build_network_does_not_mutate_options() -> None:
    opt = {"type": "LKDN_S", "num_block": 1}
    build_network(opt)
    assert opt == {"type": "LKDN_S", "num_block": 1}
