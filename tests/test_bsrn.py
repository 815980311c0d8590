"""BSRN: official parameter counts, strict loading of the three checkpoints, Set5 numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_file

from lkdn import build_network
from lkdn.evaluate import evaluate_folder
from lkdn.loading import load_network

# scale -> (parameters, Set5 PSNR, Set5 SSIM), DESIGN section 4
OFFICIAL = {4: (352_400, 32.35, 0.8965), 3: (340_283, 34.45, 0.9276), 2: (331_628, 38.08, 0.9608)}


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("scale", sorted(OFFICIAL))
def test_official_parameter_counts(scale: int) -> None:
    assert num_params(build_network({"type": "BSRN", "upscale": scale})) == OFFICIAL[scale][0]


@pytest.mark.parametrize("scale", sorted(OFFICIAL))
def test_official_checkpoints_load_strictly(scale: int) -> None:
    path = shared_file("pretrained", "BSRN", f"BSRN_x{scale}.pth")
    net = load_network(build_network({"type": "BSRN", "upscale": scale}), path, param_key="params", strict=True)
    ref = torch.load(path, weights_only=True)["params"]
    assert set(net.state_dict()) == set(ref)
    assert all(torch.equal(value, ref[key]) for key, value in net.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("scale", sorted(OFFICIAL))
def test_set5_psnr_ssim(scale: int) -> None:
    _, psnr, ssim = OFFICIAL[scale]
    net = load_network(
        build_network({"type": "BSRN", "upscale": scale}), shared_file("pretrained", "BSRN", f"BSRN_x{scale}.pth")
    )
    root = shared_file("benchmarks", "Set5", f"x{scale}")
    per_image = evaluate_folder(net, root / "HR", root / "LR", scale=scale)
    assert len(per_image) == 5
    assert abs(np.mean([m["psnr"] for m in per_image.values()]) - psnr) <= 0.01
    assert abs(np.mean([m["ssim"] for m in per_image.values()]) - ssim) <= 0.0005


def test_esdb_uses_bsconv_esa_with_gelu_and_cca() -> None:
    net = build_network({"type": "BSRN", "num_feat": 32, "num_block": 1})
    esa = net.B1.esa
    assert type(esa.conv2).__name__ == "BSConvU" and esa.conv2.dw.stride == (2, 2) and esa.conv2.dw.padding == (0, 0)
    assert isinstance(esa.act, torch.nn.GELU) and esa.act.approximate == "none"
    assert net.B1.cca.conv_du[0].out_channels == 2  # 32 // 16
    assert "upsampler.upsampleOneStep.0.weight" in net.state_dict()


def test_num_in_replicates_the_input() -> None:
    net = build_network({"type": "BSRN", "num_feat": 16, "num_block": 1, "num_in": 2, "upscale": 2}).eval()
    assert net.fea_conv.pw.in_channels == 6
    x = torch.rand(1, 3, 16, 16)
    fea = net.fea_conv(torch.cat([x, x], dim=1))
    manual = net.upsampler(net.c2(net.GELU(net.c1(net.B1(fea)))) + fea)
    torch.testing.assert_close(net(x), manual)
