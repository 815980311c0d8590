"""RepSR: re-parameterizable VGG-style SR network with BatchNorm (Wang, Dong, Shan, ACM MM 2022).

Reference: "RepSR: Training Efficient VGG-style Super-Resolution Networks with Structural
Re-Parameterization and Batch Normalization", https://arxiv.org/abs/2205.05671.

Training form: a head 3x3 conv and PReLU, ``num_block`` RepSR blocks each followed by PReLU, a tail
3x3 conv and PixelShuffle, plus the nearest-neighbour upsampled input as a global skip. A
RepSR block is a clean identity path plus two expand-and-squeeze paths, each ``3x3 conv to
expand * C channels -> BatchNorm -> 1x1 conv back to C``. BN trains on batch statistics first
and on population statistics late in training (``train.bn_population_after`` in the training
options); :meth:`RepSRBlock.fuse` folds a block, using the BN running statistics, into one
plain 3x3 conv, so the deploy network is a plain stack of 3x3 convs and PReLUs. The deploy
form is built directly with ``deploy: true`` (same keys as the fused training form), which the
architecture's contract declares as its deploy options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import ShapeError, scale_and_channels, shape


class ExpandSqueeze(nn.Module):
    """``squeeze(bn(expand(x)))``: 3x3 conv C -> E, BatchNorm over E, 1x1 conv E -> C.

    Args:
        channels: input and output channels C.
        expand_channels: channels E of the expanded features.
    """

    def __init__(self, channels: int, expand_channels: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, expand_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(expand_channels)
        self.squeeze = nn.Conv2d(expand_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze(self.bn(self.expand(x)))

    @torch.no_grad()
    def equivalent_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 kernel and bias computing this path with the BN running statistics."""
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        weight3 = self.expand.weight * scale.view(-1, 1, 1, 1)
        bias3 = (self.expand.bias - self.bn.running_mean) * scale + self.bn.bias
        squeeze = self.squeeze.weight.flatten(1)  # (C, E)
        weight = torch.einsum("ce,eihw->cihw", squeeze, weight3)
        bias = squeeze @ bias3 + self.squeeze.bias
        return weight, bias


class RepSRBlock(nn.Module):
    """RepSR block: ``x + path1(x) + path2(x)``, two :class:`ExpandSqueeze` paths.

    In evaluation mode (BN on running statistics) the block is linear and :meth:`fuse` returns
    the equivalent 3x3 conv.

    Args:
        channels: input and output channels.
        expand: expansion ratio of the paths (expanded channels ``expand * channels``).
    """

    def __init__(self, channels: int, *, expand: int = 2) -> None:
        super().__init__()
        self.path1 = ExpandSqueeze(channels, channels * expand)
        self.path2 = ExpandSqueeze(channels, channels * expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.path1(x) + self.path2(x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return the plain 3x3 conv equal to this block with BN on its running statistics."""
        channels = self.path1.expand.in_channels
        w1, b1 = self.path1.equivalent_kernel()
        w2, b2 = self.path2.equivalent_kernel()
        identity = torch.zeros_like(w1)
        identity[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
        conv = nn.Conv2d(channels, channels, 3, padding=1).to(w1)
        conv.weight.copy_(w1 + w2 + identity)
        conv.bias.copy_(b1 + b2)
        conv.train(self.training)
        return conv


def repsr_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: RepSR``) of a RepSR state dict, training or deploy form."""
    num_feat, num_in_ch = shape(state, "head.0.weight")[:2]
    deploy = "body.0.path1.expand.weight" not in state
    block_key = "body.{}.weight" if deploy else "body.{}.path1.expand.weight"
    num_block = 0
    while block_key.format(2 * num_block) in state:
        num_block += 1
    upscale, channels, _ = scale_and_channels(shape(state, "tail.0.weight")[0], num_in_ch)
    if channels != num_in_ch:
        raise ShapeError(f"RepSR needs as many output as input channels, got {num_in_ch} in and {channels} out")
    options: dict[str, Any] = {"type": "RepSR", "num_in_ch": num_in_ch, "num_out_ch": channels, "num_feat": num_feat,
                               "num_block": num_block, "upscale": upscale}
    if deploy:
        options["deploy"] = True
    else:
        options["expand"] = shape(state, "body.0.path1.expand.weight")[0] // num_feat
    return options


@register_architecture(
    test_options={"num_feat": 8, "num_block": 2}, test_variants=({"deploy": True},),
    receptive_radius=conv_receptive_radius,  # convs, PReLU and a nearest-neighbour skip: all local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("head.0.weight", "head.1.weight", "tail.0.weight"),
        any_of=(("body.0.weight", "body.0.path1.expand.weight"),),
        options=repsr_options_from_state,
    ),
)
class RepSR(nn.Module):
    """RepSR network (training form, or the plain deploy form with ``deploy=True``).

    Keys: ``head.0`` (conv), ``head.1`` (PReLU), ``body.{2k}`` (RepSR block, or its fused conv), ``body.{2k+1}`` (PReLU),
    ``tail.0`` (conv before the PixelShuffle). Variants (ECBSR naming, M blocks, C channels):
    ``num_block: 4, num_feat: 32`` (M4C32) up to ``num_block: 16, num_feat: 64`` (M16C64).

    Args:
        num_in_ch: input image channels (must equal ``num_out_ch``: global skip).
        num_out_ch: output image channels.
        num_feat: feature channels.
        num_block: number of RepSR blocks.
        expand: expansion ratio of the expand-and-squeeze paths.
        upscale: upscaling factor.
        deploy: build each block as the plain 3x3 conv it folds into (loads fused checkpoints).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 16, expand: int = 2,
        upscale: int = 4, deploy: bool = False,
    ) -> None:
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError(f"RepSR adds the upsampled input: num_in_ch ({num_in_ch}) must equal num_out_ch ({num_out_ch})")
        self.upscale = upscale
        self.head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 3, padding=1), nn.PReLU(num_feat))
        layers: list[nn.Module] = []
        for _ in range(num_block):
            block = nn.Conv2d(num_feat, num_feat, 3, padding=1) if deploy else RepSRBlock(num_feat, expand=expand)
            layers += [block, nn.PReLU(num_feat)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.body(self.head(x)))
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")

