"""PKDSR: SPANF with a pruned tail (NTIRE 2026 efficient-SR challenge, 3rd place).

Reference: "The Eleventh NTIRE 2026 Efficient Super-Resolution Challenge Report", arXiv:2604.03198
(team 16, "PKDSR": pruning and knowledge distillation of SPANF); official code
github.com/Amazingren/NTIRE2026_ESR ``models/team16_PKDSR.py`` (``SPANFPrunedKD``). The checkpoint
``PKDSR_NTIRE2026`` is the submitted one (``params_ema``, 143,928 parameters), a deploy form: every
3x3 conv is a folded :class:`~lkdn.archs.span_arch.Conv3XC` (``eval_conv`` keys).

The network is SPANF (NTIRE 2025, 2nd place) with the output width of its fusion conv pruned:
``conv_near``, a learnable depthwise 3x3 conv giving every input channel ``upscale**2`` copies
(initialised here to the nearest-neighbour copy of the centre pixel), runs beside five SPAN
blocks; ``conv_cat`` (1x1) fuses ``[near, block 5, block 1]`` into ``tail_channels`` channels,
``conv_2`` (3x3) maps them to ``num_out_ch * upscale**2`` and a PixelShuffle gives the image. With
``tail_channels == feature_channels`` this is SPANF itself. The input is used as it is, in [0, 1].

The training form has a :class:`~lkdn.archs.span_arch.Conv3XC` for every 3x3 conv but ``conv_near``
(the SPAN family's re-parameterizable conv, the form the official ``Conv3XC(..., gain1=2)``
signature refers to; the official code publishes the deploy form only); ``deploy: true`` builds the folded form that loads the official checkpoint.
:class:`SPANFTrunk` is shared with PDS (:mod:`lkdn.archs.pds_arch`), the same network under other
key names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import ShapeError, shape
from lkdn.archs.span_arch import Conv3XC, FoldedConv3XC, gated_residual

NUM_BLOCKS = 5  # fixed by the architecture: the fusion reads block 1 and block 5


def check_sizes(**sizes: int) -> None:
    """Raise a ValueError naming the first argument that is not a positive integer (channels, blocks, scale)."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")


def nearest_copy_conv(channels: int, upscale: int) -> nn.Conv2d:
    """A depthwise 3x3 conv (no bias) giving each channel ``upscale**2`` copies of its centre pixel.

    Followed by a PixelShuffle it is nearest-neighbour upsampling; the weights stay trainable.
    """
    conv = nn.Conv2d(channels, channels * upscale**2, 3, padding=1, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 1.0
    return conv


class SPANFBlock(nn.Module):
    """SPAN's block without the extra outputs; the first block changes the width and has no attention.

    ``o3 = c3_r(SiLU(c2_r(SiLU(c1_r(x)))))``; when input and output widths agree the output is
    ``(o3 + x) * (sigmoid(o3) - 0.5)``, otherwise ``o3``.

    Args:
        c_in: input channels.
        channels: inner and output channels.
        deploy: build the three convs in their folded form.
    """

    def __init__(self, c_in: int, channels: int, *, deploy: bool = False) -> None:
        super().__init__()
        conv = FoldedConv3XC if deploy else Conv3XC
        self.c1_r = conv(c_in, channels)
        self.c2_r = conv(channels, channels)
        self.c3_r = conv(channels, channels)
        self.act1 = nn.SiLU()
        self.attention = c_in == channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o3 = self.c3_r(ops.conv_act(self.c2_r, self.act1, ops.conv_act(self.c1_r, self.act1, x)))
        return gated_residual(o3, x)[0] if self.attention else o3


class SPANFTrunk(nn.Module):
    """SPANF's layout with a fusion conv of ``tail_channels`` outputs; subclasses name the two tail convs.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels (official: the input's).
        feature_channels: channels of the five blocks.
        tail_channels: output channels of the 1x1 fusion conv (the input of the last 3x3 conv).
        upscale: upscaling factor.
        deploy: build every :class:`Conv3XC` in its folded form (loads the official checkpoints).
    """

    fusion_key = "conv_cat"
    tail_key = "conv_2"

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, tail_channels: int = 24,
                 upscale: int = 4, deploy: bool = False) -> None:
        super().__init__()
        check_sizes(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels,
                    tail_channels=tail_channels, upscale=upscale)
        self.upscale = upscale
        conv = FoldedConv3XC if deploy else Conv3XC
        self.conv_near = nearest_copy_conv(num_in_ch, upscale)
        self.block_1 = SPANFBlock(num_in_ch, feature_channels, deploy=deploy)
        for i in range(2, NUM_BLOCKS + 1):
            setattr(self, f"block_{i}", SPANFBlock(feature_channels, feature_channels, deploy=deploy))
        fused_in = feature_channels * 2 + num_in_ch * upscale**2
        setattr(self, self.fusion_key, nn.Conv2d(fused_in, tail_channels, 1))
        setattr(self, self.tail_key, conv(tail_channels, num_out_ch * upscale**2))
        self.depth_to_space = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        near = self.conv_near(x)
        first = self.block_1(x)
        out = first
        for i in range(2, NUM_BLOCKS + 1):
            out = getattr(self, f"block_{i}")(out)
        fused = getattr(self, self.fusion_key)(torch.cat([near, out, first], dim=1))
        return self.depth_to_space(getattr(self, self.tail_key)(fused))


