"""Training step: eager float32 NCHW against the best training settings, same data and init.

LKDN x4 (the official training options), batch 16, LR patches 48x48 (HR 192x192), L1 loss,
Adan from timm with the paper's settings (lr 5e-3, betas (0.98, 0.92, 0.99), ``foreach``).
Synthetic but learnable data: smooth random HR patches and their bicubic (antialiased) x4
downscales, a fixed cycle of batches from one seed. Every candidate starts from the same
initial weights. Candidates are written out below as plain code (what ``train.channels_last``,
``train.amp`` and ``train.compile`` of lkdn/train.py switch on):

* ``channels_last``: weights and batches in ``channels_last``; LKDN's PixelNorm keeps that layout
  (it normalizes the NHWC view), so no block converts back to NCHW;
* ``bf16 autocast``: convolutions in bfloat16, loss and optimizer in float32. Combined with
  ``channels_last`` it runs on the GPU only: on the CPU (torch 2.15, oneDNN) the weight gradient
  of a *dilated depthwise* convolution in bfloat16 and channels_last reads uninitialized memory
  (LKA's 5x5 dilation-3 conv; NaN losses after a few steps once freed memory is reused);
* ``torch.compile`` (inductor) of the network, timed after its compilation, reported with the
  compile time: only with ``LKDN_BENCH_COMPILE=1`` (on 2 CPU threads it compiles for about a
  minute and then runs slower than eager channels_last; see docs/efficiency.md).

The baseline and the best float32 settings run ``STEPS`` steps each (loss after the last step
reported: float32 rewrites keep the numerics); other candidates are timed on fewer steps. The
baseline step takes about 3 s on 2 CPU threads, so this section runs for about 4 minutes.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import lkdn  # noqa: F401 (registers the architectures)
from lkdn import build_network

OPTIONS = {"type": "LKDN", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 56, "num_atten": 56, "num_block": 8,
           "upscale": 4, "num_in": 4, "conv": "BSConvU", "upsampler": "pixelshuffledirect"}
BATCH, PATCH, SCALE = 16, 48, 4
STEPS = int(os.environ.get("LKDN_BENCH_TRAIN_STEPS", 50))  # baseline and best float32 settings
QUICK_STEPS = 6  # other candidates (the first 2 are not timed)
WARMUP = 2


def synthetic_batches(count: int, *, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed (LR, HR) batches: smooth random HR patches, bicubic antialiased x4 downscale as LR."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        coarse = torch.rand(BATCH, 3, PATCH // 4, PATCH // 4, generator=generator)
        detail = torch.rand(BATCH, 3, PATCH, PATCH, generator=generator) * 0.2
        hr = F.interpolate(coarse, size=PATCH * SCALE, mode="bicubic", align_corners=False)
        hr = (hr + F.interpolate(detail, size=PATCH * SCALE, mode="bilinear", align_corners=False)).clamp(0, 1)
        lr = F.interpolate(hr, scale_factor=1 / SCALE, mode="bicubic", align_corners=False, antialias=True)
        batches.append((lr.clamp(0, 1).to(device), hr.to(device)))
    return batches


class Candidate(NamedTuple):  # not a dataclass: run.py loads benchmarks outside sys.modules
    label: str
    channels_last: bool = False
    amp: torch.dtype | None = None
    compile: bool = False


class Result(NamedTuple):
    label: str
    steps: int
    seconds_per_step: float
    loss: float
    compile_s: float | None = None


def adan(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    from timm.optim import Adan

    return Adan(params, lr=5e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, foreach=True)


def make_step(
    candidate: Candidate, initial: nn.Module, device: torch.device,
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One training step of ``candidate`` (own copy of ``initial``'s weights and own optimizer)."""
    net = copy.deepcopy(initial).to(device).train()
    fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
    if candidate.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = adan(list(net.parameters()))
    model: Callable[[torch.Tensor], torch.Tensor] = torch.compile(net) if candidate.compile else net

    def step(lr: torch.Tensor, hr: torch.Tensor) -> float:
        lr, hr = lr.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)
        with torch.autocast(device_type=device.type, dtype=candidate.amp or torch.float32,
                            enabled=candidate.amp is not None):
            sr = model(lr)
        loss = F.l1_loss(sr.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())  # synchronizes on CUDA

    return step


