"""Exponential moving average of the network weights (BasicSR's ``net_g_ema``).

After every optimizer step ``ema = decay * ema + (1 - decay) * weights`` for each parameter,
exactly BasicSR's ``model_ema`` (multiply, then add). Buffers (BatchNorm running statistics)
are copied, so an EMA network with BatchNorm carries the current statistics; BasicSR leaves
them at their initial values. The EMA network is saved as ``params_ema``.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightEMA:
    """Keeps ``net_ema`` as the moving average of a training network.

    Args:
        net_ema: the network holding the average (same architecture as the trained one).
        decay: weight of the old average per step, e.g. 0.999.
    """

    def __init__(self, net_ema: nn.Module, *, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay: expected 0 <= decay < 1, got {decay}")
        self.net = net_ema
        self.decay = decay
        self.net.eval()
        for param in self.net.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, net: nn.Module) -> None:
        """Set the average to ``net``'s weights (the start of training)."""
        self.net.load_state_dict(net.state_dict())

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One averaging step towards ``net``'s current weights."""
        ema_params = [p for p in self.net.parameters()]
        params = [p.detach() for p in net.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("EMA network and trained network have different parameters")
        torch._foreach_mul_(ema_params, self.decay)
        torch._foreach_add_(ema_params, params, alpha=1.0 - self.decay)
        for ema_buffer, buffer in zip(self.net.buffers(), net.buffers(), strict=True):
            ema_buffer.copy_(buffer)
