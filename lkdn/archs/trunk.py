"""The blueprint-separable trunk shared by BSRN and LKDN (official key names).

``x`` replicated ``num_in`` times along channels, ``fea_conv`` (BSConvU 3x3), blocks
``B1..Bn``, then ``c2(GELU(c1(cat(B1..Bn)))) + fea`` and the upsampler. The networks differ
only in their block (ESDB or LKDB) and upsampler.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lkdn.archs.bsconv import BSConvU


class BlueprintTrunk(nn.Module):
    """Base class: builds the trunk; subclasses set ``self.upsampler`` after calling :meth:`build_trunk`."""

    upsampler: nn.Module

    def build_trunk(
        self, *, num_in_ch: int, num_in: int, num_feat: int, num_block: int, upscale: int,
        make_block: Callable[[], nn.Module],
    ) -> None:
        self.num_in = num_in
        self.num_block = num_block
        self.upscale = upscale
        self.fea_conv = BSConvU(num_in_ch * num_in, num_feat, kernel_size=3, padding=1)
        for i in range(1, num_block + 1):
            setattr(self, f"B{i}", make_block())
        self.c1 = nn.Conv2d(num_feat * num_block, num_feat, 1)
        self.GELU = nn.GELU()  # noqa: N815 (official attribute name)
        self.c2 = BSConvU(num_feat, num_feat, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_in > 1:
            x = torch.cat([x] * self.num_in, dim=1)
        fea = self.fea_conv(x)
        outs, out = [], fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        trunk = self.c2(self.GELU(self.c1(torch.cat(outs, dim=1)))) + fea
        return self.upsampler(trunk)

    @torch.no_grad()
    def fold_num_in(self) -> None:
        """Fold the input replication into ``fea_conv.pw`` (exact) and set ``num_in`` to 1.

        A 1x1 conv of ``cat([x] * n)`` equals a 1x1 conv of ``x`` whose weight is the sum of
        the n input-channel slices.
        """
        if self.num_in == 1:
            return
        pw = self.fea_conv.pw
        weight = pw.weight.unflatten(1, (self.num_in, -1)).sum(dim=1)
        folded = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False).to(pw.weight)
        folded.weight.copy_(weight)
        self.fea_conv.pw = folded
        self.num_in = 1
