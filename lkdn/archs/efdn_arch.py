"""EFDN: Edge-enhanced Feature Distillation Network (Wang, CVPR workshops 2022).

Reference: "Edge-enhanced Feature Distillation Network for Efficient Super-Resolution",
https://arxiv.org/abs/2204.08759 ; official code github.com/icandle/EFDN. The overall winner of
the NTIRE 2023 efficient-SR challenge and the baseline of NTIRE 2025. The checkpoint
``EFDN_NTIRE2025`` (github.com/Amazingren/NTIRE2025_ESR ``model_zoo/team00_EFDN.pth``, the same
file as the 2022 entry ``team01_efdn.pth``) holds the deploy form: every EDBB already folded into
one 3x3 conv (keys ``cells.<i>.conv2.rep_conv``, ``cells.<i>.conv3.rep_conv``), 276,192 parameters.

Keys follow the official code: ``head``, ``cells.0..3`` (``conv1``, ``conv2``, ``conv3``, ``fuse``,
``att``, ``branch.0..3``), ``local_fuse.0..2``, ``tail.0``.

The training form (the default, ``deploy: false``) builds ``conv2`` and ``conv3`` of every cell as
an :class:`EDBB`, the edge-enhanced diverse branch block: a 3x3 conv, a 1x1 conv and 1x1 convs
followed by fixed Sobel-x, Sobel-y and Laplacian filters with learned per-channel scales (plus,
with ``with_13``, a 1x1 -> 3x3 expand-squeeze branch), summed, then PReLU. :meth:`EDBB.fuse`
folds the branches exactly into the deploy form :class:`FoldedEDBB`; ``deploy: true`` (what
``lkdn-reparam`` writes) loads the published checkpoint strictly. The branch
parameters have the official training-form keys (``conv1x1_sbx.k0``, ``.b0``, ``.scale``,
``.bias``, ``.mask``, ...).

The network takes and returns images in [0, 1]; as in the official code its output is clamped
to [0, 1] (``clamp: false`` leaves it unclamped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.attention import ESA
from lkdn.archs.contract import StateDictDetection, register_architecture
from lkdn.archs.shapes import scale_and_channels, shape

NUM_CELLS = 4  # fixed by the architecture: the local fusions read cells 1, 2 and 4 by position

# The fixed 3x3 edge filters of EDBB (rows are the vertical axis).
EDGE_FILTERS = {
    "sobelx": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobely": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


def _conv_parameters(c_in: int, c_out: int, kernel: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Weight and bias of a ``kernel`` x ``kernel`` conv, initialised as ``nn.Conv2d`` initialises its own."""
    weight = torch.empty(c_out, c_in, kernel, kernel)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(c_in * kernel * kernel)
    return nn.Parameter(weight), nn.Parameter(torch.empty(c_out).uniform_(-bound, bound))


