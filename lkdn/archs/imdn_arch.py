"""IMDN: Information Multi-Distillation Network (Hui, Gao, Yang, Wang, ACM MM 2019).

Reference: "Lightweight Image Super-Resolution with Information Multi-distillation Network",
https://arxiv.org/abs/1909.11856 ; official code github.com/Zheng222/IMDN. Attribute names
follow the official code (``fea_conv``, ``IMDB1..IMDBn``, ``c.0``, ``LR_conv``,
``upsampler.0``), so the official weights ``IMDN_x2``, ``IMDN_x3`` and ``IMDN_x4``
(github.com/Zheng222/IMDN ``checkpoints/``, saved from ``nn.DataParallel`` with ``module.``
prefixes, which the loaders strip) load strictly. RFDN rethinks this network.

:class:`IMDN_AIM` is the simplified IMDN of the AIM 2019 constrained-SR challenge (its winner,
as rewritten in github.com/cszn/KAIR ``models/network_imdn.py``), the baseline of the NTIRE 2022
efficient-SR challenge (github.com/ofsoundof/NTIRE2022_ESR ``models/imdn_baseline.py``; its
checkpoint ``IMDN_NTIRE2022``: 64 channels, 8 blocks, x4). Both networks take and return images
in [0, 1] and are published only as plain convolutions (no re-parameterized training form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lkdn.archs.attention import CCA
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import count_blocks, scale_and_channels, shape
from lkdn.archs.upsamplers import PixelShuffleDirect


def split_channels(channels: int, distillation_rate: float) -> tuple[int, int]:
    """(distilled, remaining) channels of a distillation block of ``channels``; both must be at least 1."""
    distilled = int(channels * distillation_rate)
    if distilled < 1 or channels - distilled < 1:
        raise ValueError(f"distillation_rate {distillation_rate} leaves no distilled or remaining channels of {channels}")
    return distilled, channels - distilled


def distill(x: torch.Tensor, steps: Sequence[nn.Module], last: nn.Module, split: tuple[int, int],
            act: nn.Module | None = None) -> torch.Tensor:
    """Progressive distillation: each step's output (``act`` applied when given) is split into a distilled
    part (kept) and the remaining part (the next step's input); ``last`` makes the last distilled part.
    The distilled parts, concatenated."""
    distilled = []
    for step in steps:
        out = step(x)
        kept, x = torch.split(out if act is None else act(out), split, dim=1)
        distilled.append(kept)
    return torch.cat([*distilled, last(x)], dim=1)


def distillation_rate_of(distilled: int, channels: int) -> float:
    """A ``distillation_rate`` that keeps ``distilled`` of ``channels`` (float rounding: any rate in
    [distilled, distilled + 1) / channels builds the same block)."""
    rate = distilled / channels
    return rate if int(channels * rate) == distilled else (distilled + 0.5) / channels


class _Shortcut(nn.Module):
    """``x + sub(x)`` (key ``sub``): the long skip of :class:`IMDN_AIM`."""

    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class IMDB(nn.Module):
    """Information multi-distillation block (progressive refinement by channel splitting).

    Four steps: a 3x3 conv, then the output is split into a distilled part (kept,
    ``channels * distillation_rate``) and the remaining part, which the next 3x3 conv refines;
    the fourth conv produces the last distilled part. The four parts are concatenated,
    re-weighted by CCA and fused by a 1x1 conv; the block input is added. LeakyReLU (slope
    0.05) after the first three convs.

    Args:
        channels: input and output channels.
        distillation_rate: fraction of the channels kept at each step (official: 0.25).
    """

    def __init__(self, channels: int, *, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.dc, self.rc = split_channels(channels, distillation_rate)
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(self.rc, channels, 3, padding=1)
        self.c3 = nn.Conv2d(self.rc, channels, 3, padding=1)
        self.c4 = nn.Conv2d(self.rc, self.dc, 3, padding=1)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = nn.Conv2d(self.dc * 4, channels, 1)
        self.cca = CCA(self.dc * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c5(self.cca(distill(x, (self.c1, self.c2, self.c3), self.c4, (self.dc, self.rc), self.act))) + x


def imdn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: IMDN``) of an IMDN state dict."""
    num_feat, num_in_ch = shape(state, "fea_conv.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    distilled = shape(state, "IMDB1.c4.weight")[0]
    rate = distillation_rate_of(distilled, num_feat)
    return {
        "type": "IMDN", "num_in_ch": num_in_ch, "num_feat": num_feat, "num_block": count_blocks(state, "IMDB{}.c1.weight"),
        "num_out_ch": num_out_ch, "upscale": upscale, "distillation_rate": rate,
    }


# CCA squeezes to channels // 16 behind a ReLU: 32 channels keep every squeezed channel alive in tests.
@register_architecture(
    test_options={"num_feat": 32, "num_block": 2},
    spandrel=StateDictDetection(
        keys=("fea_conv.weight", "IMDB1.c1.weight", "IMDB1.c4.weight", "IMDB1.c5.weight", "IMDB1.cca.conv_du.0.weight",
              "c.0.weight", "LR_conv.weight", "upsampler.0.weight"),
        options=imdn_options_from_state,
    ),
)
class IMDN(nn.Module):
    """Information Multi-Distillation Network.

    Args:
        num_in_ch: input image channels.
        num_feat: feature channels.
        num_block: number of IMDBs (keys ``IMDB1..IMDB{num_block}``).
        num_out_ch: output image channels.
        upscale: upscaling factor.
        distillation_rate: fraction of channels each IMDB step keeps.
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 64, num_block: int = 6, num_out_ch: int = 3, upscale: int = 4,
        distillation_rate: float = 0.25,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.upscale = upscale
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(1, num_block + 1):
            setattr(self, f"IMDB{i}", IMDB(num_feat, distillation_rate=distillation_rate))
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_block, num_feat, 1), nn.LeakyReLU(0.05))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)  # noqa: N815 (official key)
        self.upsampler = PixelShuffleDirect(num_feat, num_out_ch, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, out = [], fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        trunk = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(trunk)


class IMDBAim(nn.Module):
    """The IMDB of :class:`IMDN_AIM`: :class:`IMDB` without the contrast-aware channel attention.

    Keys ``conv1.0``, ``conv2.0``, ``conv3.0`` (conv then LeakyReLU 0.05), ``conv4`` and the 1x1
    fusion ``conv1x1``; the block input is added to the fused distilled parts.

    Args:
        channels: input and output channels.
        distillation_rate: fraction of the channels kept at each step (official: 0.25).
    """

    def __init__(self, channels: int, *, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.dc, self.rc = split_channels(channels, distillation_rate)
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.05))
        self.conv2 = nn.Sequential(nn.Conv2d(self.rc, channels, 3, padding=1), nn.LeakyReLU(0.05))
        self.conv3 = nn.Sequential(nn.Conv2d(self.rc, channels, 3, padding=1), nn.LeakyReLU(0.05))
        self.conv4 = nn.Conv2d(self.rc, self.dc, 3, padding=1)
        self.conv1x1 = nn.Conv2d(self.dc * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1x1(distill(x, (self.conv1, self.conv2, self.conv3), self.conv4, (self.dc, self.rc)))


def imdn_aim_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: IMDN_AIM``) of an IMDN_AIM state dict."""
    num_feat, num_in_ch = shape(state, "model.0.weight")[:2]
    num_block = 0
    while f"model.1.sub.{num_block}.conv1.0.weight" in state:
        num_block += 1
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "model.2.weight")[0], num_in_ch)
    distilled = shape(state, "model.1.sub.0.conv4.weight")[0]
    rate = distillation_rate_of(distilled, num_feat)
    return {"type": "IMDN_AIM", "num_in_ch": num_in_ch, "num_feat": num_feat, "num_block": num_block,
            "num_out_ch": num_out_ch, "upscale": upscale, "distillation_rate": rate}


