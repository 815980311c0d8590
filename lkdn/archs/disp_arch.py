"""DISP (NTIRE 2026 efficient-SR challenge, 4th place).

Reference: "The Eleventh NTIRE 2026 Efficient Super-Resolution Challenge Report", arXiv:2604.03198
(team 18, "DISP"); official code github.com/Amazingren/NTIRE2026_ESR ``models/team18_DISP.py``. The
checkpoint ``DISP_NTIRE2026`` is the submitted one (a bare state dict, 163,792 parameters).

``conv_1`` (3x3) widens the input to ``feature_channels``; four residual blocks (REECB) follow,
each ``x + SiLU(c3_r(SiLU(extra(SiLU(c2_r(SiLU(c1_r(x))))))))`` with one extra 3x3 conv
(``_extern_conv_block``); a 1x1 ``conv_2`` with a residual from ``conv_1`` and a 3x3 conv +
PixelShuffle upsampler (``upsampler.0``) give the image. The input is used as it is, in [0, 1].
The official constructor ignores its ``num_block`` (always 4), ``bias`` and ``num_out_ch``
arguments; here ``num_block`` and ``extern_convs`` set the depth and ``num_out_ch`` the output.

The method is published in deploy form only: every 3x3 conv but the upsampler's is stored as the
``eval_conv`` of a folded conv, the layout of the SPAN family's folded
:class:`~lkdn.archs.span_arch.Conv3XC`; DISP's training code is not published. The training form
here (ours) gives those convs a :class:`~lkdn.archs.span_arch.Conv3XC`, which folds exactly into
that layout; ``deploy: true`` builds the folded form that loads the official checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.pkdsr_arch import check_sizes
from lkdn.archs.shapes import scale_and_channels, shape
from lkdn.archs.span_arch import Conv3XC, FoldedConv3XC
from lkdn.archs.upsamplers import PixelShuffleDirect


class REECB(nn.Module):
    """DISP's residual block: 3x3 convs with SiLU after each, the input added after the last SiLU.

    Args:
        channels: input, inner and output channels.
        extern_convs: 3x3 convs between ``c2_r`` and ``c3_r`` (official: 1).
        deploy: build the convs in their folded form.
    """

    def __init__(self, channels: int, *, extern_convs: int = 1, deploy: bool = False) -> None:
        super().__init__()
        conv = FoldedConv3XC if deploy else Conv3XC
        self._extern_conv_block = nn.ModuleList(conv(channels, channels) for _ in range(extern_convs))
        self.c1_r = conv(channels, channels)
        self.c2_r = conv(channels, channels)
        self.c3_r = conv(channels, channels)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = ops.conv_act(self.c2_r, self.act1, ops.conv_act(self.c1_r, self.act1, x))
        for extra in self._extern_conv_block:
            out = ops.conv_act(extra, self.act1, out)
        return ops.add(ops.conv_act(self.c3_r, self.act1, out), x)


def _count_from_zero(state: Mapping[str, object], template: str) -> int:
    """How many consecutive ``template.format(0)``, ``template.format(1)``, ... keys ``state`` has."""
    count = 0
    while template.format(count) in state:
        count += 1
    return count


def disp_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: DISP``) of a DISP state dict, training or deploy form."""
    deploy = "conv_1.sk.weight" not in state
    channels, num_in_ch = shape(state, "conv_1.eval_conv.weight" if deploy else "conv_1.sk.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    options: dict[str, Any] = {
        "type": "DISP", "num_in_ch": num_in_ch, "num_out_ch": num_out_ch, "feature_channels": channels,
        "upscale": upscale, "num_block": _count_from_zero(state, "blocks.{}.c1_r.eval_conv.weight"),
        "extern_convs": _count_from_zero(state, "blocks.0._extern_conv_block.{}.eval_conv.weight"),
    }
    if deploy:
        options["deploy"] = True
    return options


@register_architecture(
    test_options={"feature_channels": 8, "num_block": 2}, test_variants=({"deploy": True}, {"extern_convs": 0}),
    receptive_radius=conv_receptive_radius,  # 3x3 and 1x1 convs, SiLU: local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("conv_1.eval_conv.weight", "blocks.0.c1_r.eval_conv.weight", "blocks.0.c3_r.eval_conv.weight",
              "conv_2.weight", "upsampler.0.weight"),
        options=disp_options_from_state,
    ),
)
class DISP(nn.Module):
    """DISP (see the module docstring).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        feature_channels: feature channels (official: 32).
        upscale: upscaling factor.
        num_block: REECB blocks (official: 4).
        extern_convs: extra 3x3 convs per block (official: 1).
        deploy: build every :class:`~lkdn.archs.span_arch.Conv3XC` in its folded form (loads the
            official checkpoint).
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 32, upscale: int = 4,
                 num_block: int = 4, extern_convs: int = 1, deploy: bool = False) -> None:
        super().__init__()
        check_sizes(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels, upscale=upscale,
                    num_block=num_block)
        if isinstance(extern_convs, bool) or not isinstance(extern_convs, int) or extern_convs < 0:
            raise ValueError(f"extern_convs: expected a non-negative integer, got {extern_convs!r}")
        self.upscale = upscale
        self.conv_1 = (FoldedConv3XC if deploy else Conv3XC)(num_in_ch, feature_channels)
        self.blocks = nn.Sequential(*(REECB(feature_channels, extern_convs=extern_convs, deploy=deploy)
                                      for _ in range(num_block)))
        self.conv_2 = nn.Conv2d(feature_channels, feature_channels, 1)
        self.upsampler = PixelShuffleDirect(feature_channels, num_out_ch, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.conv_1(x)
        return self.upsampler(ops.add(self.conv_2(self.blocks(feature)), feature))
