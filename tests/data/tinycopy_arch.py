"""A network the project has never seen whose ``fuse()`` is written the way most public code writes it.

``CopyBlock.fuse`` builds ``nn.Conv2d(...)`` in the default dtype and copies the folded weights in
(no ``.to(weight)``): folded from float64 weights, the module it returns is float32 unless the
default dtype says otherwise. ``fold_error`` adds a constant to the folded bias, to make a wrong
fold on purpose. Copied into ``lkdn/archs/`` of a scratch checkout by tests/test_new_architecture.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.contract import conv_receptive_radius, register_architecture


class CopyBlock(nn.Module):
    """``conv3(x) + conv1(x) + x``: folds into one 3x3 conv.

    Args:
        channels: input and output channels.
        fold_error: added to the folded bias (0: an exact fold).
    """

    def __init__(self, channels: int, fold_error: float = 0.0) -> None:
        super().__init__()
        self.fold_error = fold_error
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x) + x

    def fuse(self) -> nn.Conv2d:
        channels = self.conv3.in_channels
        weight = self.conv3.weight + F.pad(self.conv1.weight, [1, 1, 1, 1])
        weight[torch.arange(channels), torch.arange(channels), 1, 1] += 1.0
        fused = nn.Conv2d(channels, channels, 3, padding=1)
        fused.weight.data.copy_(weight)
        fused.bias.data.copy_(self.conv3.bias + self.conv1.bias + self.fold_error)
        return fused


@register_architecture(test_options={"num_feat": 4, "num_block": 1}, receptive_radius=conv_receptive_radius)
class TinyCopyNet(nn.Module):
    """Head conv, CopyBlocks with ReLU, tail conv and PixelShuffle.

    Args:
        num_in_ch: image channels in and out.
        num_feat: feature channels.
        num_block: number of CopyBlocks.
        upscale: upscaling factor.
        fold_error: passed to every CopyBlock.
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 8, num_block: int = 2, upscale: int = 2, fold_error: float = 0.0
    ) -> None:
        super().__init__()
        self.upscale = upscale
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[m for _ in range(num_block) for m in (CopyBlock(num_feat, fold_error), nn.ReLU())])
        self.tail = nn.Sequential(nn.Conv2d(num_feat, num_in_ch * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))