@register_architecture(
    test_options={"num_feat": 16, "num_block": 2},
    receptive_radius=conv_receptive_radius,  # stride-1 convs and per-pixel activations only
    spandrel=StateDictDetection(
        keys=("model.0.weight", "model.1.sub.0.conv1.0.weight", "model.1.sub.0.conv4.weight",
              "model.1.sub.0.conv1x1.weight", "model.2.weight"),
        only=r"model\.(0|2|1\.sub\.\d+|1\.sub\.\d+\.(conv[123]\.0|conv4|conv1x1))\.(weight|bias)",
        options=imdn_aim_options_from_state,
    ),
)
class IMDN_AIM(nn.Module):  # noqa: N801 (named after the challenge, as the checkpoints RFDN_AIM)
    """Simplified IMDN of the AIM 2019 challenge; the NTIRE 2022 efficient-SR baseline with the defaults.

    ``model.0`` (3x3 conv), ``model.1``: ``x + sub(x)`` over ``num_block`` :class:`IMDBAim` and a
    3x3 conv (``model.1.sub.{num_block}``), then ``model.2`` (3x3 conv) and a PixelShuffle. Unlike
    :class:`IMDN`, the blocks have no channel attention and only the last block's output reaches
    the trunk conv. The NTIRE 2022 baseline (``IMDN_NTIRE2022``): 64 channels, 8 blocks, 893,936
    parameters at x4.

    Args:
        num_in_ch: input image channels.
        num_feat: feature channels.
        num_block: number of blocks (keys ``model.1.sub.0..{num_block - 1}``).
        num_out_ch: output image channels.
        upscale: upscaling factor.
        distillation_rate: fraction of channels each block step keeps.
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 64, num_block: int = 8, num_out_ch: int = 3, upscale: int = 4,
        distillation_rate: float = 0.25,
    ) -> None:
        super().__init__()
        self.upscale = upscale
        body = [IMDBAim(num_feat, distillation_rate=distillation_rate) for _ in range(num_block)]
        self.model = nn.Sequential(
            nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
            _Shortcut(nn.Sequential(*body, nn.Conv2d(num_feat, num_feat, 3, padding=1))),
            nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1),
            nn.PixelShuffle(upscale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
