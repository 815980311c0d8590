"""RFDN / E-RFDN: Residual Feature Distillation Network (Liu, Tang, Wu, ECCV workshops 2020).

Reference: "Residual Feature Distillation Network for Lightweight Image Super-Resolution",
https://arxiv.org/abs/2009.11551 ; official code github.com/njulj/RFDN (E-RFDN, the AIM 2020
efficient SR challenge winner). State-dict keys match ``RFDN_AIM.pth``: ``fea_conv``,
``B1..Bn`` (RFDB), ``c.0``, ``LR_conv``, ``upsampler.0``.

The network takes and returns images in [0, 1]; ``img_range`` scales them inside (the AIM
checkpoint was trained on pixel values in [0, 255]: ``img_range: 255``).
"""

from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from lkdn.archs.attention import CCA, ESA
from lkdn.archs.distillation import DistillationBody
from lkdn.archs.upsamplers import PixelShuffleDirect

ATTENTIONS = ("esa", "cca")


class RFDB(DistillationBody):
    """Residual feature distillation block.

    Three steps of a 1x1 distillation conv and a shallow residual block (SRB: 3x3 conv plus
    identity), a 3x3 conv on the last remaining features, 1x1 fusion of the four distilled
    parts (:class:`~lkdn.archs.distillation.DistillationBody`), then attention. LeakyReLU
    (slope 0.05) after every distillation conv. As in the official code, the block output has
    no skip connection to its input.

    Args:
        channels: input and output channels (``dc = channels // 2``, ``rc = channels``).
        attention: ``esa`` (E-RFDN, key ``esa``) or ``cca`` (RFDN paper, key ``cca``).
        cca_reduction: channel reduction inside CCA.
    """

    def __init__(self, channels: int, *, attention: str = "esa", cca_reduction: int = 4) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid values: {', '.join(ATTENTIONS)}")
        super().__init__(channels, conv=nn.Conv2d, c4_conv=nn.Conv2d, act=nn.LeakyReLU(0.05))
        self.attention = attention
        setattr(self, attention, ESA(channels) if attention == "esa" else CCA(channels, reduction=cca_reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attention)(self.distill(x))


@ARCH_REGISTRY.register()
class RFDN(nn.Module):
    """Residual Feature Distillation Network; E-RFDN with the defaults.

    E-RFDN (AIM 2020, ``RFDN_AIM.pth``): 50 channels, 4 blocks, ESA, ``img_range: 255``.
    RFDN of the paper: 48 channels, 6 blocks, CCA; RFDN-L: 52 channels. With CCA reduction 4
    the parameter counts are the paper's (RFDN x2/x3/x4: 534K/541K/550K; RFDN-L: 626K/633K/643K).

    Args:
        num_in_ch: input image channels.
        num_feat: feature channels.
        num_block: number of RFDBs (keys ``B1..B{num_block}``).
        num_out_ch: output image channels.
        upscale: upscaling factor.
        attention: attention at the end of each RFDB: ``esa`` or ``cca``.
        cca_reduction: channel reduction of CCA (``attention: cca``).
        img_range: pixel range the weights work on; inputs in [0, 1] are multiplied by it and
            outputs divided by it, so callers always use [0, 1].
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 50, num_block: int = 4, num_out_ch: int = 3, upscale: int = 4,
        attention: str = "esa", cca_reduction: int = 4, img_range: float = 1.0,
    ) -> None:
        super().__init__()
        if img_range <= 0:
            raise ValueError(f"img_range must be positive, got {img_range}")
        self.num_block = num_block
        self.upscale = upscale
        self.img_range = float(img_range)
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(1, num_block + 1):
            setattr(self, f"B{i}", RFDB(num_feat, attention=attention, cca_reduction=cca_reduction))
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_block, num_feat, 1), nn.LeakyReLU(0.05))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)  # noqa: N815 (official key)
        self.upsampler = PixelShuffleDirect(num_feat, num_out_ch, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.img_range)
        outs, out = [], fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        trunk = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(trunk) / self.img_range
