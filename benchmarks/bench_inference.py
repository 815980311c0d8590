"""Inference: the original eager forward against ``lkdn.Upscaler(optimize=True)``, step by step.

LKDN x4, LKDN-S x4 (training form) and BSRN x4, LR 320x180 (1280x720 output), batch 1, float32,
the same input and weights for every row (official checkpoints from the reference lookup order
when present). The baseline is what the original code does: the network as configured, NCHW,
eager, with the reference operations (out-of-place element-wise ops, the trunk's full
concatenation: what our networks run with autograd on, here with no parameter or input needing
a gradient). The next row is the network's own inference path (in place, no concatenation, under
``torch.no_grad``); the following rows add the steps of :func:`lkdn.upscaler.optimize_network`
(all rows of a table are timed interleaved, order rotated each round). The allocator tuning of
:func:`lkdn.upscaler.tune_cpu_allocator` changes the whole process and cannot be undone, so the
same steps are timed again in a second group after it; the headline speed-up is the original
code (first group, untouched allocator) against the ``Upscaler`` as constructed by default
(second group). ``torch.compile`` (``Upscaler(compile=True)``) is timed on LKDN x4 with its compile time.
GPU rows (fp32 / bf16 / fp16 autocast) are added when CUDA is available.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

import lkdn  # noqa: F401 (registers the architectures)
from lkdn import Upscaler, build_network
from lkdn.loading import load_network_from_options
from lkdn.profiling import peak_memory, time_interleaved
from lkdn.upscaler import optimize_network, tune_cpu_allocator
from lkdn.zoo import find_checkpoint

LR_SIZE = (180, 320)  # height, width
ROUNDS = 5
MODELS = [
    ("LKDN x4", {"type": "LKDN", "upscale": 4}, "LKDN_x4"),
    (
        "LKDN-S x4, training form",
        {"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "upscale": 4},
        "LKDN-S_x4",
    ),
    ("BSRN x4", {"type": "BSRN", "upscale": 4}, "BSRN_x4"),
    # the training form (the published c28 checkpoint is the deploy form): its original is the official code
    ("SPAN c28 x4, training form", {"type": "SPAN", "feature_channels": 28, "upscale": 4}, None),
]
INFERENCE_PATH = "network's inference path (in place, no trunk concatenation), NCHW"
STEPS = [
    ("+ re-parameterization (and num_in folded)", {"reparameterize": True, "channels_last": False}),
    ("+ channels_last = optimize_network", {"reparameterize": True, "channels_last": True}),
]

Forward = Callable[[torch.Tensor], torch.Tensor]


def load(options: dict, weights: str | None) -> tuple[nn.Module, str]:
    path = find_checkpoint(weights) if weights else None
    if path is not None:
        return load_network_from_options({"network_g": options, "path": {"pretrain_network_g": str(path)}}), \
            f"official `{weights}.pth`"
    if weights is None:
        return build_network(options).eval(), "random weights (no checkpoint of this form is published)"
    return build_network(options).eval(), f"random weights (`{weights}.pth` not found)"


def reference_ops(net: nn.Module) -> Forward:
    """The network with its reference operations (autograd on, nothing needing a gradient): the official code's forward."""
    frozen = copy.deepcopy(net).eval().requires_grad_(False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return frozen(x)

    return forward


def official_span(net: nn.Module) -> Forward | None:
    """For a SPAN, the official code as published (its copy in spandrel), loaded with the same weights."""
    if type(net).__name__ != "SPAN":
        return None
    try:
        from spandrel.architectures.SPAN import SPANArch
    except ImportError:
        return None
    model = SPANArch().load(copy.deepcopy(net.state_dict())).model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    return forward


def network_path(net: nn.Module) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    return forward


def table(rows: list[tuple[str, dict[str, float], float]], base_ms: float, memory: dict[str, float] | None = None
          ) -> list[str]:
    memory = memory or {}
    lines = [
        "| variant | median ms | min ms | CPU ms | speed-up | max abs diff | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, t, diff in rows:
        peak = f"{memory[label]:.0f}" if label in memory else ""
        lines.append(
            f"| {label} | {t['median_ms']:.0f} | {t['min_ms']:.0f} | {t['cpu_median_ms']:.0f} | "
            f"{base_ms / t['median_ms']:.2f}x | {diff:.1e} | {peak} |"
        )
    return lines


def max_diff(forward: Forward, x: torch.Tensor, reference: torch.Tensor) -> float:
    """Max abs difference to the original output (clamped to [0, 1] for an Upscaler, which clamps)."""
    if isinstance(forward, Upscaler):
        reference = reference.clamp(0, 1)
    with torch.inference_mode():
        return float((forward(x).float() - reference).abs().max())


def step_candidates(net: nn.Module, x: torch.Tensor, *, tuned: bool) -> dict[str, tuple[Forward, torch.Tensor]]:
    """The original forward, each rewrite added in turn, and the Upscaler end to end."""
    xc = x.contiguous(memory_format=torch.channels_last)
    original = "original: eager NCHW, reference ops, " + ("tuned allocator" if tuned else "as configured")
    candidates: dict[str, tuple[Forward, torch.Tensor]] = {original: (reference_ops(net), x)}
    official = official_span(net)
    if official is not None:
        candidates["official SPAN code (spandrel's copy), eval mode: re-folds its kernels in every forward"] = (official, x)
    candidates[INFERENCE_PATH] = (network_path(net), x)
    for label, flags in STEPS:
        fast = optimize_network(net, **flags)
        candidates[label] = (network_path(fast), xc if flags.get("channels_last") else x)
    label = "Upscaler(optimize=True), end to end" if tuned else "Upscaler(optimize=True, tune_allocator=False), end to end"
    candidates[label] = (Upscaler(net, device="cpu", tune_allocator=tuned), x)
    return candidates


def cpu_group(
    net: nn.Module, x: torch.Tensor, reference: torch.Tensor, *, tuned: bool,
) -> tuple[list[tuple[str, dict, float]], dict[str, float]]:
    """Time the step candidates interleaved; return table rows and peak tensor memory (MB) per row."""
    candidates = step_candidates(net, x, tuned=tuned)
    times = time_interleaved(candidates, rounds=ROUNDS)
    rows = [(label, times[label], max_diff(f, inp, reference)) for label, (f, inp) in candidates.items()]
    memory = {label: peak_memory(f, inp)["peak_mb"] for label, (f, inp) in candidates.items()} if not tuned else {}
    return rows, memory


def run(ctx: dict) -> str:
    threads = int(ctx.get("threads", 2))
    torch.set_num_threads(threads)
    height, width = LR_SIZE
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = [
        "## Inference: original eager forward vs `lkdn.Upscaler(optimize=True)`",
        "",
        f"LR {width}x{height}, batch 1, float32, {threads} CPU threads, same input and weights in every row. "
        "Rows of one table are timed interleaved (order rotated each round; "
        f"{ROUNDS} rounds after 1 warm-up); speed-up = original median / row median; max abs diff against "
        "the original output. CPU ms = process CPU time of all threads (includes OpenMP spin-waiting).",
    ]
    nets, first_groups, references = {}, {}, {}
    for name, options, weights in MODELS:  # first group of every model before the allocator changes
        net, source = load(options, weights)
        nets[name] = (net, source)
        references[name] = reference_ops(net)(x).detach()
        first_groups[name] = cpu_group(net, x, references[name], tuned=False)
    tuned = tune_cpu_allocator()
    headline = []
    for name, _, _ in MODELS:
        net, source = nets[name]
        rows, memory = first_groups[name]
        base = rows[0][1]["median_ms"]
        out += ["", f"### {name} ({source}), CPU", "", "Group 1 (glibc allocator as it comes; peak MB = peak "
                "memory held by tensors during one forward, from the profiler):", ""]
        out += table(rows, base, memory)
        if tuned:
            rows2, _ = cpu_group(net, x, references[name], tuned=True)
            out += ["", "Group 2 (after `tune_cpu_allocator()`, the `Upscaler`'s default on the CPU; speed-up "
                    "still against the group-1 original):", ""]
            out += table(rows2, base)
            final = rows2[-1][1]["median_ms"]
            headline.append(f"{name}: {base:.0f} ms -> {final:.0f} ms, {base / final:.2f}x")
    if headline:
        out += ["", "**Original code vs `Upscaler(optimize=True)`** (median wall time): " + "; ".join(headline) + "."]
    out += compile_rows(nets["LKDN x4"][0], x)
    if torch.cuda.is_available():
        out += gpu_rows(nets, x)
    else:
        out += ["", "No CUDA device here: GPU rows (fp32 / bf16 / fp16 autocast) are measured where one is present."]
    return "\n".join(out)


def compile_rows(net: nn.Module, x: torch.Tensor) -> list[str]:
    """``Upscaler(compile=True)``: compile time (first call) and steady-state time against the eager Upscaler."""
    eager_up = Upscaler(net, device="cpu")
    try:
        compiled = Upscaler(net, device="cpu", compile=True)
        start = time.perf_counter()
        compiled(x)
        compile_s = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 (report any compiler failure as a row, not a crash)
        return ["", f"`Upscaler(compile=True)` failed here: {type(err).__name__}: {str(err).splitlines()[0]}"]
    times = time_interleaved({"eager": (eager_up, x), "compiled": (compiled, x)}, rounds=ROUNDS)
    with torch.inference_mode():
        diff = float((compiled(x) - eager_up(x)).abs().max())
    e, c = times["eager"]["median_ms"], times["compiled"]["median_ms"]
    return [
        "",
        "### LKDN x4: `torch.compile` (inductor, frozen weights) on top of `optimize=True`",
        "",
        "| variant | first call (compile) s | median ms | min ms | speed-up | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| Upscaler(optimize=True) | | {e:.0f} | {times['eager']['min_ms']:.0f} | 1.00x | |",
        f"| Upscaler(optimize=True, compile=True) | {compile_s:.1f} | {c:.0f} | {times['compiled']['min_ms']:.0f} | "
        f"{e / c:.2f}x | {diff:.1e} |",
        "",
        f"Compilation pays off after about {compile_s * 1e3 / max(e - c, 1e-9):.0f} images of this size"
        if c < e else "Compilation does not pay off here: opt-in only (`compile=True`).",
    ]


def gpu_rows(nets: dict, x: torch.Tensor) -> list[str]:
    device = torch.device("cuda")
    out = ["", f"### GPU: {torch.cuda.get_device_name(0)}", ""]
    xg = x.to(device)
    for name, (net, source) in nets.items():
        gnet = net.to(device).eval()
        reference = reference_ops(gnet)(xg).detach().float()
        candidates: dict[str, tuple[Forward, torch.Tensor]] = {"original: eager NCHW fp32": (reference_ops(gnet), xg)}
        for precision in ("fp32", "bf16", "fp16"):
            candidates[f"Upscaler(optimize=True, precision={precision!r})"] = (
                Upscaler(gnet, device=device, precision=precision), xg,
            )
        times = time_interleaved(candidates, rounds=20, warmup=3)
        rows = [(label, times[label], max_diff(f, inp, reference)) for label, (f, inp) in candidates.items()]
        out += [f"{name} ({source}), CUDA-synchronized wall time, 3 warm-ups, 20 rounds:", ""]
        out += table(rows, times["original: eager NCHW fp32"]["median_ms"]) + [""]
        net.to("cpu")
    return out
