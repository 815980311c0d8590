"""Blueprint separable convolutions: BSConvU and its two LKDN variants.

BSConvU (Haase & Amthor, "Rethinking Depthwise Separable Convolutions", CVPR 2020) is a
1x1 pointwise conv followed by a kxk depthwise conv. LKDN (Xie et al., CVPRW 2023) adds the
re-parameterizable blueprint shallow block, RBSB (official class name ``BSConvU_rep``), whose
identity and 1x1 branches fold into a plain BSConvU after training (:meth:`RBSB.fuse`), and
the ablation variant ``BSConvU_idt`` (a residual BSConvU that does not fold).
Parameter names (``pw``, ``dw``, ``rep1x1``) are those of the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops


class BSConvU(nn.Module):
    """Pointwise conv (no bias) then depthwise conv (with bias).

    Args:
        in_channels: input channels.
        out_channels: output channels (also the depthwise groups).
        kernel_size: depthwise kernel size.
        padding: depthwise padding; ``kernel_size // 2`` keeps the spatial size.
        stride: depthwise stride.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, padding: int | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dw = nn.Conv2d(
            out_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=out_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))

    def forward_act(self, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """``act(self(x))`` with ``act`` fused into the depthwise conv where :func:`lkdn.archs.ops.conv_act` can."""
        if type(self).forward is not BSConvU.forward:  # a subclass computes something else (BSConvU_idt)
            return ops.activate(act, self(x))
        return ops.conv_act(self.dw, act, self.pw(x))


class BSConvU_idt(BSConvU):  # noqa: N801 (official name, used in YAML)
    """Residual BSConvU, ``y = dw(pw(x)) + x`` (LKDN ablation; needs in == out)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, padding: int | None = None) -> None:
        if in_channels != out_channels:
            raise ValueError(f"BSConvU_idt needs in_channels == out_channels, got {in_channels} and {out_channels}")
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x)) + x


class RBSB(nn.Module):
    """Re-parameterizable blueprint shallow block (official name ``BSConvU_rep``).

    ``f = pw(x) + x``; ``y = dw(f) + f + rep1x1(f)``, where ``rep1x1`` is a 1x1 depthwise conv
    with bias. After training, :meth:`fuse` returns the equivalent plain :class:`BSConvU`.

    Args:
        in_channels: input channels (must equal ``out_channels``: both branches are identities).
        out_channels: output channels.
        kernel_size: depthwise kernel size (odd).
        padding: depthwise padding; must be ``kernel_size // 2`` so the identity branches align.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, padding: int | None = None) -> None:
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"RBSB needs in_channels == out_channels, got {in_channels} and {out_channels}")
        if kernel_size % 2 == 0 or padding not in (None, kernel_size // 2):
            raise ValueError(f"RBSB needs an odd kernel with 'same' padding, got kernel {kernel_size}, padding {padding}")
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dw = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=out_channels)
        self.rep1x1 = nn.Conv2d(out_channels, out_channels, 1, groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pw(x) + x
        return self.dw(f) + f + self.rep1x1(f)

    @torch.no_grad()
    def fuse(self) -> BSConvU:
        """Return the plain BSConvU that computes exactly this block's function."""
        channels, k = self.dw.out_channels, self.dw.kernel_size[0]
        fused = BSConvU(channels, channels, kernel_size=k).to(self.dw.weight)
        eye = torch.eye(channels, dtype=self.pw.weight.dtype, device=self.pw.weight.device)
        fused.pw.weight.copy_(self.pw.weight + eye[:, :, None, None])
        centre = torch.zeros_like(self.dw.weight)
        centre[:, :, k // 2, k // 2] = 1.0
        rep = F.pad(self.rep1x1.weight, [k // 2] * 4)
        fused.dw.weight.copy_(self.dw.weight + centre + rep)
        fused.dw.bias.copy_(self.dw.bias + self.rep1x1.bias)
        return fused


BSConvU_rep = RBSB  # official class name

CONV_TYPES: dict[str, type[nn.Module]] = {"BSConvU": BSConvU, "BSConvU_idt": BSConvU_idt, "BSConvU_rep": RBSB, "RBSB": RBSB}


def conv_type(name: str) -> type[nn.Module]:
    """Look up a conv class by its YAML name; a ValueError lists the valid names."""
    try:
        return CONV_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown conv {name!r}; valid values: {', '.join(sorted(CONV_TYPES))}") from None
