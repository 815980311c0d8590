"""RFDN / E-RFDN: strict loading of the AIM checkpoint, its Set5 numbers, img_range, variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_file

from lkdn import build_network
from lkdn.evaluate import evaluate_folder
from lkdn.loading import load_network
from lkdn.options import load_yaml

E_RFDN = {"type": "RFDN", "num_feat": 50, "num_block": 4, "attention": "esa", "img_range": 255.0}


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_aim_checkpoint_loads_strictly() -> None:
    path = shared_file("pretrained", "RFDN", "RFDN_AIM.pth")
    net = load_network(build_network(E_RFDN), path, strict=True)
    ref = torch.load(path, weights_only=True)
    assert set(net.state_dict()) == set(ref)
    assert all(torch.equal(value, ref[key]) for key, value in net.state_dict().items())
    assert num_params(net) == 433_448


@pytest.mark.slow
def test_e_rfdn_x4_set5_psnr_ssim() -> None:
    net = load_network(build_network(E_RFDN), shared_file("pretrained", "RFDN", "RFDN_AIM.pth"))
    root = shared_file("benchmarks", "Set5", "x4")
    per_image = evaluate_folder(net, root / "HR", root / "LR", scale=4)
    assert len(per_image) == 5
    assert abs(np.mean([m["psnr"] for m in per_image.values()]) - 32.16) <= 0.01
    assert abs(np.mean([m["ssim"] for m in per_image.values()]) - 0.8946) <= 0.0005


def test_test_config_builds_the_checkpoint_network() -> None:
    opt = load_yaml("options/test/RFDN/test_E-RFDN_x4.yml")
    assert {k: opt["network_g"][k] for k in E_RFDN} == E_RFDN


def test_img_range_scales_input_and_output_only() -> None:
    small = {"type": "RFDN", "num_feat": 16, "num_block": 2, "upscale": 2}
    net255 = build_network(small | {"img_range": 255.0}).eval()
    net1 = build_network(small).eval()
    net1.load_state_dict(net255.state_dict())
    x = torch.rand(1, 3, 17, 16, dtype=torch.float64)
    net1.double(), net255.double()
    torch.testing.assert_close(net255(x), net1(x * 255) / 255)


@pytest.mark.parametrize(
    ("num_feat", "counts"), [(48, (534_036, 540_531, 549_624)), (52, (625_962, 632_997, 642_846))]
)
def test_paper_rfdn_and_rfdn_l_parameter_counts(num_feat: int, counts: tuple[int, int, int]) -> None:
    """CCA with reduction 4 gives the paper's counts: RFDN 534K/541K/550K, RFDN-L 626K/633K/643K."""
    for scale, count in zip((2, 3, 4), counts, strict=True):
        opt = {"type": "RFDN", "num_feat": num_feat, "num_block": 6, "attention": "cca", "upscale": scale}
        assert num_params(build_network(opt)) == count


def test_attention_choice_names_the_keys() -> None:
    cca = build_network({"type": "RFDN", "num_feat": 16, "num_block": 1, "attention": "cca"}).state_dict()
    assert "B1.cca.conv_du.0.weight" in cca and not any(".esa." in k for k in cca)
    with pytest.raises(ValueError, match="unknown attention 'se'; valid values: esa, cca"):
        build_network({"type": "RFDN", "attention": "se"})
    with pytest.raises(ValueError, match="img_range must be positive"):
        build_network({"type": "RFDN", "img_range": 0})
