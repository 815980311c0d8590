"""BSRN: Blueprint Separable Residual Network (Li et al., CVPR workshops 2022).

Reference: "Blueprint Separable Residual Network for Efficient Image Super-Resolution",
https://arxiv.org/abs/2205.05996 ; official code github.com/xiaom233/BSRN (MIT). State-dict
keys match the official checkpoints: ``fea_conv``, ``B1..Bn`` (ESDB), ``c1``, ``c2``,
``upsampler.upsampleOneStep.0``. LKDN builds on this network (same trunk, LKDB for ESDB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.attention import CCA, ESA
from lkdn.archs.bsconv import BSConvU, conv_type
from lkdn.archs.contract import StateDictDetection, register_architecture
from lkdn.archs.distillation import DistillationBody
from lkdn.archs.shapes import count_blocks, scale_and_channels, shape
from lkdn.archs.trunk import BlueprintTrunk, blueprint_deploy_options
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
        return ops.add(self.cca(self.esa(self.distill(x))), x)


class UpsampleOneStep(nn.Module):
    """BSRN's ``pixelshuffledirect``: :class:`~lkdn.archs.upsamplers.PixelShuffleDirect` (same
    arguments) under the official key ``upsampleOneStep`` (keys ``upsampleOneStep.0.*``)."""

    def __init__(self, num_feat: int, num_out_ch: int, scale: int) -> None:
        super().__init__()
        self.upsampleOneStep = PixelShuffleDirect(num_feat, num_out_ch, scale)  # noqa: N815 (official key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


def bsrn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: BSRN``) of a BSRN state dict (any size, ``num_in``, ``conv``)."""
    num_feat, in_total = shape(state, "fea_conv.pw.weight")[:2]
    upscale, channels, num_in = scale_and_channels(shape(state, "upsampler.upsampleOneStep.0.weight")[0], in_total)
    return {
        "type": "BSRN", "num_in_ch": channels, "num_feat": num_feat, "num_block": count_blocks(state, "B{}.c1_d.weight"),
        "num_out_ch": channels, "upscale": upscale, "num_in": num_in,
        "conv": "BSConvU_rep" if "B1.c1_r.rep1x1.weight" in state else "BSConvU",
    }


# CCA squeezes to channels // 16 behind a ReLU: 64 channels keep every squeezed channel alive in tests.
@register_architecture(
    test_options={"num_feat": 64, "num_block": 2}, test_variants=({"conv": "BSConvU_rep", "num_in": 1},),
    deploy_options=blueprint_deploy_options,
    spandrel=StateDictDetection(
        keys=("fea_conv.pw.weight", "B1.c1_d.weight", "B1.c1_r.pw.weight", "B1.esa.conv1.weight",
              "B1.cca.conv_du.0.weight", "c1.weight", "c2.pw.weight", "upsampler.upsampleOneStep.0.weight"),
        options=bsrn_options_from_state, min_size=15,
    ),
)
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
