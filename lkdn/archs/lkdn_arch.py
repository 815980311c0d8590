"""LKDN: Large Kernel Distillation Network (Xie et al., CVPR 2023 workshops, NTIRE).

Reference: "Large Kernel Distillation Network for Efficient Single Image Super-Resolution",
https://arxiv.org/abs/2305.12226 ; official code github.com/stella-von/LKDN (MIT).
State-dict keys match the official checkpoints: ``fea_conv``, ``B1..Bn``, ``c1``, ``c2``,
``upsampler``. ``LKDN_S`` is the same class with the small variant's defaults.

Ablation switches (defaults are the official network): ``attention`` (``lka``, ``none``, or
``esa_cca``, BSRN's ESA and CCA in place of LKA), ``conv`` (``BSConvU``, ``BSConvU_idt``,
``BSConvU_rep``) and ``num_in`` (input replication).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.attention import ESACCA, LKA
from lkdn.archs.bsconv import BSConvU, conv_type
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.distillation import DistillationBody
from lkdn.archs.shapes import count_blocks, scale_and_channels, shape
from lkdn.archs.trunk import BlueprintTrunk, blueprint_deploy_options
from lkdn.archs.upsamplers import build_upsampler

ATTENTIONS: dict[str, type[nn.Module] | None] = {"lka": LKA, "none": None, "esa_cca": ESACCA}


def check_attention(name: str) -> None:
    """Raise a ValueError listing the valid names when ``name`` is not an LKDB attention."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}; valid values: {', '.join(ATTENTIONS)}")


def build_attention(name: str, channels: int) -> nn.Module:
    """The attention stage of an LKDB by its YAML name (``none``: identity)."""
    check_attention(name)
    attention = ATTENTIONS[name]
    return nn.Identity() if attention is None else attention(channels)


class PixelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW tensor (official ``pixel_norm``).

    The result keeps the input's memory format: for a ``channels_last`` input the NHWC
    permutation is already contiguous, so it is normalized and returned as it is, without the
    two layout copies a plain permute-normalize-permute costs (and that would make every
    following convolution reorder its input back).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        y = y.permute(0, 3, 1, 2)
        return y.contiguous() if x.is_contiguous() else y


class LKDB(DistillationBody):
    """Large kernel distillation block.

    Three distillation steps (1x1 distilled branch, ``conv`` 3x3 remaining branch, no shallow
    residual), a BSConvU on the last remaining features, 1x1 fusion
    (:class:`~lkdn.archs.distillation.DistillationBody`), large kernel attention, 1x1 projection,
    pixel norm, and a residual connection. GELU (exact) after every distillation conv.

    Args:
        in_channels: input channels (``dc = in_channels // 2`` distilled, ``rc = in_channels``).
        out_channels: output channels (must equal ``in_channels`` for the residual).
        atten_channels: channels of the attention stage.
        conv: class of the 3x3 remaining-branch convs (BSConvU, BSConvU_idt or RBSB).
        attention: the ``atten`` stage: ``lka`` (official), ``none`` (identity) or ``esa_cca``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, atten_channels: int, conv: type[nn.Module], attention: str = "lka"
    ) -> None:
        super().__init__(in_channels, conv=conv, c4_conv=BSConvU, act=nn.GELU(), fused_channels=atten_channels,
                         shallow_residual=False)
        self.atten = build_attention(attention, atten_channels)
        self.c6 = nn.Conv2d(atten_channels, out_channels, 1)
        self.pixel_norm = PixelNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.add(self.pixel_norm(self.c6(self.atten(self.distill(x)))), x)


def lkdn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: LKDN``) of an LKDN state dict: training or deploy form, any size.

    ``BSConvU_idt`` has the parameters of ``BSConvU`` and cannot be told apart: it reads as ``BSConvU``.
    """
    num_feat, in_total = shape(state, "fea_conv.pw.weight")[:2]
    rep_upsampler = "upsampler.conv1.weight" in state
    out_total = shape(state, "upsampler.conv1.weight" if rep_upsampler else "upsampler.0.weight")[0]
    upscale, channels, num_in = scale_and_channels(out_total, in_total)
    if "B1.atten.pointwise.weight" in state:
        attention = "lka"
    elif any(k.startswith("B1.atten.esa.") for k in state):
        attention = "esa_cca"
    else:
        attention = "none"
    options: dict[str, Any] = {
        "type": "LKDN", "num_in_ch": channels, "num_out_ch": channels, "num_feat": num_feat,
        "num_atten": shape(state, "B1.c5.weight")[0], "num_block": count_blocks(state, "B{}.c1_d.weight"),
        "upscale": upscale, "num_in": num_in,
        "conv": "BSConvU_rep" if "B1.c1_r.rep1x1.weight" in state else "BSConvU",
        "upsampler": "pixelshuffle_rep" if rep_upsampler else "pixelshuffledirect",
    }
    if attention != "lka":
        options["attention"] = attention
    return options


