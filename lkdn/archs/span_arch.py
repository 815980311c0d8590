"""SPAN: Swift Parameter-free Attention Network (Wan et al., CVPR workshops 2024).

Reference: "Swift Parameter-free Attention Network for Efficient Super-Resolution",
https://arxiv.org/abs/2311.12770 ; official code github.com/hongyuanyu/SPAN (Apache-2.0), the
winner of the NTIRE 2024 efficient-SR challenge and the baseline of NTIRE 2025 and 2026.
State-dict keys match the official checkpoints: ``conv_1``, ``block_1..block_6`` (SPAB with
``c1_r``, ``c2_r``, ``c3_r``), ``conv_cat``, ``conv_2``, ``upsampler.0``.

Every 3x3 conv is a :class:`Conv3XC`: in the training form a 1x1 skip ``sk`` plus a
``1x1 -> 3x3 -> 1x1`` chain applied to the zero-padded input, which composes exactly into one
3x3 conv; :meth:`Conv3XC.fuse` returns it (:class:`FoldedConv3XC`, key ``eval_conv``). The
official code re-folds in every eval-mode forward; here the training form always computes its
branches, and the deploy form (``deploy: true``, what ``lkdn-reparam`` writes) is
folded once. The training form also carries the folded kernel as ``eval_conv`` buffers, refreshed
whenever its state dict is taken, so training-form checkpoints have the official keys (and load
into the official code and spandrel) without the kernel being a trained parameter.

The network works on ``(x - rgb_mean) * img_range`` (official: 255) and its output is used as
is, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import scale_and_channels, shape

NUM_BLOCKS = 6  # fixed by the architecture: the output fuses block 1, block 6 and block 6's first conv


class FoldedConv3XC(nn.Module):
    """The deploy form of :class:`Conv3XC`: one 3x3 conv under the official key ``eval_conv``.

    Args:
        c_in: input channels.
        c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_conv(x)

    def forward_act(self, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """``act(self(x))`` as one fused convolution where :func:`lkdn.archs.ops.conv_act` can."""
        return ops.conv_act(self.eval_conv, act, x)


class _FoldedKernel(nn.Module):
    """``eval_conv`` of the training form: the folded kernel as buffers (state-dict keys only)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(c_out, c_in, 3, 3))
        self.register_buffer("bias", torch.zeros(c_out))


class Conv3XC(nn.Module):
    """Re-parameterizable 3x3 conv: ``sk(x) + conv(pad(x, 1))``, ``conv`` = 1x1, 3x3 (no padding), 1x1.

    The zero padding is applied to ``x`` before the whole chain, so the chain is exactly one 3x3
    conv with padding 1 (the first 1x1 conv's bias is a constant everywhere, the pad ring
    included); :meth:`fuse` returns that conv plus the centred ``sk``.

    Args:
        c_in: input channels.
        c_out: output channels.
        gain: channel expansion inside the chain (official: 2).
    """

    def __init__(self, c_in: int, c_out: int, *, gain: int = 2) -> None:
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1), nn.Conv2d(c_in * gain, c_out * gain, 3), nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = _FoldedKernel(c_in, c_out)
        self.register_state_dict_pre_hook(self._refresh_eval_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.add(self.conv(F.pad(x, (1, 1, 1, 1))), self.sk(x))

    @torch.no_grad()
    def folded_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 weight and bias of the conv this module computes (see the class docstring)."""
        first, middle, last = self.conv
        w0, w1, w2 = first.weight.flatten(1), middle.weight, last.weight.flatten(1)
        weight = torch.einsum("on,nmhw,mi->oihw", w2, w1, w0)
        bias = w2 @ (middle.bias + torch.einsum("nmhw,m->n", w1, first.bias)) + last.bias
        weight = weight + F.pad(self.sk.weight, (1, 1, 1, 1))
        return weight, bias + self.sk.bias

    def _refresh_eval_conv(self, module: nn.Module, prefix: str, keep_vars: bool) -> None:
        weight, bias = self.folded_kernel()
        self.eval_conv.weight.copy_(weight)
        self.eval_conv.bias.copy_(bias)

    @torch.no_grad()
    def fuse(self) -> FoldedConv3XC:
        """Return the single 3x3 conv that computes exactly this module's function."""
        fused = FoldedConv3XC(self.sk.in_channels, self.sk.out_channels).to(self.sk.weight)
        weight, bias = self.folded_kernel()
        fused.eval_conv.weight.copy_(weight)
        fused.eval_conv.bias.copy_(bias)
        return fused


class SPAB(nn.Module):
    """Swift parameter-free attention block.

    ``o1 = c1_r(x)``, ``o2 = c2_r(SiLU(o1))``, ``o3 = c3_r(SiLU(o2))``; the parameter-free
    attention ``att = sigmoid(o3) - 0.5`` gates the residual: ``out = (o3 + x) * att``. Returns
    ``(out, SiLU(o1), att)``: the official block applies its SiLU in place, so the first conv's
    output it hands on is the activated one, and SPAN's fusion uses that.

    Args:
        channels: input, inner and output channels.
        deploy: build the three convs in their folded form.
    """

    def __init__(self, channels: int, *, deploy: bool = False) -> None:
        super().__init__()
        conv = FoldedConv3XC if deploy else Conv3XC
        self.c1_r = conv(channels, channels)
        self.c2_r = conv(channels, channels)
        self.c3_r = conv(channels, channels)
        self.act1 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o1 = ops.conv_act(self.c1_r, self.act1, x)
        o3 = self.c3_r(ops.conv_act(self.c2_r, self.act1, o1))
        out, att = gated_residual(o3, x)
        return out, o1, att


def gated_residual(o3: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPAN's parameter-free attention ``att = sigmoid(o3) - 0.5`` gating the residual: ``((o3 + x) * att, att)``."""
    att = torch.sigmoid(o3) - 0.5
    return ops.mul(ops.add(o3, x), att), att


def span_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: SPAN``) of a SPAN state dict, training or deploy form.

    ``img_range`` and ``rgb_mean`` are not in the weights: the official values are assumed.
    """
    deploy = "conv_1.sk.weight" not in state
    channels, num_in_ch = shape(state, "conv_1.eval_conv.weight" if deploy else "conv_1.sk.weight")[:2]
    upscale, num_out_ch, _ = scale_and_channels(shape(state, "upsampler.0.weight")[0], num_in_ch)
    options: dict[str, Any] = {"type": "SPAN", "num_in_ch": num_in_ch, "num_out_ch": num_out_ch,
                               "feature_channels": channels, "upscale": upscale}
    if deploy:
        options["deploy"] = True
    return options


@register_architecture(
    test_options={"feature_channels": 8}, test_variants=({"deploy": True}, {"img_range": 1.0}),
    receptive_radius=conv_receptive_radius,  # 3x3 convs (one per Conv3XC), per-pixel attention: local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("conv_1.eval_conv.weight", "block_1.c1_r.eval_conv.weight", "block_6.c3_r.eval_conv.weight",
              "conv_cat.weight", "conv_2.eval_conv.weight", "upsampler.0.weight"),
        # DSCLoRA's training form (lkdn.archs.dsclora_arch) has these keys and low-rank updates
        absent=("block_1.c1_r.eval_conv.lora_A", "conv_2.eval_conv.lora_A", "upsampler.0.lora_A"),
        options=span_options_from_state, supports_half=True,
    ),
)
class SPAN(nn.Module):
    """Swift Parameter-free Attention Network.

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        feature_channels: feature channels (48 for the paper's SPAN, 28 for the NTIRE 2026 baseline).
        upscale: upscaling factor.
        bias: accepted for the official signature; the official network always has biases (its
            argument reaches no layer), so only true is valid.
        img_range: the input is ``(x - rgb_mean) * img_range`` (official: 255).
        rgb_mean: per-channel mean subtracted from the input (one value per input channel).
        deploy: build every :class:`Conv3XC` in its folded form (loads deploy checkpoints such as
            the NTIRE baseline's ``eval_conv`` keys strictly).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 48, upscale: int = 4,
        bias: bool = True, img_range: float = 255.0, rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if bias is not True:
            raise ValueError("bias: the official SPAN always has biases (its bias argument is unused); only true is valid")
        if len(rgb_mean) != num_in_ch:
            raise ValueError(f"rgb_mean needs one value per input channel ({num_in_ch}), got {list(rgb_mean)}")
        self.upscale = upscale
        self.img_range = float(img_range)
        self.register_buffer("mean", torch.tensor([float(v) for v in rgb_mean]).view(1, -1, 1, 1), persistent=False)
        conv = FoldedConv3XC if deploy else Conv3XC
        self.conv_1 = conv(num_in_ch, feature_channels)
        for i in range(1, NUM_BLOCKS + 1):
            setattr(self, f"block_{i}", SPAB(feature_channels, deploy=deploy))
        self.conv_cat = nn.Conv2d(feature_channels * 4, feature_channels, 1)
        self.conv_2 = conv(feature_channels, feature_channels)
        self.upsampler = nn.Sequential(nn.Conv2d(feature_channels, num_out_ch * upscale**2, 3, padding=1),
                                       nn.PixelShuffle(upscale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.conv_1((x - self.mean.to(x.dtype)) * self.img_range)
        first, _, _ = self.block_1(feature)
        out = first
        for i in range(2, NUM_BLOCKS + 1):
            out, o1, _ = getattr(self, f"block_{i}")(out)
        fused = self.conv_cat(torch.cat([feature, self.conv_2(out), first, o1], dim=1))
        return self.upsampler(fused)
