"""Inference time of LKDN-S x4: training form vs deploy form vs deploy form with ``num_in`` folded.

All forms carry the same random weights (the deploy forms are folded from the training form),
run on the same 1x3x180x320 input (720p output), float32, eval mode, ``torch.inference_mode``.
The forms are interleaved (the order rotates every repetition) so that load changes on the
machine hit them alike; the median over the repetitions after warm-up is reported. On a
machine with CUDA the same is measured on the GPU too.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.profiling import count_parameters
from lkdn.reparam import reparameterize_model

LKDN_S_TRAIN = {"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "upscale": 4}
INPUT_SHAPE = (1, 3, 180, 320)
SETTINGS = {"cpu": (1, 7), "cuda": (10, 50)}  # device -> (warm-up runs, timed repetitions) per form


def forms() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    train = build_network(LKDN_S_TRAIN).eval()
    return {
        "training form (RBSB, pixelshuffle_rep, num_in 4)": train,
        "deploy form (BSConvU, pixelshuffledirect, num_in 4)": reparameterize_model(train),
        "deploy form + fold_num_in (num_in 1)": reparameterize_model(train, fold_num_in=True),
    }


def time_forms(nets: dict[str, nn.Module], x: torch.Tensor, *, warmup: int, reps: int) -> dict[str, list[float]]:
    """Seconds per forward of each network, interleaved, after ``warmup`` runs of each."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    names = list(nets)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                nets[name](x)
        sync()
        for rep in range(reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                start = time.perf_counter()
                nets[name](x)
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def measure(device: torch.device) -> list[tuple[str, int, list[float], float, float]]:
    nets = {name: net.to(device) for name, net in forms().items()}
    x = torch.rand(INPUT_SHAPE, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        outputs = {name: net(x).float().cpu() for name, net in nets.items()}
    warmup, reps = SETTINGS[device.type]
    times = time_forms(nets, x, warmup=warmup, reps=reps)
    reference_name = next(iter(nets))
    reference_ms = statistics.median(times[reference_name]) * 1e3
    rows = []
    for name, net in nets.items():
        ms = [t * 1e3 for t in times[name]]
        diff = (outputs[name] - outputs[reference_name]).abs().max().item()
        rows.append((name, count_parameters(net), ms, reference_ms / statistics.median(ms), diff))
    return rows


def run(ctx: dict) -> str:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    lines = [
        "## Re-parameterization: LKDN-S x4 training form vs deploy form",
        "",
        f"Input {'x'.join(map(str, INPUT_SHAPE))} (output 720x1280), float32, eval, `torch.inference_mode`, "
        f"{ctx.get('threads', torch.get_num_threads())} CPU threads. Same random weights for every form (the "
        "deploy forms are folded from the training form); forms interleaved, order rotated each repetition; "
        "median after warm-up (min - max shows the spread). Speed-up = training-form time / form time; max abs diff = largest "
        "|output - training-form output| on this input.",
    ]
    for device in devices:
        warmup, reps = SETTINGS[device.type]
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        lines += [
            "",
            f"{name} ({warmup} warm-up runs, median of {reps}):",
            "",
            "| form | params | median ms | min - max ms | speed-up | max abs diff |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for form, params, ms, speedup, diff in measure(device):
            lines.append(
                f"| {form} | {params:,d} | {statistics.median(ms):.1f} | {min(ms):.1f} - {max(ms):.1f} | "
                f"{speedup:.2f}x | {diff:.1e} |"
            )
    return "\n".join(lines)
