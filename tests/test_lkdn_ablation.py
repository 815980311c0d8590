"""LKDN ablation switches: defaults are the official network; each switch changes only its part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import shared_file
from torch import nn

from lkdn import build_network
from lkdn.archs.attention import CCA, ESA, ESACCA, LKA
from lkdn.archs.bsconv import BSConvU
from lkdn.loading import load_network

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"type": "LKDN", "num_feat": 16, "num_atten": 16, "num_block": 2, "upscale": 2}


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_official_checkpoint_loads_with_the_switches_spelled_out() -> None:
    opt = {"type": "LKDN", "attention": "lka", "conv": "BSConvU", "num_in": 4}
    load_network(build_network(opt), shared_file("pretrained", "LKDN", "LKDN_x4.pth"), strict=True)


@pytest.mark.parametrize(
    ("change", "count"),
    [({}, 321_992), ({"attention": "none"}, 273_160), ({"attention": "esa_cca"}, 301_856), ({"num_in": 1}, 321_488),
     ({"conv": "BSConvU_idt"}, 321_992), ({"conv": "BSConvU_rep"}, 324_680)],
)
def test_parameter_counts_of_the_ablations(change: dict, count: int) -> None:
    assert num_params(build_network({"type": "LKDN"} | change)) == count


def test_attention_none_is_the_identity() -> None:
    net = build_network(SMALL | {"attention": "none"}).eval()
    block = net.B1
    assert isinstance(block.atten, nn.Identity)
    x = torch.randn(1, 16, 9, 8)
    act = block.act
    d1, r1 = act(block.c1_d(x)), act(block.c1_r(x))
    d2, r2 = act(block.c2_d(r1)), act(block.c2_r(r1))
    d3, r3 = act(block.c3_d(r2)), act(block.c3_r(r2))
    fused = block.c6(block.c5(torch.cat([d1, d2, d3, act(block.c4(r3))], dim=1)))
    torch.testing.assert_close(block(x), block.pixel_norm(fused) + x)


def test_esa_cca_is_bsrns_pair() -> None:
    net = build_network(SMALL | {"attention": "esa_cca"})
    atten = net.B2.atten
    assert isinstance(atten, ESACCA) and isinstance(atten.esa, ESA) and isinstance(atten.cca, CCA)
    assert isinstance(atten.esa.conv3, BSConvU) and isinstance(atten.esa.act, nn.GELU)
    assert "B1.atten.esa.conv2.dw.weight" in net.state_dict() and "B1.atten.cca.conv_du.2.bias" in net.state_dict()
    x = torch.randn(1, 16, 17, 15)
    torch.testing.assert_close(atten(x), atten.cca(atten.esa(x)))
    assert isinstance(build_network(SMALL).B1.atten, LKA)


def test_bsconvu_idt_adds_the_identity() -> None:
    plain = build_network(SMALL)
    idt = build_network(SMALL | {"conv": "BSConvU_idt"})
    idt.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 16, 7, 9)
    torch.testing.assert_close(idt.B1.c2_r(x), plain.B1.c2_r(x) + x)


def test_unknown_attention_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown attention 'LKA'; valid values: lka, none, esa_cca"):
        build_network({"type": "LKDN_S", "attention": "LKA"})


ABLATIONS = {
    "num_in1": ({"network_g", "name"}, {("network_g", "num_in"): 1}),
    "adam": ({"train", "name"}, {("train", "optim_g", "type"): "Adam"}),
    "l2": ({"train", "name"}, {("train", "pixel_opt", "type"): "MSELoss"}),
    "no_lka": ({"network_g", "name"}, {("network_g", "attention"): "none"}),
    "esa_cca": ({"network_g", "name"}, {("network_g", "attention"): "esa_cca"}),
    "bsconvu_idt": ({"network_g", "name"}, {("network_g", "conv"): "BSConvU_idt"}),
    "rbsb": ({"network_g", "name"}, {("network_g", "conv"): "BSConvU_rep"}),
}


@pytest.mark.parametrize("key", sorted(ABLATIONS))
def test_each_ablation_config_changes_one_factor_of_the_baseline(key: str) -> None:
    base = yaml.safe_load((ROOT / "options/train/LKDN/train_LKDN_x4.yml").read_text())
    opt = yaml.safe_load((ROOT / f"options/train/LKDN/ablation/train_LKDN_ablation_{key}_x4.yml").read_text())
    sections, values = ABLATIONS[key]
    assert {k for k in base.keys() | opt.keys() if base.get(k) != opt.get(k)} == sections
    for path, value in values.items():
        node = opt
        for part in path:
            node = node[part]
        assert node == value
    if "network_g" in sections:
        changed = {k for k in base["network_g"].keys() | opt["network_g"].keys()
                   if base["network_g"].get(k) != opt["network_g"].get(k)}
        assert len(changed) == 1


def test_every_ablation_has_a_config() -> None:
    found = {p.name for p in (ROOT / "options/train/LKDN/ablation").glob("*.yml")}
    assert found == {f"train_LKDN_ablation_{key}_x4.yml" for key in ABLATIONS}