def train_side_by_side(
    candidates: list[tuple[Candidate, int]], initial: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> list[Result]:
    """Run the candidates in lockstep (step i of each, in turn), each for its own number of steps.

    Interleaving the steps spreads any slow period of a shared machine over every candidate.
    """
    steps = [make_step(c, initial, device) for c, _ in candidates]
    times: list[list[float]] = [[] for _ in candidates]
    losses = [float("nan")] * len(candidates)
    compile_s: list[float | None] = [None] * len(candidates)
    for i in range(max(n for _, n in candidates)):
        lr, hr = batches[i % len(batches)]
        for k, ((candidate, n), step) in enumerate(zip(candidates, steps, strict=True)):
            if i >= n:
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            losses[k] = step(lr, hr)
            elapsed = time.perf_counter() - start
            if i == 0 and candidate.compile:
                compile_s[k] = elapsed
            if i >= WARMUP:
                times[k].append(elapsed)
    return [
        Result(c.label, n, statistics.median(t), loss, cs)
        for (c, n), t, loss, cs in zip(candidates, times, losses, compile_s, strict=True)
    ]


def run(ctx: dict) -> str:
    threads = int(ctx.get("threads", 2))
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    initial = build_network(OPTIONS)
    batches = synthetic_batches(10, device=device)
    amp = torch.bfloat16
    baseline = Candidate("eager float32 NCHW (baseline)")
    best_fp32 = Candidate("channels_last (train.channels_last), float32", channels_last=True)
    quick = [Candidate("bf16 autocast, NCHW", amp=amp)]
    if device.type == "cuda":  # on the CPU this combination reads uninitialized memory (module docstring)
        quick.append(Candidate("channels_last + bf16 autocast", channels_last=True, amp=amp))
    if os.environ.get("LKDN_BENCH_COMPILE", "0") == "1":
        quick.append(Candidate("channels_last + torch.compile", channels_last=True, compile=True))
    plan = [(baseline, STEPS), (best_fp32, STEPS)] + [(c, QUICK_STEPS) for c in quick]
    results = train_side_by_side(plan, initial, batches, device)
    base = results[0].seconds_per_step
    where = f"{threads} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(0)
    lines = [
        "## Training step: eager float32 vs channels_last / bf16 autocast / torch.compile",
        "",
        f"LKDN x4 (official training options), batch {BATCH}, LR patch {PATCH} (HR {PATCH * SCALE}), L1, "
        f"timm Adan (lr 5e-3, betas 0.98/0.92/0.99), {where}. Same initial weights and the same synthetic batches "
        f"for every row; candidates run in lockstep (step i of each in turn); median step time after {WARMUP} "
        f"warm-up steps; loss = L1 of the last step (the first two "
        f"rows run {STEPS} steps, the others {QUICK_STEPS}: their losses are not comparable with the first two).",
        "",
        "| settings | steps | s / step | it / s | speed-up | loss (last step) | compile s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        compile_s = "" if r.compile_s is None else f"{r.compile_s:.0f}"
        lines.append(
            f"| {r.label} | {r.steps} | {r.seconds_per_step:.2f} | {1 / r.seconds_per_step:.2f} | "
            f"{base / r.seconds_per_step:.2f}x | {r.loss:.5f} | {compile_s} |"
        )
    b, f = results[0], results[1]
    lines += [
        "",
        f"After {STEPS} steps: baseline loss {b.loss:.5f}, {f.label} {f.loss:.5f} "
        f"(relative difference {abs(f.loss - b.loss) / b.loss:.1e}: float32 rewrites keep the numerics up to "
        "float rounding).",
    ]
    return "\n".join(lines)
