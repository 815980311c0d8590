"""DSCF_Fused: a 26-channel SPAN with its first and last convs merged (NTIRE 2026 efficient SR, 5th place).

Reference: the NTIRE 2026 efficient super-resolution challenge report (team 15, "DSCF_Fused");
official code github.com/Amazingren/NTIRE2026_ESR ``models/team15_DSCF_Fused.py`` (class
``DSCF_Fused``, built by the harness with ``feature_channels=26``). The checkpoint
``DSCF_Fused_NTIRE2026`` is the submitted one: a bare state dict of 125,992 parameters in deploy
form.

The network is SPAN (:mod:`lkdn.archs.span_arch`) with two of its convs merged by the team:

* block 1 has no ``c1_r``: its first conv output comes from ``conv_fused``, one 5x5 conv on the
  normalised input (standing for ``conv_1`` followed by block 1's ``c1_r``);
* SPAN's fusion ``conv_cat([feature, conv_2(block 6), block 1, block 6's first activation])`` is
  split into ``conv_cat_other`` (1x1 on the other three) plus ``conv2_fused`` (3x3, no bias, on
  block 6's output), which is the same map with ``conv_2`` composed into the 1x1 conv.

The training form has a :class:`~lkdn.archs.span_arch.Conv3XC` (gain 2) for every conv with an
``eval_conv`` key (``conv_1`` and the block convs); ``conv_fused``, ``conv_cat_other``,
``conv2_fused`` and the upsampler are plain convs in both forms, so the merged layout is trained
as it is and folds exactly (``deploy: true`` loads the official checkpoint). The team's own step
from a 26-channel SPAN to this layout is not exact: two 3x3 convs with zero padding between them
equal one 5x5 conv only away from the image border.

The network works on ``(x - rgb_mean) * img_range`` (official: 255); the output is in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import scale_and_channels, shape
from lkdn.archs.span_arch import NUM_BLOCKS, SPAB, Conv3XC, FoldedConv3XC, gated_residual


class FusedFirstSPAB(nn.Module):
    """SPAN's block without its first conv: that conv's output is given (``conv_fused``'s).

    ``o3 = c3_r(SiLU(c2_r(SiLU(o1))))``, ``out = (o3 + x) * (sigmoid(o3) - 0.5)``.

    Args:
        channels: input, inner and output channels.
        deploy: build the two convs in their folded form.
    """

    def __init__(self, channels: int, *, deploy: bool = False) -> None:
        super().__init__()
        conv = FoldedConv3XC if deploy else Conv3XC
        self.c2_r = conv(channels, channels)
        self.c3_r = conv(channels, channels)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor, o1: torch.Tensor) -> torch.Tensor:
        o3 = self.c3_r(ops.conv_act(self.c2_r, self.act1, ops.activate(self.act1, o1)))
        return gated_residual(o3, x)[0]


def dscf_fused_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: DSCF_Fused``) of a state dict, training or deploy form.

    ``img_range`` and ``rgb_mean`` are not in the weights: the official values are assumed.
    """
    channels, num_in_ch = shape(state, "conv_fused.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    options: dict[str, Any] = {"type": "DSCF_Fused", "num_in_ch": num_in_ch, "num_out_ch": num_out_ch,
                               "feature_channels": channels, "upscale": upscale}
    if "conv_1.sk.weight" not in state:
        options["deploy"] = True
    return options


@register_architecture(
    test_options={"feature_channels": 8}, test_variants=({"deploy": True},),
    receptive_radius=conv_receptive_radius,  # convs and per-pixel attention: local (an upper bound)
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("conv_1.eval_conv.weight", "conv_fused.weight", "block_1.c2_r.eval_conv.weight",
              "block_6.c3_r.eval_conv.weight", "conv_cat_other.weight", "conv2_fused.weight", "upsampler.0.weight"),
        options=dscf_fused_options_from_state, supports_half=True,
    ),
)
class DSCF_Fused(nn.Module):  # noqa: N801 (the official name, used in YAML)
    """DSCF_Fused (see the module docstring).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        feature_channels: feature channels (official: 26).
        upscale: upscaling factor.
        img_range: the input is ``(x - rgb_mean) * img_range`` (official: 255).
        rgb_mean: per-channel mean subtracted from the input (one value per input channel).
        deploy: build every :class:`~lkdn.archs.span_arch.Conv3XC` in its folded form (loads the
            official checkpoint).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 26, upscale: int = 4,
        img_range: float = 255.0, rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040), deploy: bool = False,
    ) -> None:
        super().__init__()
        if len(rgb_mean) != num_in_ch:
            raise ValueError(f"rgb_mean needs one value per input channel ({num_in_ch}), got {list(rgb_mean)}")
        self.upscale = upscale
        self.img_range = float(img_range)
        self.register_buffer("mean", torch.tensor([float(v) for v in rgb_mean]).view(1, -1, 1, 1), persistent=False)
        channels = feature_channels
        self.conv_1 = (FoldedConv3XC if deploy else Conv3XC)(num_in_ch, channels)
        self.conv_fused = nn.Conv2d(num_in_ch, channels, 5, padding=2)
        self.block_1 = FusedFirstSPAB(channels, deploy=deploy)
        for i in range(2, NUM_BLOCKS + 1):
            setattr(self, f"block_{i}", SPAB(channels, deploy=deploy))
        self.conv_cat_other = nn.Conv2d(channels * 3, channels, 1)
        self.conv2_fused = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.upsampler = nn.Sequential(nn.Conv2d(channels, num_out_ch * upscale**2, 3, padding=1),
                                       nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) * self.img_range
        feature = self.conv_1(x)
        first = self.block_1(feature, self.conv_fused(x))
        out = first
        for i in range(2, NUM_BLOCKS + 1):
            out, o1, _ = getattr(self, f"block_{i}")(out)
        fused = ops.add(self.conv_cat_other(torch.cat([feature, first, o1], dim=1)), self.conv2_fused(out))
        return self.upsampler(fused)
