"""The blueprint-separable trunk shared by BSRN and LKDN (official key names).

``x`` replicated ``num_in`` times along channels, ``fea_conv`` (BSConvU 3x3), blocks
``B1..Bn``, then ``c2(GELU(c1(cat(B1..Bn)))) + fea`` and the upsampler. The networks differ
only in their block (ESDB or LKDB) and upsampler.

In inference (:func:`lkdn.archs.ops.inplace_ok`) the ``n * num_feat``-channel concatenation,
the largest tensor of the network (103 MB for LKDN at 320x180), is never built: ``c1`` is
applied as the sum of ``n`` 1x1 convolutions of each block output with its slice of ``c1``'s
weight, accumulated in place while the blocks run, so each block output is freed as soon as the
next block and its share of ``c1`` have read it. The result equals the concatenated form up to
float rounding of the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.bsconv import BSConvU

# Option values of the re-parameterizable training forms and the deploy forms they fold into.
DEPLOY_VALUES: dict[str, dict[str, str]] = {
    "conv": {"BSConvU_rep": "BSConvU", "RBSB": "BSConvU"},
    "upsampler": {"pixelshuffle_rep": "pixelshuffledirect"},
}


def blueprint_deploy_options(opt: dict[str, Any]) -> dict[str, Any]:
    """LKDN's and BSRN's deploy options: ``conv: BSConvU_rep`` -> ``BSConvU``, ``pixelshuffle_rep`` -> ``pixelshuffledirect``."""
    out = dict(opt)
    for key, renames in DEPLOY_VALUES.items():
        if out.get(key) in renames:
            out[key] = renames[out[key]]
    return out


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
        fused = self._fuse_accumulated(fea) if ops.inplace_ok() else self._fuse_concatenated(fea)
        trunk = ops.add(self.c2(ops.activate(self.GELU, fused)), fea)
        return self.upsampler(trunk)

    def _blocks(self) -> list[nn.Module]:
        return [getattr(self, f"B{i}") for i in range(1, self.num_block + 1)]

    def _fuse_concatenated(self, fea: torch.Tensor) -> torch.Tensor:
        outs, out = [], fea
        for block in self._blocks():
            out = block(out)
            outs.append(out)
        return self.c1(torch.cat(outs, dim=1))

    def _fuse_accumulated(self, fea: torch.Tensor) -> torch.Tensor:
        """``c1(cat(B1..Bn))`` without the concatenation (inference only: accumulated in place)."""
        weights = self.c1.weight.split(self.c1.in_channels // self.num_block, dim=1)
        out, acc = fea, None
        for i, (block, weight) in enumerate(zip(self._blocks(), weights, strict=True)):
            out = block(out)
            part = F.conv2d(out, weight, self.c1.bias if i == 0 else None)
            acc = part if acc is None else acc.add_(part)
        assert acc is not None  # num_block >= 1
        return acc

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
