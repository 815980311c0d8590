"""The feature-distillation body shared by RFDN's RFDB, BSRN's ESDB and LKDN's LKDB.

Three steps of a 1x1 distillation conv (``c{i}_d``) and a 3x3 remaining-branch conv
(``r = act(c{i}_r(r) + r)`` with the shallow residual of RFDB and ESDB, ``r = act(c{i}_r(r))``
in LKDB), a 3x3 conv ``c4`` on the last remaining features, and the 1x1 fusion ``c5`` of the
four distilled parts. The blocks differ only in the conv types, the activation, the residual
and what follows ``c5`` (attention, projection, residual).
"""

from __future__ import annotations

import torch
from torch import nn

from lkdn.archs import ops


class DistillationBody(nn.Module):
    """``c1_d .. c5`` of a residual feature-distillation block (official key names).

    Args:
        channels: input channels (``dc = channels // 2``, ``rc = channels``).
        conv: class of the 3x3 remaining-branch convs ``c1_r .. c3_r``.
        c4_conv: class of ``c4`` (3x3, ``rc -> dc``).
        act: the activation after every distillation conv.
        fused_channels: output channels of ``c5`` (default ``channels``).
        shallow_residual: add each remaining-branch input to its conv output (RFDB, ESDB).
    """

    def __init__(
        self, channels: int, *, conv: type[nn.Module], c4_conv: type[nn.Module], act: nn.Module,
        fused_channels: int | None = None, shallow_residual: bool = True,
    ) -> None:
        super().__init__()
        self.shallow_residual = shallow_residual
        dc, rc = channels // 2, channels
        self.c1_d = nn.Conv2d(channels, dc, 1)
        self.c1_r = conv(channels, rc, kernel_size=3, padding=1)
        self.c2_d = nn.Conv2d(rc, dc, 1)
        self.c2_r = conv(rc, rc, kernel_size=3, padding=1)
        self.c3_d = nn.Conv2d(rc, dc, 1)
        self.c3_r = conv(rc, rc, kernel_size=3, padding=1)
        self.c4 = c4_conv(rc, dc, kernel_size=3, padding=1)
        self.act = act
        self.c5 = nn.Conv2d(dc * 4, fused_channels or channels, 1)

    def _remaining(self, conv: nn.Module, r: torch.Tensor) -> torch.Tensor:
        if not self.shallow_residual:
            return ops.conv_act(conv, self.act, r)
        return ops.activate(self.act, ops.add(conv(r), r))

    def distill(self, x: torch.Tensor) -> torch.Tensor:
        """The fused distilled features ``c5(cat(d1, d2, d3, r4))``."""
        act = self.act
        d1 = ops.conv_act(self.c1_d, act, x)
        r1 = self._remaining(self.c1_r, x)
        d2 = ops.conv_act(self.c2_d, act, r1)
        r2 = self._remaining(self.c2_r, r1)
        d3 = ops.conv_act(self.c3_d, act, r2)
        r3 = self._remaining(self.c3_r, r2)
        r4 = ops.conv_act(self.c4, act, r3)
        return self.c5(torch.cat([d1, d2, d3, r4], dim=1))
