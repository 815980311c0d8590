"""Inference speed-ups that are not a property of any network: folding, memory format, compile, allocator.

The speed of the networks themselves is in the networks (:mod:`lkdn.archs.ops`): in inference
their element-wise operations run in place, LKDN's and BSRN's trunks accumulate their 1x1 fusion
without the big concatenation, and LKDN's pixel norm keeps the ``channels_last`` layout. What
is left here (docs/efficiency.md has the measured effect of each):

1. :func:`optimize_network`: re-parameterization (:func:`lkdn.reparam.reparameterize_model` with
   ``fold_num_in``; a training-form network becomes its deploy form, which computes the same
   function with fewer and smaller convolutions), checked on a small random input against the
   network it replaces (max abs difference at most :data:`PROBE_TOLERANCE`, else the fold is
   dropped with a warning), then ``channels_last`` weights (oneDNN and cuDNN run convolutions
   natively in NHWC; :class:`lkdn.Upscaler` gives its inputs in that layout too);
2. :func:`compile_network`: ``torch.compile`` (costs start-up time);
3. :func:`tune_cpu_allocator`: glibc keeps freed memory for reuse (changes the whole process).

:class:`lkdn.Upscaler` applies the first and, on the CPU, the third by default, and compiles
only when asked.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import logging

import torch
from torch import nn

from lkdn.archs.contract import contract_of
from lkdn.reparam import foldable_modules, reparameterize_model

logger = logging.getLogger(__name__)

#: Largest max abs difference the fold may introduce on the float32 probe output (relative beyond
#: outputs of magnitude 1: networks on a 0-255 scale, or with random weights, get the same relative check).
PROBE_TOLERANCE = 1e-4


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


def optimize_network(
    net: nn.Module, *, reparameterize: bool = True, channels_last: bool = True, check: bool = True,
    applied: list[str] | None = None,
) -> nn.Module:
    """Return a faster copy of ``net`` in eval mode computing the same function (``net`` is not modified).

    Args:
        net: any network of this project.
        reparameterize: fold re-parameterizable branches and input replication.
        channels_last: weights in ``channels_last`` memory format (give inputs in it too).
        check: compare the folded network with ``net`` on a small random input and keep ``net``'s
            form when the output differs by more than :data:`PROBE_TOLERANCE` (relative to the
            output's magnitude beyond 1; with a warning).
        applied: a list to which the names of the steps that were applied are appended.
    """
    applied = [] if applied is None else applied
    net = copy.deepcopy(net).eval()
    foldable = bool(foldable_modules(net)) or getattr(net, "num_in", 1) > 1
    if reparameterize and foldable:
        folded = reparameterize_model(net, fold_num_in=True)
        probe = _probe_input(net) if check else None
        diff = 0.0
        if probe is not None:
            with torch.inference_mode():
                expected, got = net(probe), folded(probe)
            diff = float((expected.float() - got.float()).abs().max()) if expected.shape == got.shape else float("inf")
            diff /= max(1.0, float(expected.abs().max()))
        if diff <= PROBE_TOLERANCE:
            logger.debug("optimize: re-parameterization kept (probe max abs diff %.2e)", diff)
            net = folded
            applied.append("re-parameterization")
        else:
            logger.warning("optimize: re-parameterization dropped: it changed the output by %.3g (> %g)", diff,
                           PROBE_TOLERANCE)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    return net.eval()


class _AutocastOff(nn.Module):
    """Run ``module`` in float32 with autocast off: an overflow-prone stage inside a float16 autocast region."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.module(x.float())


def keep_float32_stages(net: nn.Module) -> int:
    """Wrap, in place, the sub-modules the architecture's contract lists in ``fp32_stages`` so that
    they run in float32 under float16 autocast (LKDN's attention stage reaches ~1e11, far past
    float16's range). Returns the number of wrapped modules."""
    stages = contract_of(net).fp32_stages
    wrapped = 0
    for module in list(net.modules()):
        for name in next((v for k, v in stages.items() if isinstance(module, k)), ()):
            child = getattr(module, name)
            if not isinstance(child, _AutocastOff):
                setattr(module, name, _AutocastOff(child))
                wrapped += 1
    return wrapped


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
