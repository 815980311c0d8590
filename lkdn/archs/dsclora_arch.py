"""DSCLoRA: SPAN fine-tuned through convolutional low-rank adaptation (NTIRE 2025 efficient SR, 1st place).

Reference: Chai et al., "Distillation-Supervised Convolutional Low-Rank Adaptation for Efficient
Image Super-Resolution", CVPR workshops 2025 (https://arxiv.org/abs/2504.11271), team EMSR of the
NTIRE 2025 efficient-SR challenge; official code github.com/Amazingren/NTIRE2025_ESR
``models/team23_DSCF.py`` (class ``DSCF``). The checkpoint ``DSCLoRA_NTIRE2025`` is the submitted
one: a bare state dict of 130,828 parameters with the low-rank updates already merged, so every
3x3 conv is a plain ``eval_conv``.

The network is SPAN (:mod:`lkdn.archs.span_arch`) with 26 channels: the deploy form is
:class:`~lkdn.archs.span_arch.SPAN` built with ``deploy: true``, the same keys and the same function.
The method fine-tunes a trained, folded SPAN: every conv named by the method keeps its kernel
frozen and learns a low-rank update ``scaling * B @ A`` (:class:`ConvLoRA`; ``A`` is
``(rank * k, c_in * k)``, ``B`` is ``(c_out * k, rank * k)``, their product is read as the
``(c_out, c_in, k, k)`` kernel, the official layout and keys ``lora_A``, ``lora_B``), guided by a
larger teacher (the distillation is a training loss, not part of the network). The training form
(``deploy: false``) carries these updates: rank ``lora_rank`` on the 18 block convs, rank
``tail_lora_rank`` on ``conv_2`` and ``upsampler.0`` (the official file's configuration: 2 and 8,
``lora_alpha / r = 2``); with ``train_only_lora`` (the paper's fine-tuning) every other parameter
(biases, ``conv_1``, ``conv_cat``) is frozen too, otherwise it trains. :meth:`ConvLoRA.fuse`
merges an update into its conv, so :func:`lkdn.reparam.reparameterize_model` gives the deploy form
exactly. The frozen kernels are buffers: they come from the checkpoint the fine-tuning starts from
(``path.pretrain_network_g`` with ``strict_load_g: false``, the low-rank keys being new).

The network works on ``(x - rgb_mean) * img_range`` (official: 255); the output is in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lkdn.archs import ops
from lkdn.archs.contract import StateDictDetection, conv_receptive_radius, register_architecture
from lkdn.archs.shapes import shape
from lkdn.archs.span_arch import NUM_BLOCKS, SPAN, FoldedConv3XC, span_options_from_state

BLOCK_CONVS = ("c1_r", "c2_r", "c3_r")
# one low-rank key per group of convs: what tells a DSCLoRA training form from a SPAN state dict
BLOCK_LORA_KEY = "block_1.c1_r.eval_conv.lora_A"
TAIL_LORA_KEY = "conv_2.eval_conv.lora_A"
LORA_KEYS = (BLOCK_LORA_KEY, TAIL_LORA_KEY, "upsampler.0.lora_A")


class ConvLoRA(nn.Conv2d):
    """A conv with a frozen kernel and a trainable low-rank update: ``weight + scaling * B @ A``.

    ``weight`` is a buffer (frozen); ``bias``, ``lora_A`` and ``lora_B`` are trained. ``A`` starts
    Kaiming-uniform and ``B`` at zero (``init_std`` > 0: normal), so by default a fresh update
    changes nothing. :meth:`fuse` returns the plain conv with the update merged.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel_size: square kernel size (odd; padded to keep the size).
        rank: rank of the update, per kernel row (``A``: ``rank * k`` rows).
        scaling: factor of the update (official: ``lora_alpha / rank`` = 2).
        init_std: standard deviation of ``B``'s initial values (0: zeros).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, rank: int, scaling: float = 2.0,
                 init_std: float = 0.0) -> None:
        super().__init__(c_in, c_out, kernel_size, padding=kernel_size // 2)
        base = self.weight.detach().clone()
        del self.weight
        self.register_buffer("weight", base)
        self.scaling = float(scaling)
        self.lora_A = nn.Parameter(torch.empty(rank * kernel_size, c_in * kernel_size))
        self.lora_B = nn.Parameter(torch.zeros(c_out * kernel_size, rank * kernel_size))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if init_std:
            nn.init.normal_(self.lora_B, std=init_std)

    def delta(self) -> torch.Tensor:
        """The low-rank update of the kernel, in the kernel's shape."""
        return (self.lora_B @ self.lora_A).view(self.weight.shape) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight + self.delta(), self.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return the plain conv with the update merged into its kernel."""
        fused = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, padding=self.padding).to(self.weight)
        fused.weight.copy_(self.weight + self.delta())
        fused.bias.copy_(self.bias)
        return fused


class LoRAConv3XC(FoldedConv3XC):
    """A folded SPAN conv (key ``eval_conv``) whose kernel learns a low-rank update (:class:`ConvLoRA`).

    Args:
        c_in: input channels.
        c_out: output channels.
        rank: rank of the update.
        scaling: factor of the update.
        init_std: standard deviation of ``B``'s initial values (0: zeros).
    """

    def __init__(self, c_in: int, c_out: int, *, rank: int, scaling: float = 2.0, init_std: float = 0.0) -> None:
        super().__init__(c_in, c_out)
        self.eval_conv = ConvLoRA(c_in, c_out, 3, rank=rank, scaling=scaling, init_std=init_std)

    def forward_act(self, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        """``act(self(x))``: the kernel with its update is not a plain conv to fuse."""
        return ops.activate(act, self.eval_conv(x))

    @torch.no_grad()
    def fuse(self) -> FoldedConv3XC:
        """Return the folded conv with the update merged."""
        folded = FoldedConv3XC(self.eval_conv.in_channels, self.eval_conv.out_channels).to(self.eval_conv.weight)
        folded.eval_conv = self.eval_conv.fuse()
        return folded


def _lora_rank(state: Mapping[str, torch.Tensor], key: str) -> int:
    return shape(state, key)[0] // 3 if key in state else 0  # A: (rank * 3, c_in * 3)


def dsclora_options_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``network_g`` options (``type: DSCLoRA``) of a DSCLoRA training-form state dict.

    The ranks are read from ``lora_A``; ``lora_scaling``, ``img_range`` and ``rgb_mean`` are not in
    the weights: the official values are assumed. A state dict without low-rank keys is a SPAN
    deploy form (:func:`lkdn.archs.span_arch.span_options_from_state`).
    """
    options = span_options_from_state(state) | {"type": "DSCLoRA"}
    options.pop("deploy", None)
    return options | {"lora_rank": _lora_rank(state, BLOCK_LORA_KEY), "tail_lora_rank": _lora_rank(state, TAIL_LORA_KEY)}


@register_architecture(
    test_options={"feature_channels": 8, "lora_init_std": 0.01}, test_variants=({"lora_rank": 0},),
    receptive_radius=conv_receptive_radius,  # SPAN's layout: local
    deploy_options=lambda opt: opt | {"deploy": True},
    spandrel=StateDictDetection(
        keys=("conv_1.eval_conv.weight", "block_6.c3_r.eval_conv.weight", "conv_cat.weight", "upsampler.0.weight"),
        any_of=(LORA_KEYS,), options=dsclora_options_from_state,
    ),
)
class DSCLoRA(SPAN):
    """DSCLoRA: SPAN with low-rank conv updates for fine-tuning (see the module docstring).

    Args:
        num_in_ch: input image channels.
        num_out_ch: output image channels.
        feature_channels: feature channels (official: 26).
        upscale: upscaling factor.
        img_range: the input is ``(x - rgb_mean) * img_range`` (official: 255).
        rgb_mean: per-channel mean subtracted from the input.
        lora_rank: rank of the updates of the 18 block convs (official: 2; 0: none).
        tail_lora_rank: rank of the updates of ``conv_2`` and ``upsampler.0`` (official: 8; 0: none).
        lora_scaling: factor of every update (official: ``lora_alpha / rank`` = 2).
        lora_init_std: standard deviation of the updates' initial ``B`` (0, the default: a fresh
            update is zero).
        train_only_lora: freeze every parameter but the updates' ``lora_A`` and ``lora_B`` (the
            paper's fine-tuning); otherwise the biases, ``conv_1`` and ``conv_cat`` train too.
        deploy: plain convs only (the merged form of the official checkpoint, SPAN's keys).
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, feature_channels: int = 26, upscale: int = 4,
        img_range: float = 255.0, rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040), lora_rank: int = 2,
        tail_lora_rank: int = 8, lora_scaling: float = 2.0, lora_init_std: float = 0.0,
        train_only_lora: bool = False, deploy: bool = False,
    ) -> None:
        super().__init__(num_in_ch=num_in_ch, num_out_ch=num_out_ch, feature_channels=feature_channels,
                         upscale=upscale, img_range=img_range, rgb_mean=rgb_mean, deploy=True)
        for key, rank in (("lora_rank", lora_rank), ("tail_lora_rank", tail_lora_rank)):
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                raise ValueError(f"{key}: expected a rank of 0 or more, got {rank!r}")
        if deploy:
            return
        if lora_rank == tail_lora_rank == 0:
            raise ValueError("lora_rank, tail_lora_rank: both 0 leave no update to train; "
                             "the network without updates is the deploy form (deploy: true)")
        lora = {"scaling": lora_scaling, "init_std": lora_init_std}
        channels = feature_channels
        if lora_rank:
            for i in range(1, NUM_BLOCKS + 1):
                block = getattr(self, f"block_{i}")
                for name in BLOCK_CONVS:
                    setattr(block, name, LoRAConv3XC(channels, channels, rank=lora_rank, **lora))
        if tail_lora_rank:
            self.conv_2 = LoRAConv3XC(channels, channels, rank=tail_lora_rank, **lora)
            self.upsampler[0] = ConvLoRA(channels, num_out_ch * upscale**2, 3, rank=tail_lora_rank, **lora)
        if train_only_lora:
            for name, param in self.named_parameters():
                param.requires_grad_(name.endswith(("lora_A", "lora_B")))

