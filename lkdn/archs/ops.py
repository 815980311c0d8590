"""Element-wise operations that run in place when no autograd graph is recorded.

In inference (``torch.no_grad`` / ``torch.inference_mode``) the intermediate tensors of a
block are dead once the next operation has read them, so activations, gates and residual adds
can write into them instead of allocating new buffers: fewer large allocations (and page
faults on the CPU) per forward pass, the same result. With autograd on, or while tracing
(ONNX export, fvcore's counting), the ordinary out-of-place operations run, so training,
exported graphs and operation counts are those of the reference network.

On the CPU, :func:`conv_act` also runs a convolution and the activation after it as one oneDNN
convolution with the activation as a post-op (``torch.ops.mkldnn._convolution_pointwise``, the
kernel ``torch.compile`` fuses to): the activation is applied while the output is still in
cache instead of in a second pass over a large tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_state


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


def _unary_attr(act: nn.Module) -> tuple[str, list, str] | None:
    """oneDNN's post-op for ``act``: (name, scalars, algorithm), or None when it has none."""
    if isinstance(act, nn.GELU):
        return "gelu", [None], act.approximate
    if isinstance(act, nn.ReLU):
        return "relu", [None], ""
    if isinstance(act, nn.SiLU):
        return "swish", [None], ""
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [act.negative_slope], ""
    return None


def _pointwise_op():
    """``torch.ops.mkldnn._convolution_pointwise`` where this torch build has it, else None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


_POINTWISE = _pointwise_op()
_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def conv_act(conv: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(conv(x))``; on the CPU in inference, one fused oneDNN convolution where it applies.

    ``conv`` is an ``nn.Conv2d`` (fused directly) or a module with a ``forward_act(x, act)``
    method that fuses its own last convolution (BSConvU's depthwise conv). Under CPU autocast the
    fused convolution runs in the autocast dtype (bfloat16), as ``conv`` would. Everything else
    (autograd, tracing, ``torch.compile``, CUDA, float16, a conv with forward hooks) runs
    ``activate(act, conv(x))``.
    """
    # a module with forward hooks (feature extraction, counting) must see its own call
    if inplace_ok() and x.device.type == "cpu" and not torch.compiler.is_compiling() and not _has_hooks(conv):
        if isinstance(conv, nn.Conv2d):
            fused = _fused_conv2d(conv, act, x)
            if fused is not None:
                return fused
        elif hasattr(conv, "forward_act"):
            return conv.forward_act(x, act)
    return activate(act, conv(x))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module_state._global_forward_hooks
                or module_state._global_forward_pre_hooks)


def _fused_conv2d(conv: nn.Conv2d, act: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    attr = _unary_attr(act)
    if _POINTWISE is None or attr is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
    if dtype not in _FUSED_DTYPES or x.dim() != 4 or (conv.weight.dtype != dtype and not autocast):
        return None  # the unfused conv runs (or raises its own error on mismatched dtypes)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    name, scalars, algorithm = attr
    return _POINTWISE(x.to(dtype), conv.weight.to(dtype), bias, list(conv.padding), list(conv.stride),
                      list(conv.dilation), conv.groups, name, scalars, algorithm)


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + y``, written into ``x`` when :func:`inplace_ok` (``x`` must be a fresh, unshared result)."""
    return x.add_(y) if inplace_ok() else x + y


def mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x * y``, written into ``x`` when :func:`inplace_ok` (``x`` must be a fresh, unshared result)."""
    return x.mul_(y) if inplace_ok() else x * y
