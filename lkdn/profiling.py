"""Model cost: parameters, Multi-Adds, activations, FLOPs, runtime and peak memory.

Conventions (docs/efficiency.md):

* **Multi-Adds** (the papers' convention, LKDN's "18.3 G for a 1280x720 output"): the
  multiply-accumulates of every convolution, ``out_elements * in_channels / groups * kh * kw``,
  bias and element-wise ops not counted. Counted by ``torch.utils.flop_counter.FlopCounterMode``
  (FLOPs / 2 of ``aten.convolution``), so convolutions called functionally are included.
* **Activations** (NTIRE efficient-SR challenge): elements of all convolution outputs.
  :func:`conv_counts` counts every convolution call (functional ones too); :func:`ntire_counts`
  reproduces the challenge harness exactly (``get_model_activation``: forward hooks on the
  ``nn.Conv2d`` / ``nn.ConvTranspose2d`` modules, on one ``3x256x256`` input).
* **FLOPs** (NTIRE convention): ``fvcore``'s ``FlopCountAnalysis`` on one ``3x256x256`` LR
  input (fvcore counts a multiply-add as one flop and adds normalization and upsampling ops).
* **Runtime**: median of repeated forwards after warm-up (CUDA synchronized); NTIRE mode: FP32,
  no warm-up, ``cudnn.benchmark`` off, CUDA events around the forward only, mean over runs.
* **Peak memory**: ``torch.cuda.max_memory_allocated`` on GPU (weights included, as NTIRE);
  on CPU the peak of bytes held by tensors allocated during the forward (profiler memory
  events), with the peak resident-set increase alongside.

Counting runs on the ``meta`` device (shapes only, no arithmetic), so it is instant at any size.
"""

from __future__ import annotations

import contextlib
import copy
import os
import resource
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

NTIRE_FLOPS_INPUT = (1, 3, 256, 256)

Forward = Callable[[torch.Tensor], torch.Tensor]


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (elements of all ``nn.Parameter``s)."""
    return sum(p.numel() for p in net.parameters())


class _ConvOutputs(TorchDispatchMode):
    """Records the number of elements of every ``aten.convolution`` output."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default:
            self.elements.append(out.numel())
        return out


@dataclass
class ConvCounts:
    """What :func:`conv_counts` measured for one input size."""

    multi_adds: int
    activations: int
    convs: int


def conv_counts(net: nn.Module, input_shape: tuple[int, ...]) -> ConvCounts:
    """Convolution Multi-Adds, activations (conv output elements) and conv calls for one input.

    ``input_shape`` is the full input shape, e.g. ``(1, 3, 180, 320)``. The network is copied
    to the ``meta`` device (shapes only); networks that cannot run there are counted on the CPU.
    """
    try:
        model, x = copy.deepcopy(net).to("meta").eval(), torch.empty(input_shape, device="meta")
        return _count(model, x)
    except (NotImplementedError, RuntimeError):
        model = copy.deepcopy(net).to("cpu").eval()
        return _count(model, torch.rand(input_shape))