def trunk_options_from_state(state: Mapping[str, torch.Tensor], arch: type[SPANFTrunk]) -> dict[str, Any]:
    """The ``network_g`` options of a state dict of ``arch`` (a :class:`SPANFTrunk`), training or deploy form."""
    deploy = "block_1.c1_r.sk.weight" not in state
    first = "block_1.c1_r.eval_conv.weight" if deploy else "block_1.c1_r.sk.weight"
    feature_channels, num_in_ch = shape(state, first)[:2]
    near = shape(state, "conv_near.weight")[0]
    upscale = math.isqrt(near // num_in_ch)
    if upscale * upscale * num_in_ch != near:
        raise ShapeError(f"conv_near.weight: {near} output channels are not {num_in_ch} x a square scale")
    tail_out = shape(state, f"{arch.tail_key}.eval_conv.weight")[0]
    if tail_out % (upscale * upscale):
        raise ShapeError(f"{arch.tail_key}.eval_conv.weight: {tail_out} output channels are not a multiple of {upscale}**2")
    options: dict[str, Any] = {"type": arch.__name__, "num_in_ch": num_in_ch, "num_out_ch": tail_out // upscale**2,
                               "feature_channels": feature_channels,
                               "tail_channels": shape(state, f"{arch.fusion_key}.weight")[0], "upscale": upscale}
    if deploy:
        options["deploy"] = True
    return options


def trunk_detection(arch: type[SPANFTrunk], *, absent: tuple[str, ...]) -> StateDictDetection:
    """The spandrel detection of ``arch``: its own fusion and tail keys, five blocks and ``conv_near``."""
    return StateDictDetection(
        keys=("conv_near.weight", "block_1.c1_r.eval_conv.weight", f"block_{NUM_BLOCKS}.c3_r.eval_conv.weight",
              f"{arch.fusion_key}.weight", f"{arch.tail_key}.eval_conv.weight"),
        absent=(f"block_{NUM_BLOCKS + 1}.c1_r.eval_conv.weight", *absent),
        options=lambda state: trunk_options_from_state(state, arch),
    )


class PKDSR(SPANFTrunk):
    """PKDSR (NTIRE 2026, 3rd place): SPANF with a 24-channel fusion output (see the module docstring).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels (official: the input's).
        feature_channels: channels of the five blocks (official: 32).
        tail_channels: output channels of ``conv_cat`` (official: 24; SPANF: ``feature_channels``).
        upscale: upscaling factor.
        deploy: build every :class:`Conv3XC` in its folded form (loads the official checkpoint).
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, tail_channels: int = 24,
                 upscale: int = 4, deploy: bool = False) -> None:
        super().__init__(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels,
                         tail_channels=tail_channels, upscale=upscale, deploy=deploy)


register_architecture(
    PKDSR, test_options={"feature_channels": 8, "tail_channels": 6},
    test_variants=({"deploy": True}, {"upscale": 2}),
    receptive_radius=conv_receptive_radius,  # 3x3 and 1x1 convs, per-pixel attention: local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=trunk_detection(PKDSR, absent=("conv_cat_1.weight",)),
)
