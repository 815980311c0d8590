"""Upsamplers of LKDN: ``pixelshuffledirect`` and its re-parameterizable training form.

Both end in a PixelShuffle; keys follow the official checkpoints (``upsampler.0.*`` for the
direct form; ``upsampler.conv1/conv3/conv1x1/conv3x3.*`` for the re-parameterizable one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelShuffleDirect(nn.Sequential):
    """3x3 conv to ``out_channels * scale**2`` then PixelShuffle (keys ``0.weight``, ``0.bias``).

    Args:
        num_feat: input channels.
        num_out_ch: output image channels.
        scale: upscaling factor.
    """

    def __init__(self, num_feat: int, num_out_ch: int, scale: int) -> None:
        super().__init__(nn.Conv2d(num_feat, num_out_ch * scale**2, 3, padding=1), nn.PixelShuffle(scale))


class PixelShuffleRep(nn.Module):
    """Re-parameterizable upsampler: three parallel branches summed, then PixelShuffle.

    Branches: ``conv1`` (1x1), ``conv3`` (3x3), and ``conv1x1`` (1x1 to ``2 * num_feat``)
    followed by ``conv3x3`` (3x3, no padding) applied to the ``conv1x1`` output padded by one
    pixel whose value is ``conv1x1``'s bias. That padding makes the sequential branch exactly
    one 3x3 conv, so :meth:`fuse` returns an equivalent :class:`PixelShuffleDirect`.

    Args:
        num_feat: input channels.
        num_out_ch: output image channels.
        scale: upscaling factor.
    """

    def __init__(self, num_feat: int, num_out_ch: int, scale: int) -> None:
        super().__init__()
        out = num_out_ch * scale**2
        self.num_out_ch, self.scale = num_out_ch, scale
        self.conv1 = nn.Conv2d(num_feat, out, 1)
        self.conv3 = nn.Conv2d(num_feat, out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(num_feat, num_feat * 2, 1)
        self.conv3x3 = nn.Conv2d(num_feat * 2, out, 3)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.conv1x1.bias.view(1, -1, 1, 1)
        mid = F.pad(F.conv2d(x, self.conv1x1.weight), (1, 1, 1, 1)) + bias
        return self.shuffle(self.conv1(x) + self.conv3(x) + self.conv3x3(mid))

    @torch.no_grad()
    def fuse(self) -> PixelShuffleDirect:
        """Return the single-conv upsampler that computes exactly this module's function."""
        num_feat = self.conv1.in_channels
        fused = PixelShuffleDirect(num_feat, self.num_out_ch, self.scale).to(self.conv3.weight)
        # conv3x3 o conv1x1: K[o, i] = sum_m W3[o, m] * W1[m, i]
        w1 = self.conv1x1.weight.flatten(1)  # (2f, f)
        weight = torch.einsum("omhw,mi->oihw", self.conv3x3.weight, w1)
        bias = self.conv3x3.bias + torch.einsum("omhw,m->o", self.conv3x3.weight, self.conv1x1.bias)
        weight = weight + self.conv3.weight + F.pad(self.conv1.weight, (1, 1, 1, 1))
        bias = bias + self.conv3.bias + self.conv1.bias
        fused[0].weight.copy_(weight)
        fused[0].bias.copy_(bias)
        return fused


UPSAMPLERS: dict[str, type[nn.Module]] = {
    "pixelshuffledirect": PixelShuffleDirect,
    "pixelshuffle_rep": PixelShuffleRep,
}


def build_upsampler(name: str, *, num_feat: int, num_out_ch: int, scale: int) -> nn.Module:
    """Build an upsampler by its YAML name; a ValueError lists the valid names."""
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {name!r}; valid values: {', '.join(sorted(UPSAMPLERS))}")
    return UPSAMPLERS[name](num_feat, num_out_ch, scale)
