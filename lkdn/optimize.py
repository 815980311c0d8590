"""Inference-time rewrites that keep a network's function and make it faster.

:func:`optimize_network` applies, in order (each step can be switched off; docs/efficiency.md
has the measured effect of each):

1. **Re-parameterization** (:func:`lkdn.reparam.reparameterize_model` with ``fold_num_in``):
   a training-form network (RBSB, ``pixelshuffle_rep``, input replication) becomes its deploy
   form, which computes the same function with fewer and smaller convolutions.
2. **Pixel norm on NHWC views** (:class:`PixelNormNHWC`): LKDN's ``pixel_norm`` permutes to
   NHWC, runs LayerNorm and copies back to a contiguous NCHW tensor. On a ``channels_last``
   tensor the NHWC permutation is already contiguous, so :class:`PixelNormNHWC` normalizes that
   view and returns a ``channels_last`` result without any copy. The copy of the original is what
   makes ``channels_last`` alone lose half of its gain: every block flips the memory format,
   and every following convolution reorders its input back.
3. **LKDN blocks with in-place element-wise ops** (:class:`FastLKDB`, :class:`FastLKA`):
   GELU, the attention gate and the residual add write into tensors that are dead afterwards,
   so fewer large buffers are allocated (and page-faulted) per forward pass.
4. **LKDN trunk without the big concatenation** (:class:`FastLKDN`): ``c1(cat(B1..Bn))`` is
   computed as the sum of ``n`` 1x1 convolutions of each block output with its slice of ``c1``'s
   weight, accumulated in place while the blocks run, so the ``n * num_feat``-channel tensor is
   never built (it is the largest one in the network: 103 MB for LKDN at 320x180).
5. **channels_last** memory format for weights (and, in :class:`lkdn.Upscaler`, inputs): oneDNN
   and cuDNN run convolutions natively in NHWC.

Every rewrite is checked at optimization time on a small random input against the network it
replaces (max abs difference at most ``1e-4``); a rewrite whose check fails is
dropped with a warning, so an architecture change cannot silently change results.
:func:`compile_network` (``torch.compile``) and :func:`tune_cpu_allocator` (glibc keeps freed
memory for reuse) are separate: the first costs start-up time, the second changes the whole
process. :class:`lkdn.Upscaler` applies the allocator tuning on the CPU by default
(``tune_allocator=False`` to opt out) and compiles only when asked.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lkdn.archs.attention import LKA
from lkdn.archs.lkdn_arch import LKDB, LKDN, PixelNorm
from lkdn.reparam import is_foldable, reparameterize_model

logger = logging.getLogger(__name__)

#: Largest max abs difference a rewrite may introduce on the float32 probe output.
PROBE_TOLERANCE = 1e-4


def _gelu_like(act: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """In-place GELU with the same ``approximate`` setting as ``act`` (an ``nn.GELU``)."""
    approximate = getattr(act, "approximate", "none")

    def gelu_(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.gelu_(x, approximate=approximate)

    return gelu_


def _inplace_ok() -> bool:
    """In-place element-wise ops are safe when no autograd graph is recorded."""
    return not torch.is_grad_enabled()


class PixelNormNHWC(nn.Module):
    """Pixel norm (LayerNorm over the channels of each pixel) without a layout round trip.

    Same function and parameters as :class:`lkdn.archs.lkdn_arch.PixelNorm`; the output keeps
    the NHWC strides of the permuted view (``channels_last``) instead of being copied to NCHW.

    Args:
        norm: the PixelNorm (an ``nn.LayerNorm`` over channels) to take parameters from.
    """

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = norm.eps
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class FastLKA(nn.Module):
    """LKA with the gate multiplied in place: ``dwd(dw(pw(u))) *= u`` (same submodules as LKA).

    Args:
        lka: the LKA module to take the convolutions from.
    """

    def __init__(self, lka: LKA) -> None:
        super().__init__()
        self.pointwise, self.depthwise, self.depthwise_dilated = lka.pointwise, lka.depthwise, lka.depthwise_dilated

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        attn = self.depthwise_dilated(self.depthwise(self.pointwise(u)))
        return attn.mul_(u) if _inplace_ok() else attn * u


class FastLKDB(nn.Module):
    """LKDB with in-place GELU, residual add and attention gate (:class:`FastLKA`).

    Computes exactly :class:`lkdn.archs.lkdn_arch.LKDB`'s function with the same parameters;
    in-place ops are used only when autograd is off (inference).

    Args:
        block: the LKDB to take the submodules from.
    """

    def __init__(self, block: LKDB) -> None:
        super().__init__()
        for name in ("c1_d", "c1_r", "c2_d", "c2_r", "c3_d", "c3_r", "c4", "c5", "c6"):
            setattr(self, name, getattr(block, name))
        self.act = block.act
        self.atten = FastLKA(block.atten) if isinstance(block.atten, LKA) else block.atten
        self.pixel_norm = block.pixel_norm
        self._gelu_ = _gelu_like(block.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = _inplace_ok()
        act = self._gelu_ if inplace else self.act
        d1 = act(self.c1_d(x))
        r1 = act(self.c1_r(x))
        d2 = act(self.c2_d(r1))
        r2 = act(self.c2_r(r1))
        d3 = act(self.c3_d(r2))
        r3 = act(self.c3_r(r2))
        r4 = act(self.c4(r3))
        out = self.pixel_norm(self.c6(self.atten(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))))
        return out.add_(x) if inplace else out + x


def _split_conv1x1(conv: nn.Conv2d, parts: int) -> nn.ModuleList:
    """``conv`` (1x1) over ``parts`` concatenated equal inputs as ``parts`` 1x1 convs (bias on the first)."""
    if conv.in_channels % parts:
        raise ValueError(f"cannot split {conv.in_channels} input channels into {parts} equal parts")
    width = conv.in_channels // parts
    convs = nn.ModuleList()
    for i, weight in enumerate(conv.weight.detach().split(width, dim=1)):
        part = nn.Conv2d(width, conv.out_channels, 1, bias=i == 0 and conv.bias is not None)
        part = part.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            part.weight.copy_(weight)
            if part.bias is not None:
                part.bias.copy_(conv.bias)
        convs.append(part)
    return convs


class FastLKDN(nn.Module):
    """LKDN whose ``c1(cat(B1..Bn))`` is accumulated block by block (no concatenation).

    Same function as :class:`lkdn.archs.lkdn_arch.LKDN` (up to float rounding of the sum); the
    ``n * num_feat``-channel concatenation is never built, and each block output can be freed as
    soon as the next block and its share of ``c1`` have used it.

    Args:
        net: the LKDN to take the submodules from (blocks included, as they are).
    """

    def __init__(self, net: LKDN) -> None:
        super().__init__()
        self.num_in = net.num_in
        self.upscale = net.upscale
        self.fea_conv = net.fea_conv
        blocks = [getattr(net, f"B{i}") for i in range(1, net.num_block + 1)]
        self.blocks = nn.ModuleList(blocks)
        self.c1_parts = _split_conv1x1(net.c1, net.num_block)
        self.GELU = net.GELU  # noqa: N815 (the attribute name of LKDN)
        self._gelu_ = _gelu_like(net.GELU)
        self.c2 = net.c2
        self.upsampler = net.upsampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = _inplace_ok()
        if self.num_in > 1:
            x = torch.cat([x] * self.num_in, dim=1)
        fea = self.fea_conv(x)
        out, acc = fea, None
        for block, conv in zip(self.blocks, self.c1_parts, strict=True):
            out = block(out)
            part = conv(out)
            acc = part if acc is None else (acc.add_(part) if inplace else acc + part)
        assert acc is not None  # num_block >= 1
        trunk = self.c2(self._gelu_(acc) if inplace else self.GELU(acc))
        trunk = trunk.add_(fea) if inplace else trunk + fea
        return self.upsampler(trunk)


# ---------------------------------------------------------------------------------------------


def _swap_modules(module: nn.Module, rule: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace every descendant for which ``rule`` returns a module; return how many were replaced."""
    count = 0
    for name, child in module.named_children():
        new = rule(child)
        if new is not None:
            setattr(module, name, new)
            count += 1
        else:
            count += _swap_modules(child, rule)
    return count


