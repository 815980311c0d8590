"""VDSR: Very Deep Super-Resolution network (Kim, Lee, Lee, CVPR 2016).

Reference: "Accurate Image Super-Resolution Using Very Deep Convolutional Networks",
https://arxiv.org/abs/1511.04587. ``num_layer`` 3x3 convs of ``num_feat`` channels with ReLU
between them predict the residual between the bicubic-upsampled input and the HR image.

The bicubic upsampling is inside the network (:func:`upsample_bicubic`, by ``upscale``), so
the LR/HR datasets of the other networks work unchanged. ``upscale: 1`` is the original,
pre-upsampled formulation: the input is already bicubic-upsampled to the output size (the
multi-scale dataset, :mod:`lkdn.data.multiscale_dataset`, produces such inputs with this
same function). The weights do not depend on ``upscale``: a network trained on several
scales is tested at any scale by building it with that ``upscale`` (or by passing
``scale=`` to :meth:`VDSR.forward`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import ShapeError, shape


def upsample_bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of an NCHW tensor by an integer factor (PyTorch's kernel, no clamp)."""
    if scale == 1:
        return x
    return F.interpolate(x, size=(x.shape[-2] * scale, x.shape[-1] * scale), mode="bicubic", align_corners=False)


def vdsr_receptive_radius(net: nn.Module) -> int | None:
    """LR pixels of context: the convolutions' radius (in output pixels, an upper bound in LR pixels)
    plus 2 for the bicubic upsampling's four taps."""
    radius = conv_receptive_radius(net)
    return None if radius is None else radius + (2 if getattr(net, "upscale", 1) > 1 else 0)


def vdsr_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: VDSR``) of a VDSR state dict. The weights do not fix a scale: x4."""
    num_feat, num_in_ch = shape(state, "body.0.weight")[:2]
    num_layer = 0
    while f"body.{2 * num_layer}.weight" in state:
        num_layer += 1
    if shape(state, f"body.{2 * (num_layer - 1)}.weight")[0] != num_in_ch:
        raise ShapeError("the last VDSR conv must give as many channels as the input has")
    return {"type": "VDSR", "num_in_ch": num_in_ch, "num_feat": num_feat, "num_layer": num_layer, "upscale": 4}


@register_architecture(
    test_options={"num_in_ch": 3, "num_feat": 8, "num_layer": 4}, test_variants=({"num_in_ch": 1},),
    receptive_radius=vdsr_receptive_radius,
    spandrel=StateDictDetection(
        keys=("body.0.weight", "body.0.bias", "body.2.weight"), only=r"body\.\d*[02468]\.(weight|bias)",
        options=vdsr_options_from_state,
    ),
)
class VDSR(nn.Module):
    """Very deep residual network on the bicubic-upsampled input.

    Keys: ``body.{2k}`` for the k-th conv (ReLUs in between, none after the last conv).

    Args:
        num_in_ch: image channels, in and out (1 for the Y channel as in the paper, or 3).
        num_feat: feature channels.
        num_layer: number of conv layers (paper: 20).
        upscale: upscaling factor applied inside (1: the input is already upsampled).
    """

    def __init__(self, *, num_in_ch: int = 1, num_feat: int = 64, num_layer: int = 20, upscale: int = 4) -> None:
        super().__init__()
        if num_layer < 2:
            raise ValueError(f"num_layer must be at least 2 (first and last conv), got {num_layer}")
        if upscale < 1:
            raise ValueError(f"upscale must be a positive integer, got {upscale}")
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(num_layer - 2):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(num_feat, num_in_ch, 3, padding=1))
        self.body = nn.Sequential(*layers)
        for module in self.body:
            if isinstance(module, nn.Conv2d):  # He initialization, as in the paper
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, *, scale: int | None = None) -> torch.Tensor:
        """Super-resolve ``x`` by ``scale`` (default: ``self.upscale``)."""
        up = upsample_bicubic(x, self.upscale if scale is None else scale)
        return up + self.body(up)
