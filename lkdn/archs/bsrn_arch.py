"""BSRN: Blueprint Separable Residual Network (Li et al., CVPR workshops 2022).

Reference: "Blueprint Separable Residual Network for Efficient Image Super-Resolution",
https://arxiv.org/abs/2205.05996 ; official code github.com/xiaom233/BSRN (MIT). State-dict
keys match the official checkpoints: ``fea_conv``, ``B1..Bn`` (ESDB), ``c1``, ``c2``,
``upsampler.upsampleOneStep.0``. LKDN builds on this network (same trunk, LKDB for ESDB).
"""

from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from lkdn.archs.attention import CCA, ESA
from lkdn.archs.bsconv import BSConvU, conv_type
from lkdn.archs.distillation import DistillationBody
from lkdn.archs.trunk import BlueprintTrunk
from lkdn.archs.upsamplers import PixelShuffleDirect


class ESDB(DistillationBody):
    """Efficient separable distillation block.

    Three steps of a 1x1 distillation conv and a residual ``conv`` (``act(conv(r) + r)``), a
    BSConvU on the last remaining features, 1x1 fusion, ESA (BSConvU convs, GELU), CCA, and the
    block input added. GELU (exact) after every distillation conv.

    Args:
        channels: input and output channels (``dc = channels // 2``, ``rc = channels``).
        conv: class of the 3x3 remaining-branch convs (BSConvU in the official model).
    """

    def __init__(self, channels: int, *, conv: type[nn.Module] = BSConvU) -> None:
        super().__init__(channels, conv=conv, c4_conv=BSConvU, act=nn.GELU())
        self.esa = ESA(channels, conv=BSConvU, act=nn.GELU)
        self.cca = CCA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cca(self.esa(self.distill(x))) + x


class UpsampleOneStep(nn.Module):
    """BSRN's ``pixelshuffledirect``: one 3x3 conv and a PixelShuffle under the official key
    ``upsampleOneStep`` (keys ``upsampleOneStep.0.*``).

    Args:
        num_feat: input channels.
        num_out_ch: output image channels.
        scale: upscaling factor.
    """

    def __init__(self, num_feat: int, num_out_ch: int, scale: int) -> None:
        super().__init__()
        self.upsampleOneStep = PixelShuffleDirect(num_feat, num_out_ch, scale)  # noqa: N815 (official key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


@ARCH_REGISTRY.register()
class BSRN(BlueprintTrunk):
    """Blueprint Separable Residual Network.

    Args:
        num_in_ch: input image channels.
        num_feat: feature channels.
        num_block: number of ESDBs (keys ``B1..B{num_block}``).
        num_out_ch: output image channels.
        upscale: upscaling factor.
        num_in: how many times the input is replicated along channels (official: 4).
        conv: remaining-branch conv of the ESDBs (``BSConvU`` official; ``BSConvU_rep``,
            ``BSConvU_idt`` as in LKDN's ablations).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 64, num_block: int = 8, num_out_ch: int = 3, upscale: int = 4,
        num_in: int = 4, conv: str = "BSConvU",
    ) -> None:
        super().__init__()
        block_conv = conv_type(conv)
        self.build_trunk(
            num_in_ch=num_in_ch, num_in=num_in, num_feat=num_feat, num_block=num_block, upscale=upscale,
            make_block=lambda: ESDB(num_feat, conv=block_conv),
        )
        self.upsampler = UpsampleOneStep(num_feat, num_out_ch, upscale)
