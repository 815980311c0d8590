"""RFDN / E-RFDN: Residual Feature Distillation Network (Liu, Tang, Wu, ECCV workshops 2020).

Reference: "Residual Feature Distillation Network for Lightweight Image Super-Resolution",
https://arxiv.org/abs/2009.11551 ; official code github.com/njulj/RFDN (E-RFDN, the AIM 2020
efficient SR challenge winner). State-dict keys match ``RFDN_AIM.pth``: ``fea_conv``,
``B1..Bn`` (RFDB), ``c.0``, ``LR_conv``, ``upsampler.0``.

The network takes and returns images in [0, 1]; ``img_range`` scales them inside (the AIM
checkpoint was trained on pixel values in [0, 255]: ``img_range: 255``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.attention import CCA, ESA
from lkdn.archs.contract import StateDictDetection, register_architecture
from lkdn.archs.distillation import DistillationBody
from lkdn.archs.shapes import count_blocks, scale_and_channels, shape
from lkdn.archs.upsamplers import PixelShuffleDirect

logger = logging.getLogger(__name__)

ATTENTIONS = ("esa", "cca")


class RFDB(DistillationBody):
    """Residual feature distillation block.

    Three steps of a 1x1 distillation conv and a shallow residual block (SRB: 3x3 conv plus
    identity), a 3x3 conv on the last remaining features, 1x1 fusion of the four distilled
    parts (:class:`~lkdn.archs.distillation.DistillationBody`), then attention. LeakyReLU
    (slope 0.05) after every distillation conv. As in the official code, the block output has
    no skip connection to its input.

    Args:
        channels: input and output channels (``dc = channels // 2``, ``rc = channels``).
        attention: ``esa`` (E-RFDN, key ``esa``) or ``cca`` (RFDN paper, key ``cca``).
        cca_reduction: channel reduction inside CCA.
    """

    def __init__(self, channels: int, *, attention: str = "esa", cca_reduction: int = 4) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid values: {', '.join(ATTENTIONS)}")
        super().__init__(channels, conv=nn.Conv2d, c4_conv=nn.Conv2d, act=nn.LeakyReLU(0.05))
        self.attention = attention
        setattr(self, attention, ESA(channels) if attention == "esa" else CCA(channels, reduction=cca_reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attention)(self.distill(x))


def positive_img_range(img_range: float) -> float:
    """``img_range`` (the pixel range a network's weights work on) as a float; a ValueError unless positive."""
    if img_range <= 0:
        raise ValueError(f"img_range must be positive, got {img_range}")
    return float(img_range)


def _probe_image(channels: int, size: int = 32) -> torch.Tensor:
    """A smooth 1 x channels x size x size test image in [0.1, 0.9] (sinusoids, no noise)."""
    y = torch.linspace(0, 1, size)[:, None]
    x = torch.linspace(0, 1, size)[None]
    planes = [0.5 + 0.4 * torch.sin(2 * math.pi * (x * (k + 1) + y * (2 - k) / 2)) for k in range(channels)]
    return torch.stack(planes)[None]


@torch.no_grad()
def infer_img_range(kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                    candidates: tuple[float, ...] = (1.0, 255.0)) -> float:
    """The ``img_range`` (not stored in the weights) whose output on a smooth probe image is closest
    to its bicubic upscale: 255 for the official ``RFDN_AIM.pth``."""
    image = _probe_image(int(kwargs["num_in_ch"]))
    target = F.interpolate(image, scale_factor=int(kwargs["upscale"]), mode="bicubic", align_corners=False)
    errors = {}
    for img_range in candidates:
        model = RFDN(**kwargs, img_range=img_range)
        model.load_state_dict(state)
        errors[img_range] = float((model.eval()(image).float() - target).abs().mean())
    best = min(errors, key=errors.__getitem__)
    logger.info("RFDN img_range probe (mean |output - bicubic| per range): %s -> %s", errors, best)
    return best


def rfdn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: RFDN``) of an RFDN state dict; ``img_range`` is probed."""
    num_feat, num_in_ch = shape(state, "fea_conv.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    kwargs: dict[str, Any] = {
        "num_in_ch": num_in_ch, "num_feat": num_feat, "num_block": count_blocks(state, "B{}.c1_d.weight"),
        "num_out_ch": num_out_ch, "upscale": upscale,
    }
    if "B1.cca.conv_du.0.weight" in state:
        kwargs["attention"] = "cca"
        kwargs["cca_reduction"] = num_feat // shape(state, "B1.cca.conv_du.0.weight")[0]
    else:
        kwargs["attention"] = "esa"
    kwargs["img_range"] = infer_img_range(kwargs, state)
    return {"type": "RFDN", **kwargs}


# CCA squeezes to channels // 4 behind a ReLU: 32 channels keep every squeezed channel alive in tests.
@register_architecture(
    test_options={"num_feat": 32, "num_block": 2}, test_variants=({"attention": "cca", "img_range": 255.0},),
    spandrel=StateDictDetection(
        keys=("fea_conv.weight", "B1.c1_d.weight", "B1.c1_r.weight", "B1.c4.weight", "B1.c5.weight", "c.0.weight",
              "LR_conv.weight", "upsampler.0.weight"),
        any_of=(("B1.esa.conv1.weight", "B1.cca.conv_du.0.weight"),),
        options=rfdn_options_from_state, min_size=15,
    ),
)
class RFDN(nn.Module):
    """Residual Feature Distillation Network; E-RFDN with the defaults.

    E-RFDN (AIM 2020, ``RFDN_AIM.pth``): 50 channels, 4 blocks, ESA, ``img_range: 255``.
    RFDN of the paper: 48 channels, 6 blocks, CCA; RFDN-L: 52 channels. With CCA reduction 4
    the parameter counts are the paper's (RFDN x2/x3/x4: 534K/541K/550K; RFDN-L: 626K/633K/643K).

    Args:
        num_in_ch: input image channels.
        num_feat: feature channels.
        num_block: number of RFDBs (keys ``B1..B{num_block}``).
        num_out_ch: output image channels.
        upscale: upscaling factor.
        attention: attention at the end of each RFDB: ``esa`` or ``cca``.
        cca_reduction: channel reduction of CCA (``attention: cca``).
        img_range: pixel range the weights work on; inputs in [0, 1] are multiplied by it and
            outputs divided by it, so callers always use [0, 1].
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_feat: int = 50, num_block: int = 4, num_out_ch: int = 3, upscale: int = 4,
        attention: str = "esa", cca_reduction: int = 4, img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.upscale = upscale
        self.img_range = positive_img_range(img_range)
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(1, num_block + 1):
            setattr(self, f"B{i}", RFDB(num_feat, attention=attention, cca_reduction=cca_reduction))
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_block, num_feat, 1), nn.LeakyReLU(0.05))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)  # noqa: N815 (official key)
        self.upsampler = PixelShuffleDirect(num_feat, num_out_ch, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.img_range)
        outs, out = [], fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        trunk = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(trunk) / self.img_range