def _pixel_norm_rule(module: nn.Module) -> nn.Module | None:
    return PixelNormNHWC(module) if type(module) is PixelNorm else None


def _block_rule(module: nn.Module) -> nn.Module | None:
    return FastLKDB(module) if type(module) is LKDB else None


def _probe_input(net: nn.Module, size: int = 24) -> torch.Tensor | None:
    """A small random input that ``net`` accepts (3, 1 or its first conv's channels), or None."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return None
    generator = torch.Generator().manual_seed(0)
    for channels in dict.fromkeys((3, 1, first.in_channels * first.groups)):
        x = torch.rand(1, channels, size, size, generator=generator).to(first.weight)
        try:
            with torch.inference_mode():
                net(x)
        except (RuntimeError, ValueError):
            continue
        return x
    return None


def _same_function(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> tuple[bool, float]:
    with torch.inference_mode():
        expected, got = reference(x), candidate(x)
    if expected.shape != got.shape:
        return False, float("inf")
    diff = (expected.float() - got.float()).abs().max().item()
    return diff <= PROBE_TOLERANCE, diff


def optimize_network(
    net: nn.Module, *, reparameterize: bool = True, pixel_norm: bool = True, fast_blocks: bool = True,
    fast_trunk: bool = True, channels_last: bool = True, check: bool = True, applied: list[str] | None = None,
) -> nn.Module:
    """Return a faster copy of ``net`` (eval mode) computing the same function.

    Args:
        net: a network of ours (any registered one; LKDN-specific steps apply to LKDN / LKDN_S).
            It is not modified.
        reparameterize: fold re-parameterizable branches and LKDN's input replication.
        pixel_norm: :class:`PixelNormNHWC` in place of every PixelNorm.
        fast_blocks: :class:`FastLKDB` in place of every LKDB (in-place element-wise ops).
        fast_trunk: :class:`FastLKDN` in place of an LKDN (no ``c1`` concatenation).
        channels_last: weights in ``channels_last`` memory format (give inputs in it too).
        check: compare each rewrite with the network before it on a small random input and drop
            the rewrites whose output differs by more than ``1e-4`` (with a warning).
        applied: a list to which the names of the rewrites that were applied are appended.
    """
    applied = [] if applied is None else applied
    was_training = net.training
    net = copy.deepcopy(net).eval()
    probe = _probe_input(net) if check else None

    def accept(name: str, before: nn.Module, after: nn.Module) -> nn.Module:
        if probe is None:
            applied.append(name)
            return after
        ok, diff = _same_function(before, after, probe)
        if ok:
            logger.debug("optimize: %s kept (probe max abs diff %.2e)", name, diff)
            applied.append(name)
            return after
        logger.warning("optimize: %s dropped: it changed the output by %.3g (> %g)", name, diff, PROBE_TOLERANCE)
        return before

    foldable = any(is_foldable(m) for m in net.modules()) or getattr(net, "num_in", 1) > 1
    if reparameterize and foldable:
        net = accept("re-parameterization", net, reparameterize_model(net, fold_num_in=True))
    if pixel_norm:
        candidate = copy.deepcopy(net)
        if _swap_modules(candidate, _pixel_norm_rule):
            net = accept("PixelNormNHWC", net, candidate)
    if fast_blocks:
        candidate = copy.deepcopy(net)
        if _swap_modules(candidate, _block_rule):
            net = accept("FastLKDB blocks", net, candidate)
    if fast_trunk and type(net) is LKDN:
        net = accept("FastLKDN trunk", net, FastLKDN(copy.deepcopy(net)))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if was_training:
        logger.debug("optimize: the optimized network is in eval mode (it is meant for inference)")
    return net.eval()


def use_nhwc_pixel_norm(net: nn.Module) -> int:
    """Replace every PixelNorm of ``net`` in place by :class:`PixelNormNHWC`; return how many.

    For ``channels_last`` training: same function, same parameters and state-dict keys
    (``...pixel_norm.weight`` / ``.bias``), no layout round trip per block.
    """
    return _swap_modules(net, _pixel_norm_rule)


def compile_network(net: nn.Module, *, device: torch.device) -> nn.Module:
    """``torch.compile`` for inference (inductor; weights frozen on CPU so oneDNN can prepack them).

    Compilation happens on the first call and again for every new input shape; it takes tens
    of seconds on a CPU, so it pays off only for many calls on inputs of one size.
    """
    options = {"freezing": True} if device.type == "cpu" else None
    return torch.compile(net, options=options)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_MMAP_THRESHOLD_MAX = 32 << 20  # the largest mmap threshold older glibc versions accept (64-bit)


def tune_cpu_allocator(*, keep_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system (process-wide).

    PyTorch's CPU tensors come from ``malloc``; glibc serves large blocks with ``mmap`` and gives
    them back on ``free``, so the large activations of every forward pass are page-faulted and
    zeroed anew (LKDN at 320x180 allocates dozens of 13 MB tensors per pass). Raising the mmap
    and trim thresholds keeps those pages mapped and reused, as jemalloc or tcmalloc would
    (``LD_PRELOAD``, the usual advice for PyTorch on CPUs). The cost: the process keeps its peak
    memory. Returns False (and changes nothing) where glibc's ``mallopt`` is not available.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        logger.info("tune_cpu_allocator: glibc mallopt not available; allocator left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    keep = min(int(keep_bytes), 2**31 - 1)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, keep)) or bool(mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX))
    ok = ok and bool(mallopt(_M_TRIM_THRESHOLD, keep))
    logger.info("tune_cpu_allocator: glibc keeps freed memory up to %d bytes for reuse (%s)", keep, "ok" if ok else "failed")
    return ok
