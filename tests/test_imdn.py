"""IMDN: the paper's parameter counts and the progressive-refinement block computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lkdn import build_network
from lkdn.archs.imdn_arch import IMDB


@pytest.mark.parametrize(("scale", "count"), [(2, 694_404), (3, 703_059), (4, 715_176)])
def test_paper_parameter_counts(scale: int, count: int) -> None:
    """Hui et al. 2019, Table: IMDN has 694K / 703K / 715K parameters at x2 / x3 / x4."""
    net = build_network({"type": "IMDN", "upscale": scale})
    assert sum(p.numel() for p in net.parameters()) == count
    assert [name for name, _ in net.named_children()][:7] == ["fea_conv"] + [f"IMDB{i}" for i in range(1, 7)]


def test_block_keeps_a_quarter_and_refines_the_rest() -> None:
    block = IMDB(32).eval()
    assert (block.dc, block.rc) == (8, 24)
    assert block.c2.in_channels == block.c3.in_channels == block.c4.in_channels == 24
    assert block.c4.out_channels == 8 and block.cca.conv_du[0].in_channels == 32

    x = torch.randn(2, 32, 9, 11)
    act = lambda t: F.leaky_relu(t, 0.05)  # noqa: E731
    out1 = act(block.c1(x))
    out2 = act(block.c2(out1[:, 8:]))
    out3 = act(block.c3(out2[:, 8:]))
    out4 = block.c4(out3[:, 8:])
    distilled = torch.cat([out1[:, :8], out2[:, :8], out3[:, :8], out4], dim=1)
    mean = distilled.mean(dim=(2, 3), keepdim=True)
    contrast = (distilled - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt() + mean
    expected = block.c5(distilled * block.cca.conv_du(contrast)) + x
    torch.testing.assert_close(block(x), expected)


def test_bad_distillation_rate_is_reported() -> None:
    with pytest.raises(ValueError, match="distillation_rate 0.01 leaves no distilled or remaining channels of 16"):
        build_network({"type": "IMDN", "num_feat": 16, "distillation_rate": 0.01})
