"""Attention blocks: LKA (LKDN), ESA (RFDN, BSRN) and CCA (IMDN, RFDN, BSRN).

Attribute names follow the official checkpoints of each network. :class:`ESACCA` (BSRN's ESA
then CCA in one module) replaces LKA in the LKDN ablation ``attention: esa_cca``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.bsconv import BSConvU


class LKA(nn.Module):
    """Large kernel attention (Guo et al., "Visual Attention Network"), LKDN's ``atten``.

    A 1x1 conv, a 5x5 depthwise conv and a 5x5 depthwise conv with dilation 3 decompose a
    17x17 kernel; the result gates the input: ``x * dwd(dw(pw(x)))``.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.depthwise = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.depthwise_dilated = nn.Conv2d(channels, channels, 5, padding=6, dilation=3, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.mul(self.depthwise_dilated(self.depthwise(self.pointwise(x))), x)


def _std_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial standard deviation (biased) plus mean, as in IMDN's ``stdv_channels``."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
    return std + mean


class CCA(nn.Module):
    """Contrast-aware channel attention (Hui et al., IMDN, ACM MM 2019).

    ``x * sigmoid(conv_du(std(x) + mean(x)))`` with ``conv_du`` = 1x1 down, ReLU, 1x1 up.

    Args:
        channels: input and output channels.
        reduction: channel reduction of the squeeze step.
    """

    translation_local = False  # the gate depends on statistics of the whole image

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(_std_mean(x))


class ESA(nn.Module):
    """Enhanced spatial attention (Liu et al., RFDN, ECCV-W 2020); BSRN's variant by options.

    RFDN: plain convs and ReLU. BSRN: ``conv=BSConvU`` for ``conv_max``, ``conv2``, ``conv3``,
    ``conv3_`` and ``act=nn.GELU``.

    ``conv2`` (3x3, stride 2, no padding) and a 7x7 max-pool with stride 3 need inputs of at
    least 15x15 pixels.

    Args:
        channels: input and output channels.
        conv: class of the 3x3 convs (``nn.Conv2d`` or ``BSConvU``).
        act: activation class.
        reduction: ``f = channels // reduction`` inner channels.
    """

    translation_local = False  # strided conv, pooling and resampling back: no finite tile context is exact

    def __init__(
        self, channels: int, *, conv: type[nn.Module] = nn.Conv2d, act: type[nn.Module] = nn.ReLU, reduction: int = 4
    ) -> None:
        super().__init__()
        f = channels // reduction
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = conv(f, f, kernel_size=3, padding=1)
        self.conv2 = conv(f, f, kernel_size=3, stride=2, padding=0)
        self.conv3 = conv(f, f, kernel_size=3, padding=1)
        self.conv3_ = conv(f, f, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v_max = F.max_pool2d(c1, kernel_size=7, stride=3)
        v_range = self.act(self.conv_max(v_max))
        c3 = self.act(self.conv3(v_range))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        m = torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return x * m


class ESACCA(nn.Module):
    """BSRN's attention pair: ESA (BSConvU convs, GELU) then CCA (keys ``esa.*``, ``cca.*``).

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.esa = ESA(channels, conv=BSConvU, act=nn.GELU)
        self.cca = CCA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cca(self.esa(x))