class EdgeBranch(nn.Module):
    """A 1x1 conv, then a fixed edge filter per channel with a learned scale and bias.

    ``depthwise(scale * mask, bias)(conv1x1(pad(x, 1); k0, b0))``: the 1x1 conv is applied to the
    zero-padded input, so its bias fills the pad ring and the branch is exactly one 3x3 conv
    (:meth:`folded_kernel`).

    Args:
        c_in: input channels.
        c_out: output channels.
        kind: ``sobelx``, ``sobely`` or ``laplacian``.
    """

    def __init__(self, c_in: int, c_out: int, kind: str) -> None:
        super().__init__()
        if kind not in EDGE_FILTERS:
            raise ValueError(f"unknown edge filter {kind!r}; valid values: {', '.join(EDGE_FILTERS)}")
        self.k0, self.b0 = _conv_parameters(c_in, c_out, 1)
        self.scale = nn.Parameter(torch.randn(c_out, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(c_out) * 1e-3)
        self.register_buffer("mask", torch.tensor(EDGE_FILTERS[kind]).expand(c_out, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.k0, self.b0)
        return F.conv2d(y, self.scale * self.mask, self.bias, groups=self.mask.shape[0])

    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 weight and bias of the conv this branch computes."""
        filters = (self.scale * self.mask)[:, 0]  # c_out x 3 x 3
        weight = filters[:, None] * self.k0  # c_out x c_in x 3 x 3 (k0 is c_out x c_in x 1 x 1)
        return weight, self.bias + self.b0 * filters.sum(dim=(1, 2))


class ExpandSqueezeBranch(nn.Module):
    """A 1x1 conv to ``mid`` channels then a 3x3 conv, on the zero-padded input (exactly one 3x3 conv).

    Args:
        c_in: input channels.
        c_out: output channels.
        depth_multiplier: ``mid = int(c_out * depth_multiplier)``.
    """

    def __init__(self, c_in: int, c_out: int, *, depth_multiplier: float = 1.0) -> None:
        super().__init__()
        mid = int(c_out * depth_multiplier)
        self.k0, self.b0 = _conv_parameters(c_in, mid, 1)
        self.k1, self.b1 = _conv_parameters(mid, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(F.pad(x, (1, 1, 1, 1)), self.k0, self.b0), self.k1, self.b1)

    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 weight and bias of the conv this branch computes."""
        weight = torch.einsum("omhw,mi->oihw", self.k1, self.k0.flatten(1))
        return weight, self.b1 + torch.einsum("omhw,m->o", self.k1, self.b0)


class FoldedEDBB(nn.Module):
    """The deploy form of :class:`EDBB`: one 3x3 conv (``rep_conv``) then PReLU (``act``).

    Args:
        c_in: input channels.
        c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.rep_conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.rep_conv(x))


class EDBB(nn.Module):
    """Edge-enhanced diverse branch block, the training form: parallel branches summed, then PReLU.

    Branches: ``rep_conv`` (3x3), ``conv1x1``, ``conv1x1_sbx`` / ``conv1x1_sby`` /
    ``conv1x1_lpl`` (:class:`EdgeBranch` with Sobel-x, Sobel-y, Laplacian) and, with ``with_13``,
    ``conv1x1_3x3`` (:class:`ExpandSqueezeBranch`). Every branch is a 3x3 conv in disguise, so
    :meth:`fuse` returns their sum as one conv (:class:`FoldedEDBB`, the same PReLU).

    Args:
        c_in: input channels.
        c_out: output channels.
        with_13: add the 1x1 -> 3x3 expand-squeeze branch (official default: off).
    """

    def __init__(self, c_in: int, c_out: int, *, with_13: bool = False) -> None:
        super().__init__()
        self.rep_conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv1x1 = nn.Conv2d(c_in, c_out, 1)
        if with_13:
            self.conv1x1_3x3 = ExpandSqueezeBranch(c_in, c_out)
        self.conv1x1_sbx = EdgeBranch(c_in, c_out, "sobelx")
        self.conv1x1_sby = EdgeBranch(c_in, c_out, "sobely")
        self.conv1x1_lpl = EdgeBranch(c_in, c_out, "laplacian")
        self.act = nn.PReLU(c_out)

    def _seq_branches(self) -> list[nn.Module]:
        extra = [self.conv1x1_3x3] if hasattr(self, "conv1x1_3x3") else []
        return [*extra, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rep_conv(x) + self.conv1x1(x)
        for branch in self._seq_branches():
            y = y + branch(x)
        return self.act(y)

    @torch.no_grad()
    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 weight and bias of the sum of the branches."""
        weight = self.rep_conv.weight + F.pad(self.conv1x1.weight, (1, 1, 1, 1))
        bias = self.rep_conv.bias + self.conv1x1.bias
        for branch in self._seq_branches():
            w, b = branch.folded_kernel()
            weight, bias = weight + w, bias + b
        return weight, bias

    @torch.no_grad()
    def fuse(self) -> FoldedEDBB:
        """Return the single conv plus PReLU that computes exactly this module's function."""
        fused = FoldedEDBB(self.rep_conv.in_channels, self.rep_conv.out_channels).to(self.rep_conv.weight)
        weight, bias = self.folded_kernel()
        fused.rep_conv.weight.copy_(weight)
        fused.rep_conv.bias.copy_(bias)
        fused.act.weight.copy_(self.act.weight)
        return fused


class PointwisePReLU(nn.Module):
    """A 1x1 conv then PReLU (keys ``conv1x1``, ``act``): the first conv of a cell."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1x1(x))


class Cell(nn.Module):
    """EFDN's cell: three convs in a chain, a 1x1 fusion of the input and the three outputs, ESA, a skip.

    Each of the four features is reduced to half the channels by its own 1x1 conv (``branch.0..3``)
    before the concatenation; ``fuse`` (1x1) brings the result back to ``channels``; ESA
    (RFDN's, with ``conv_max`` and ``conv3_``) gates it and the cell input is added.

    Args:
        channels: input and output channels.
        deploy: build ``conv2`` and ``conv3`` in their folded form.
        with_13: the EDBBs of the training form get their expand-squeeze branch.
    """

    def __init__(self, channels: int, *, deploy: bool = False, with_13: bool = False) -> None:
        super().__init__()
        self.conv1 = PointwisePReLU(channels)
        if deploy:
            self.conv2, self.conv3 = FoldedEDBB(channels, channels), FoldedEDBB(channels, channels)
        else:
            self.conv2 = EDBB(channels, channels, with_13=with_13)
            self.conv3 = EDBB(channels, channels, with_13=with_13)
        self.fuse = nn.Conv2d(channels * 2, channels, 1)
        self.att = ESA(channels)
        self.branch = nn.ModuleList(nn.Conv2d(channels, channels // 2, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(x)
        out2 = self.conv2(out1)
        out3 = self.conv3(out2)
        parts = [branch(t) for branch, t in zip(self.branch, (x, out1, out2, out3), strict=True)]
        return self.att(self.fuse(torch.cat(parts, dim=1))) + x


def efdn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: EFDN``) of an EFDN state dict, training or deploy form."""
    num_feat, num_in_ch = shape(state, "head.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "tail.0.weight")[0], num_in_ch)
    options: dict[str, Any] = {"type": "EFDN", "num_in_ch": num_in_ch, "num_out_ch": num_out_ch, "num_feat": num_feat,
                               "upscale": upscale}
    if "cells.0.conv2.conv1x1.weight" not in state:
        options["deploy"] = True
    elif "cells.0.conv2.conv1x1_3x3.k0" in state:
        options["with_13"] = True
    return options


@register_architecture(
    # ESA squeezes to num_feat // 4 behind ReLUs: 32 channels keep every squeezed channel alive in tests.
    test_options={"num_feat": 32}, test_variants=({"deploy": True}, {"with_13": True}, {"clamp": False}),
    deploy_options=lambda opt: {k: v for k, v in opt.items() if k != "with_13"} | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("head.weight", "cells.0.conv1.conv1x1.weight", "cells.0.conv2.act.weight", "cells.0.fuse.weight",
              "cells.0.att.conv_max.weight", "cells.0.branch.3.weight", "cells.3.conv3.act.weight",
              "local_fuse.2.weight", "tail.0.weight"),
        options=efdn_options_from_state, min_size=15,
    ),
)
class EFDN(nn.Module):
    """Edge-enhanced Feature Distillation Network.

    ``head`` (3x3), four cells with local fusions ``f2 = local_fuse.0([c1, c2])``,
    ``c3 = cell3(f2)``, ``f3 = local_fuse.1([c2, c3])``, ``c4 = cell4(f3)``,
    ``f4 = local_fuse.2([c2, c4])`` (the second cell's output, as in the official code), then
    ``tail(f4 + head)`` (3x3 conv and PixelShuffle).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        num_feat: feature channels (official: 48; even, for the half-width branches).
        upscale: upscaling factor.
        deploy: build every EDBB in its folded form (loads the published checkpoint strictly).
        with_13: the training form's EDBBs get the 1x1 -> 3x3 branch (official default: off).
        clamp: clamp the output to [0, 1], as the official network does.
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 48, upscale: int = 4, deploy: bool = False,
        with_13: bool = False, clamp: bool = True,
    ) -> None:
        super().__init__()
        if num_feat % 2:
            raise ValueError(f"num_feat must be even (each cell fuses four half-width branches), got {num_feat}")
        self.upscale = upscale
        self.clamp = clamp
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.cells = nn.ModuleList(Cell(num_feat, deploy=deploy, with_13=with_13) for _ in range(NUM_CELLS))
        self.local_fuse = nn.ModuleList(nn.Conv2d(num_feat * 2, num_feat, 1) for _ in range(NUM_CELLS - 1))
        self.tail = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        c1 = self.cells[0](head)
        c2 = self.cells[1](c1)
        c3 = self.cells[2](self.local_fuse[0](torch.cat([c1, c2], dim=1)))
        c4 = self.cells[3](self.local_fuse[1](torch.cat([c2, c3], dim=1)))
        out = self.tail(self.local_fuse[2](torch.cat([c2, c4], dim=1)) + head)
        return out.clamp(0, 1) if self.clamp else out