def _count(model: nn.Module, x: torch.Tensor) -> ConvCounts:
    """Counts of the reference forward: autograd on (nothing requires a gradient), so the network runs
    its reference operations (the trunk's single fusion conv, not its inference-time accumulation)."""
    outputs = _ConvOutputs()
    model.requires_grad_(False)
    with torch.enable_grad(), FlopCounterMode(display=False) as flops, outputs:
        model(x)
    conv_flops = sum(v for k, v in flops.get_flop_counts()["Global"].items() if "convolution" in str(k))
    return ConvCounts(multi_adds=conv_flops // 2, activations=sum(outputs.elements), convs=len(outputs.elements))


@dataclass
class NtireCounts:
    """The efficient-SR challenge harness's model counts (``test_demo.py``), on one ``1x3x256x256`` input."""

    params: int
    flops: int | None
    activations: int
    convs: int

    def as_row(self) -> dict[str, float | int | None]:
        """The harness's units: params in M, FLOPs in G, activations in M, the conv count."""
        return {"params_m": self.params / 1e6, "flops_g": None if self.flops is None else self.flops / 1e9,
                "activations_m": self.activations / 1e6, "convs": self.convs}


def _module_conv_outputs(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    elements = [0, 0]

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        elements[0] += output.numel()
        elements[1] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    try:
        model.requires_grad_(False)
        with torch.enable_grad():  # the harness counts outside no_grad: the networks' reference operations
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return elements[0], elements[1]


def ntire_counts(net: nn.Module, input_shape: tuple[int, ...] = NTIRE_FLOPS_INPUT, *, flops: bool = True) -> NtireCounts:
    """Parameters, fvcore FLOPs, activations and number of convs exactly as the NTIRE harness counts them.

    Activations and convs are ``get_model_activation``'s: the output elements and the calls of the
    ``nn.Conv2d`` / ``nn.ConvTranspose2d`` modules during one forward (functional convolutions are
    not seen, as in the harness). Count the form that is submitted (the deploy form for networks
    that fold). The network is copied to the ``meta`` device (shapes only) when it can run there.
    """
    try:
        elements, calls = _module_conv_outputs(copy.deepcopy(net).to("meta").eval(), torch.empty(input_shape, device="meta"))
    except (NotImplementedError, RuntimeError):
        elements, calls = _module_conv_outputs(copy.deepcopy(net).to("cpu").eval(), torch.rand(input_shape))
    return NtireCounts(params=count_parameters(net), flops=ntire_flops(net, input_shape) if flops else None,
                       activations=elements, convs=calls)


def ntire_flops(net: nn.Module, input_shape: tuple[int, ...] = NTIRE_FLOPS_INPUT) -> int | None:
    """fvcore's ``FlopCountAnalysis(...).total()`` on a random CPU input (None when fvcore is absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice, printed by importing fvcore
        try:
            from fvcore.nn import FlopCountAnalysis  # optional: FLOPs are None without fvcore
        except ImportError:
            return None
    model = copy.deepcopy(net).to("cpu").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices, printed by fvcore's tracing
        analysis = FlopCountAnalysis(model, torch.rand(input_shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


# ---------------------------------------------------------------------------------------------
# runtime and memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_runtime(
    forward: Forward, x: torch.Tensor, *, runs: int = 5, warmup: int = 1, ntire: bool = False, keep_times: bool = False,
) -> dict[str, Any]:
    """Time ``forward(x)``; returns ``median_ms``, ``mean_ms``, ``min_ms``, ``runs`` (and ``times_ms``, every
    timed run in order, with ``keep_times``).

    Default: inference mode, ``warmup`` untimed runs, then ``runs`` timed runs, synchronized on
    CUDA. With ``ntire=True`` (the NTIRE efficient-SR harness): autograd mode left on as the
    harness leaves it (freeze the network's parameters: it then runs its reference operations),
    no warm-up, ``cudnn.benchmark`` off, CUDA events around the forward only, one fresh random
    input of the same shape per run ("image"), and ``mean_ms`` is the number to report.
    """
    device = x.device
    times: list[float] = []
    previous = torch.backends.cudnn.benchmark
    if ntire:
        torch.backends.cudnn.benchmark = False
        warmup = 0
    try:
        with torch.enable_grad() if ntire else torch.inference_mode():
            for _ in range(warmup):
                forward(x)
            _sync(device)
            for _ in range(runs):
                inp = torch.rand_like(x) if ntire else x
                if device.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    _sync(device)
                    start.record()
                    forward(inp)
                    end.record()
                    torch.cuda.synchronize(device)
                    times.append(start.elapsed_time(end))
                else:
                    start_s = time.perf_counter()
                    forward(inp)
                    times.append((time.perf_counter() - start_s) * 1e3)
    finally:
        torch.backends.cudnn.benchmark = previous
    result: dict[str, Any] = {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
                              "min_ms": min(times), "runs": runs}
    if keep_times:
        result["times_ms"] = times
    return result


def time_interleaved(
    candidates: dict[str, tuple[Forward, torch.Tensor]], *, rounds: int = 5, warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Time several forwards side by side: each round runs every candidate once, in rotated order.

    Interleaving spreads any slow period of a shared machine over all candidates instead of
    one. Returns, per name: ``median_ms`` and ``min_ms`` (wall clock, CUDA synchronized) and
    ``cpu_median_ms`` (process CPU time of all threads, which includes OpenMP spin-waiting).
    """
    names = list(candidates)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                forward, x = candidates[name]
                forward(x)
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                forward, x = candidates[name]
                _sync(x.device)
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                forward(x)
                _sync(x.device)
                wall[name].append((time.perf_counter() - start_wall) * 1e3)
                cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return {
        n: {"median_ms": statistics.median(wall[n]), "min_ms": min(wall[n]), "cpu_median_ms": statistics.median(cpu[n])}
        for n in names
    }


def _rss_bytes() -> int:
    """Current resident set size (Linux: /proc/self/statm; elsewhere the lifetime peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native libraries write to file descriptor 2 (the profiler's ``USDT: profiler_start``
    lines and, on a CUDA build without a GPU, ``gpuGetDeviceCount failed``): they are not the user's output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_allocated_peak(forward: Forward, x: torch.Tensor) -> int:
    """Peak bytes held by tensors allocated during ``forward(x)``, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile  # lazy: the profiler, for this measure only

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward(x)
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def _rss_peak_delta(forward: Forward, x: torch.Tensor) -> int:
    """Peak resident set size during ``forward(x)`` (sampled every millisecond) minus the size before."""
    before = _rss_bytes()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        forward(x)
    finally:
        done.set()
        sampler.join()
    return max(peak, _rss_bytes()) - before


def peak_memory(forward: Forward, x: torch.Tensor) -> dict[str, float]:
    """Peak memory of one ``forward(x)`` in MB; ``peak_mb`` is the number to report.

    CUDA: ``peak_mb`` = ``max_memory_allocated`` (weights and input included, as NTIRE reports
    it); ``delta_mb`` = its increase over what was allocated before the call. CPU: ``peak_mb`` =
    the peak of bytes held by tensors allocated during the call (the profiler's memory events;
    the CPU analogue of ``delta_mb``); ``rss_delta_mb`` = peak resident set size during the call
    minus the size before it (0 when the allocator reuses memory it kept from earlier calls).
    """
    device = x.device
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            forward(x)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            return {"peak_mb": peak / 2**20, "delta_mb": (peak - before) / 2**20}
        rss = _rss_peak_delta(forward, x)
        try:
            allocated = _cpu_allocated_peak(forward, x) / 2**20
        except (RuntimeError, AttributeError):  # profiler internals differ: fall back to RSS
            allocated = rss / 2**20
        return {"peak_mb": allocated, "rss_delta_mb": rss / 2**20}


# ---------------------------------------------------------------------------------------------
# one network, its forms


@dataclass
class Profile:
    """The cost of one form of a network at one LR input size (counts are per image)."""

    form: str
    params: int
    multi_adds_g: float
    activations_m: float
    convs: int
    ntire_flops_g: float | None
    runtime_ms: float | None = None
    runtime: dict[str, float] = field(default_factory=dict)
    memory_mb: float | None = None
    memory: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_network(
    net: nn.Module, *, form: str, lr_size: tuple[int, int], device: torch.device | str = "cpu", runs: int = 5,
    warmup: int = 1, ntire: bool = False, timing: bool = True, flops: bool = True,
    forward: Forward | None = None, channels_last: bool = False, in_channels: int = 3,
) -> Profile:
    """Profile ``net`` on one ``in_channels x lr_size`` (height, width) input.

    Args:
        net: the network (counts are taken on it).
        form: a label for the row (``training``, ``deploy``, ...).
        lr_size: LR input ``(height, width)``.
        device: where runtime and memory are measured.
        runs, warmup, ntire: as in :func:`measure_runtime`.
        timing: measure runtime and peak memory (False: counts only).
        flops: also compute the NTIRE fvcore FLOPs (one CPU forward at 256x256).
        forward: what to time instead of ``net`` itself (e.g. an optimized version of it).
        channels_last: give the timed forward a ``channels_last`` input.
        in_channels: input image channels.
    """
    height, width = lr_size
    counts = conv_counts(net, (1, in_channels, height, width))
    fl = ntire_flops(net, (1, in_channels, *NTIRE_FLOPS_INPUT[2:])) if flops else None
    profile = Profile(
        form=form, params=count_parameters(net), multi_adds_g=counts.multi_adds / 1e9,
        activations_m=counts.activations / 1e6, convs=counts.convs, ntire_flops_g=None if fl is None else fl / 1e9,
    )
    if timing:
        device = torch.device(device)
        run = forward if forward is not None else copy.deepcopy(net).to(device).eval().requires_grad_(False)
        x = torch.rand(1, in_channels, height, width, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        profile.runtime = measure_runtime(run, x, runs=runs, warmup=warmup, ntire=ntire)
        profile.runtime_ms = profile.runtime["mean_ms" if ntire else "median_ms"]
        profile.memory = peak_memory(run, x)
        profile.memory_mb = profile.memory["peak_mb"]
    return profile


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` (width x height) -> ``(height, width)``."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a size WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return height, width


def lr_size_for_output(output_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """LR ``(height, width)`` for an output ``(height, width)``; both must be multiples of ``scale``."""
    height, width = output_size
    if height % scale or width % scale:
        raise ValueError(f"output size {width}x{height} is not a multiple of the scale {scale}")
    return height // scale, width // scale


def markdown_table(profiles: list[Profile], *, lr_size: tuple[int, int], scale: int | None) -> str:
    """The profiles as a Markdown table (one row per form)."""
    height, width = lr_size
    out = f"{width * scale}x{height * scale} output" if scale else "output"
    lines = [
        f"| form | params | Multi-Adds (G, LR {width}x{height}, {out}) | activations (M, LR {width}x{height}) | convs | "
        "FLOPs (G, NTIRE fvcore, LR 256x256) | runtime (ms) | peak memory (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in profiles:
        flops = "n/a" if p.ntire_flops_g is None else f"{p.ntire_flops_g:.2f}"
        runtime = "" if p.runtime_ms is None else f"{p.runtime_ms:.1f}"
        memory = "" if p.memory_mb is None else f"{p.memory_mb:.0f}"
        lines.append(
            f"| {p.form} | {p.params:,} | {p.multi_adds_g:.2f} | {p.activations_m:.2f} | {p.convs} | {flops} | "
            f"{runtime} | {memory} |"
        )
    return "\n".join(lines)
