"""SPANV2 (NTIRE 2026 efficient-SR challenge, 1st place).

Reference: "The Eleventh NTIRE 2026 Efficient Super-Resolution Challenge Report", arXiv:2604.03198
(team 22, "SPANV2_ESR"); official code github.com/Amazingren/NTIRE2026_ESR
``models/team22_SPANV2_ESR.py`` (built by the harness as ``SPANV2_ESR(3, 3, feature_channels=32,
upscale=4, bias=False)``). The checkpoint ``SPANV2_NTIRE2026`` is the submitted one (a bare state
dict, 139,104 parameters). The method is published in deploy form only: each block conv is one
bias-free 3x3 conv (key ``c1.conv``), and no training form or re-parameterization is given, so this
network has none (it trains as it is).

Five blocks of three 3x3 convs with ReLU run on the input; the first widens to
``feature_channels`` and ends in a ReLU, the others end in a guided residual
``(x + f3) * guidance_map_conv(f3)`` (a 1x1 conv with bias). A learnable depthwise 3x3 conv
``conv_near`` gives every input channel ``upscale**2`` copies (initialised to the
nearest-neighbour copy); ``[near, block 5]`` goes through a depthwise 3x3 conv, a 1x1 conv and a
PixelShuffle. The input is used as it is, in [0, 1] (the official ``img_range`` and ``rgb_mean``
arguments reach nothing, so this network has neither).

The guided residual is computed by :func:`guided_residual` from the guidance conv's weights, as
the official submission's fused CUDA operator ``span_attention(x, f3, weight, bias)`` computes it
(its PyTorch path, ``use_span_attn=False``, is the same maths). So the NTIRE harness's activation
and conv counts, which see ``nn.Conv2d`` calls only, are the published ones (42.99 M, 18 convs).
The published 1.59 G FLOPs are not reproducible: fvcore traces the network with ``torch.jit``,
which cannot see into the extension, so the extension's output enters the trace as a constant and
every conv whose only consumer is the extension (blocks 2 to 5) is dropped as dead code; what is
left (``conv_near``, block 1, the depthwise and pointwise convs) is 1.59 G. fvcore on this network
counts every conv: 9.11 G.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.pkdsr_arch import check_sizes, nearest_copy_conv
from lkdn.archs.shapes import ShapeError, count_blocks, shape

NUM_BLOCKS = 5  # fixed by the official network


def guided_residual(x: torch.Tensor, f3: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``(x + f3) * conv1x1(f3; weight, bias)``: SPANV2's attention, one function as the official fused operator.

    ``f3`` is overwritten when :func:`lkdn.archs.ops.inplace_ok` (it must be a fresh result).
    """
    guide = F.conv2d(f3, weight, bias)
    return ops.mul(ops.add(f3, x), guide)


class BiasFreeConv(nn.Module):
    """A 3x3 conv under the key ``conv`` (the official block conv's layout).

    Args:
        c_in: input channels.
        c_out: output channels.
        bias: give the conv a bias (the official network: none).
    """

    def __init__(self, c_in: int, c_out: int, *, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_act(self, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """``act(self(x))`` as one fused convolution where :func:`lkdn.archs.ops.conv_act` can."""
        return ops.conv_act(self.conv, act, x)


class SPABV2(nn.Module):
    """SPANV2's block: ``f3 = c3(ReLU(c2(ReLU(c1(x)))))``, then the guided residual, or ``ReLU(f3)`` when the width changes.

    Args:
        c_in: input channels.
        channels: inner and output channels.
        bias: biases in the three 3x3 convs (official: none); the guidance conv always has one.
    """

    def __init__(self, c_in: int, channels: int, *, bias: bool = False) -> None:
        super().__init__()
        self.c1 = BiasFreeConv(c_in, channels, bias=bias)
        self.c2 = BiasFreeConv(channels, channels, bias=bias)
        self.c3 = BiasFreeConv(channels, channels, bias=bias)
        self.act = nn.ReLU()
        if c_in == channels:
            self.guidance_map_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f2 = ops.conv_act(self.c2, self.act, ops.conv_act(self.c1, self.act, x))
        if not hasattr(self, "guidance_map_conv"):
            return ops.conv_act(self.c3, self.act, f2)
        guide = self.guidance_map_conv
        return guided_residual(x, self.c3(f2), guide.weight, guide.bias)


def spanv2_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: SPANV2``) of a SPANV2 state dict."""
    channels, num_in_ch = shape(state, "block_1.c1.conv.weight")[:2]
    if (found := count_blocks(state, "block_{}.c1.conv.weight")) != NUM_BLOCKS:
        raise ShapeError(f"SPANV2 has {NUM_BLOCKS} blocks, the state dict has {found}")
    near = shape(state, "conv_near.weight")[0]
    upscale = math.isqrt(near // num_in_ch)
    if upscale * upscale * num_in_ch != near:
        raise ShapeError(f"conv_near.weight: {near} output channels are not {num_in_ch} x a square scale")
    out_total = shape(state, "pointwise_conv.weight")[0]
    return {"type": "SPANV2", "num_in_ch": num_in_ch, "num_out_ch": out_total // upscale**2,
            "feature_channels": channels, "upscale": upscale, "bias": "block_1.c1.conv.bias" in state}


@register_architecture(
    test_options={"feature_channels": 8}, test_variants=({"bias": True}, {"upscale": 2}),
    receptive_radius=conv_receptive_radius,  # 3x3 and 1x1 convs, per-pixel gates: local
    spandrel=StateDictDetection(
        keys=("block_1.c1.conv.weight", "block_2.guidance_map_conv.weight", "block_5.c3.conv.weight",
              "conv_near.weight", "depthwise_conv.weight", "pointwise_conv.weight"),
        options=spanv2_options_from_state,
    ),
)
class SPANV2(nn.Module):
    """SPANV2 (see the module docstring).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels (official: the input's; the pointwise conv gives
            ``num_out_ch * upscale**2`` channels).
        feature_channels: channels of the blocks (official harness: 32).
        upscale: upscaling factor.
        bias: biases in the block convs and the depthwise and pointwise convs (official: none).
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, upscale: int = 4,
                 bias: bool = False) -> None:
        super().__init__()
        check_sizes(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels, upscale=upscale)
        self.upscale = upscale
        self.block_1 = SPABV2(num_in_ch, feature_channels, bias=bias)
        for i in range(2, NUM_BLOCKS + 1):
            setattr(self, f"block_{i}", SPABV2(feature_channels, feature_channels, bias=bias))
        self.conv_near = nearest_copy_conv(num_in_ch, upscale)
        joined = num_in_ch * upscale**2 + feature_channels
        self.depthwise_conv = nn.Conv2d(joined, joined, 3, padding=1, groups=joined, bias=bias)
        self.pointwise_conv = nn.Conv2d(joined, num_out_ch * upscale**2, 1, bias=bias)
        self.depth_to_space = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        near = self.conv_near(x)
        out = x
        for i in range(1, NUM_BLOCKS + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.depth_to_space(self.pointwise_conv(self.depthwise_conv(torch.cat([near, out], dim=1))))