SMALL = {"num_feat": 8, "num_atten": 8, "num_block": 2}
VARIANTS = (
    {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"},
    {"conv": "BSConvU_idt", "attention": "esa_cca", "num_atten": 16},
    {"attention": "none", "num_in": 1},
)
# The attention stage (c5 -> LKA -> c6, before the pixel norm) reaches ~1e11 with the official
# weights, far past float16's 65504: a float16 export keeps it float32.
FP32_STAGES = {LKDB: ("c5", "atten", "c6", "pixel_norm")}
DETECTION = StateDictDetection(
    keys=("fea_conv.pw.weight", "fea_conv.dw.weight", "B1.c1_d.weight", "B1.c1_r.pw.weight", "B1.c4.pw.weight",
          "B1.c5.weight", "B1.c6.weight", "B1.pixel_norm.weight", "c1.weight", "c2.pw.weight"),
    any_of=(("upsampler.0.weight", "upsampler.conv1.weight"),),
    options=lkdn_options_from_state,
)


@register_architecture(
    test_options=SMALL, test_variants=VARIANTS, receptive_radius=conv_receptive_radius,
    deploy_options=blueprint_deploy_options, fp32_stages=FP32_STAGES, spandrel=DETECTION,
)
class LKDN(BlueprintTrunk):
    """Large Kernel Distillation Network.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        num_feat: feature channels.
        num_atten: channels of the large kernel attention inside each LKDB.
        num_block: number of LKDBs (keys ``B1..B{num_block}``).
        upscale: upscaling factor.
        num_in: how many times the input is replicated along channels (official: 4).
        conv: remaining-branch conv of the LKDBs: ``BSConvU``, ``BSConvU_idt`` or
            ``BSConvU_rep`` (RBSB, re-parameterizable).
        upsampler: ``pixelshuffledirect`` or ``pixelshuffle_rep`` (re-parameterizable).
        attention: attention inside each LKDB (ablation): ``lka`` (official), ``none`` or
            ``esa_cca`` (BSRN's ESA then CCA, keys ``atten.esa.*``, ``atten.cca.*``).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 56, num_atten: int = 56,
        num_block: int = 8, upscale: int = 4, num_in: int = 4, conv: str = "BSConvU",
        upsampler: str = "pixelshuffledirect", attention: str = "lka",
    ) -> None:
        super().__init__()
        block_conv = conv_type(conv)
        check_attention(attention)
        self.build_trunk(
            num_in_ch=num_in_ch, num_in=num_in, num_feat=num_feat, num_block=num_block, upscale=upscale,
            make_block=lambda: LKDB(num_feat, num_feat, atten_channels=num_atten, conv=block_conv, attention=attention),
        )
        self.upsampler = build_upsampler(upsampler, num_feat=num_feat, num_out_ch=num_out_ch, scale=upscale)


def LKDN_S(  # noqa: N802 (registered name used in YAML)
    *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 42, num_atten: int = 42, num_block: int = 5,
    upscale: int = 4, num_in: int = 4, conv: str = "BSConvU", upsampler: str = "pixelshuffledirect",
    attention: str = "lka",
) -> LKDN:
    """LKDN-S, the small variant: :class:`LKDN` with 42 channels and 5 blocks by default."""
    return LKDN(
        num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_atten=num_atten, num_block=num_block,
        upscale=upscale, num_in=num_in, conv=conv, upsampler=upsampler, attention=attention,
    )


register_architecture(
    LKDN_S, test_options=SMALL, test_variants=({"attention": "none", "num_in": 1},),
    receptive_radius=conv_receptive_radius, deploy_options=blueprint_deploy_options, fp32_stages=FP32_STAGES,
)
