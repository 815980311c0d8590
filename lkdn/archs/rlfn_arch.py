"""RLFN: Residual Local Feature Network (Kong et al., CVPR workshops 2022).

Reference: "Residual Local Feature Network for Efficient Super-Resolution",
https://arxiv.org/abs/2205.07514 ; official code github.com/bytedance/RLFN. The winner of the
NTIRE 2022 efficient-SR challenge (team ByteESR) and the baseline of NTIRE 2023 and 2024.

State-dict keys match the NTIRE 2022 checkpoint (``RLFN_NTIRE2022``, github.com/ofsoundof/NTIRE2022_ESR
``model_zoo/team04_rlfn.pth``, the network ``RLFN_cut``): ``fea_conv``, ``B1..B4`` (RLFB with ``c1_r``,
``c2_r``, ``c3_r``, ``c5``, ``esa``), ``LR_conv``, ``upsampler.0``. The NTIRE 2023/2024 baseline
(``RLFN_Prune``) holds the same weights under other names (``conv_1``, ``block_1..4``, ``conv_2``).
RLFN is published and trained with plain convolutions: there is no re-parameterized form.

The checkpoint works on pixel values in [0, 255] (the challenge code feeds it so); the network
takes and returns images in [0, 1] and scales by ``img_range`` inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, register_architecture
from lkdn.archs.rfdn_arch import positive_img_range
from lkdn.archs.shapes import count_blocks, scale_and_channels, shape
from lkdn.archs.upsamplers import PixelShuffleDirect


class LightESA(nn.Module):
    """RLFN's enhanced spatial attention: RFDN's ESA without ``conv_max`` and ``conv3_`` and their ReLUs.

    ``c = conv1(x)``; the gate branch is ``conv2`` (3x3, stride 2, no padding), a 7x7 max-pool with
    stride 3 and ``conv3`` (3x3), resized back bilinearly; the mask is
    ``sigmoid(conv4(branch + conv_f(c)))`` and multiplies ``x``. Inputs need at least 15x15 pixels.

    Args:
        channels: input and output channels.
        esa_channels: inner channels (official: 16, independent of ``channels``).
    """

    translation_local = False  # strided conv, pooling and resampling back: no finite tile context is exact

    def __init__(self, channels: int, esa_channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, esa_channels, 1)
        self.conv_f = nn.Conv2d(esa_channels, esa_channels, 1)
        self.conv2 = nn.Conv2d(esa_channels, esa_channels, 3, stride=2)
        self.conv3 = nn.Conv2d(esa_channels, esa_channels, 3, padding=1)
        self.conv4 = nn.Conv2d(esa_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        branch = self.conv3(F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3))
        branch = F.interpolate(branch, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(branch + self.conv_f(c1)))


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 convs with LeakyReLU (0.05), a skip, a 1x1 conv, ESA.

    ``esa(c5(x + act(c3_r(act(c2_r(act(c1_r(x))))))))``.

    Args:
        channels: input and output channels.
        mid_channels: channels between the three 3x3 convs.
        esa_channels: inner channels of the attention.
    """

    def __init__(self, channels: int, mid_channels: int, *, esa_channels: int = 16) -> None:
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid_channels, 3, padding=1)
        self.c2_r = nn.Conv2d(mid_channels, mid_channels, 3, padding=1)
        self.c3_r = nn.Conv2d(mid_channels, channels, 3, padding=1)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = LightESA(channels, esa_channels)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = ops.conv_act(self.c1_r, self.act, x)
        out = ops.conv_act(self.c2_r, self.act, out)
        out = ops.add(ops.conv_act(self.c3_r, self.act, out), x)
        return self.esa(self.c5(out))


def rlfn_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: RLFN``) of an RLFN state dict.

    ``img_range`` is not in the weights: the official 255 is assumed.
    """
    num_feat, num_in_ch = shape(state, "fea_conv.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    return {
        "type": "RLFN", "num_in_ch": num_in_ch, "num_out_ch": num_out_ch, "num_feat": num_feat,
        "mid_feat": shape(state, "B1.c1_r.weight")[0], "num_block": count_blocks(state, "B{}.c1_r.weight"),
        "esa_channels": shape(state, "B1.esa.conv1.weight")[0], "upscale": upscale,
    }


@register_architecture(
    test_options={"num_feat": 12, "mid_feat": 8, "num_block": 2, "esa_channels": 4},
    test_variants=({"img_range": 1.0, "upscale": 2},),
    spandrel=StateDictDetection(
        keys=("fea_conv.weight", "B1.c1_r.weight", "B1.c2_r.weight", "B1.c3_r.weight", "B1.c5.weight",
              "B1.esa.conv1.weight", "B1.esa.conv_f.weight", "B1.esa.conv4.weight", "LR_conv.weight",
              "upsampler.0.weight"),
        absent=("B1.c1_d.weight", "c.0.weight", "B1.esa.conv_max.weight"),  # RFDN's keys
        options=rlfn_options_from_state, min_size=15,
    ),
)
class RLFN(nn.Module):
    """Residual Local Feature Network; the NTIRE 2022 entry (``RLFN_cut``) with the defaults.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        num_feat: feature channels (official: 46; the paper's RLFN: 52).
        mid_feat: channels inside each block (official: 48).
        num_block: number of RLFBs (keys ``B1..B{num_block}``).
        esa_channels: inner channels of each block's attention.
        upscale: upscaling factor.
        img_range: pixel range the weights work on; inputs in [0, 1] are multiplied by it and
            outputs divided by it (official: 255).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 46, mid_feat: int = 48, num_block: int = 4,
        esa_channels: int = 16, upscale: int = 4, img_range: float = 255.0,
    ) -> None:
        super().__init__()
        self.num_block = num_block
        self.upscale = upscale
        self.img_range = positive_img_range(img_range)
        self.fea_conv = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        for i in range(1, num_block + 1):
            setattr(self, f"B{i}", RLFB(num_feat, mid_feat, esa_channels=esa_channels))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, padding=1)  # noqa: N815 (official key)
        self.upsampler = PixelShuffleDirect(num_feat, num_out_ch, upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x * self.img_range)
        out = fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
        return self.upsampler(self.LR_conv(out) + fea) / self.img_range
