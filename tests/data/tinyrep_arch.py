"""A network the project has never seen, written as a user would: one file, nothing else edited.

``TinyRepNet`` declares its contract (a small test configuration, translation locality) and has a
foldable block; ``TinyPlainNet`` is registered with basicsr's plain decorator and declares nothing.
Copied into ``lkdn/archs/`` of a scratch checkout by tests/test_new_architecture.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from lkdn.archs.contract import conv_receptive_radius, register_architecture


class RepBlock(nn.Module):
    """``conv3(x) + conv1(x) + x``: folds into one 3x3 conv.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        channels = self.conv3.in_channels
        fused = nn.Conv2d(channels, channels, 3, padding=1).to(self.conv3.weight)
        identity = torch.zeros_like(self.conv3.weight)
        identity[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
        fused.weight.copy_(self.conv3.weight + F.pad(self.conv1.weight, [1, 1, 1, 1]) + identity)
        fused.bias.copy_(self.conv3.bias + self.conv1.bias)
        return fused


@register_architecture(test_options={"num_feat": 4, "num_block": 1}, receptive_radius=conv_receptive_radius)
class TinyRepNet(nn.Module):
    """Head conv, re-parameterizable blocks with ReLU, tail conv and PixelShuffle.

    Args:
        num_in_ch: image channels in and out.
        num_feat: feature channels.
        num_block: number of RepBlocks.
        upscale: upscaling factor.
    """

    def __init__(self, *, num_in_ch: int = 3, num_feat: int = 8, num_block: int = 2, upscale: int = 2) -> None:
        super().__init__()
        self.upscale = upscale
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[m for _ in range(num_block) for m in (RepBlock(num_feat), nn.ReLU())])
        self.tail = nn.Sequential(nn.Conv2d(num_feat, num_in_ch * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))


@ARCH_REGISTRY.register()
class TinyPlainNet(nn.Module):
    """One conv and a PixelShuffle, registered with nothing declared.

    Args:
        upscale: upscaling factor.
    """

    def __init__(self, *, upscale: int = 2) -> None:
        super().__init__()
        self.upscale = upscale
        self.body = nn.Sequential(nn.Conv2d(3, 3 * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
