"""Element-wise operations that run in place when no autograd graph is recorded.

In inference (``torch.no_grad`` / ``torch.inference_mode``) the intermediate tensors of a
block are dead once the next operation has read them, so activations, gates and residual adds
can write into them instead of allocating new buffers: fewer large allocations (and page
faults on the CPU) per forward pass, the same result. With autograd on, or while tracing
(ONNX export, fvcore's counting), the ordinary out-of-place operations run, so training,
exported graphs and operation counts are those of the reference network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def inplace_ok() -> bool:
    """In-place element-wise ops are safe: no autograd graph is recorded and nothing is traced."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing()


def activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, in place on ``x`` when :func:`inplace_ok` (GELU, LeakyReLU, ReLU, SiLU; others out of place)."""
    if not inplace_ok():
        return act(x)
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if isinstance(act, nn.LeakyReLU):
        return F.leaky_relu_(x, act.negative_slope)
    if isinstance(act, nn.ReLU):
        return F.relu_(x)
    if isinstance(act, nn.SiLU):
        return F.silu(x, inplace=True)
    return act(x)


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``, written into ``x`` when :func:`inplace_ok` (``x`` must be a fresh, unshared result)."""
    return x.add_(y) if inplace_ok() else x + y


def mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x * y``, written into ``x`` when :func:`inplace_ok` (``x`` must be a fresh, unshared result)."""
    return x.mul_(y) if inplace_ok() else x * y
