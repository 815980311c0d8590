"""Roofline: how much of this machine's float32 convolution throughput LKDN reaches.

The reference is a large dense convolution (256 -> 256 channels, 3x3, 128x128, channels_last),
compute bound, the best case for oneDNN (or cuDNN). LKDN x4 at LR 320x180 does 18.22 G
Multi-Adds (36.45 GFLOP); its throughput is ``2 * Multi-Adds / time`` for the original eager
forward and for ``lkdn.Upscaler(optimize=True)``. Its own layers explain the gap: 1x1
convolutions with 28-112 channels run near the dense rate, depthwise 3x3 / 5x5 convolutions
(a few FLOPs per byte moved) are bound by memory bandwidth, measured here as a large copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import lkdn  # noqa: F401 (registers the architectures)
from lkdn import Upscaler, build_network
from lkdn.profiling import conv_counts, measure_runtime

LR_SIZE = (180, 320)
RUNS = 7  # the minimum is reported: the best case on a machine that may be shared


def conv_gflops(device: torch.device, *, cin: int, cout: int, k: int, size: tuple[int, int], groups: int = 1,
                dilation: int = 1) -> tuple[float, float, float]:
    """(GFLOP/s, ms, GFLOP) of one ``k x k`` convolution on a channels_last input."""
    height, width = size
    x = torch.rand(1, cin, height, width, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(cout, cin // groups, k, k, device=device).contiguous(memory_format=torch.channels_last)
    pad = dilation * (k // 2)
    ms = measure_runtime(lambda t: F.conv2d(t, weight, padding=pad, groups=groups, dilation=dilation), x,
                         runs=RUNS, warmup=2)["min_ms"]
    gflop = 2 * height * width * cout * (cin // groups) * k * k / 1e9
    return gflop / (ms / 1e3), ms, gflop


def bandwidth_gbs(device: torch.device) -> float:
    """Read + write bandwidth of a 256 MB tensor copy, GB/s."""
    x = torch.rand(64 << 20, device=device)
    ms = measure_runtime(lambda t: t.clone(), x, runs=RUNS, warmup=2)["min_ms"]
    return 2 * x.numel() * 4 / 1e9 / (ms / 1e3)


def run(ctx: dict) -> str:
    threads = int(ctx.get("threads", 2))
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = f"{threads} CPU threads" if device.type == "cpu" else torch.cuda.get_device_name(0)
    peak, peak_ms, peak_gflop = conv_gflops(device, cin=256, cout=256, k=3, size=(128, 128))
    layers = [
        ("1x1 conv 56->56", {"cin": 56, "cout": 56, "k": 1}),
        ("1x1 conv 112->56", {"cin": 112, "cout": 56, "k": 1}),
        ("depthwise 3x3, 56 channels", {"cin": 56, "cout": 56, "k": 3, "groups": 56}),
        ("depthwise 5x5, 56 channels", {"cin": 56, "cout": 56, "k": 5, "groups": 56}),
        ("depthwise 5x5 dilation 3, 56 channels", {"cin": 56, "cout": 56, "k": 5, "groups": 56, "dilation": 3}),
    ]
    net = build_network({"type": "LKDN", "upscale": 4}).eval().to(device)
    multi_adds = conv_counts(net, (1, 3, *LR_SIZE)).multi_adds
    x = torch.rand(1, 3, *LR_SIZE, device=device)
    eager_ms = measure_runtime(net, x, runs=RUNS, warmup=1)["min_ms"]
    fast_ms = measure_runtime(Upscaler(net, device=device), x, runs=RUNS, warmup=1)["min_ms"]
    lines = [
        "## Roofline: LKDN against a dense convolution",
        "",
        f"float32{' (cuDNN may use TF32, the torch default)' if device.type == 'cuda' else ''}, {where}, "
        f"minimum of {RUNS} runs after 2 warm-ups (the best case on a shared machine). Reference: dense 3x3 convolution 256->256 on 128x128 (channels_last), "
        f"{peak_gflop:.1f} GFLOP in {peak_ms:.1f} ms = **{peak:.0f} GFLOP/s**. Memory bandwidth (256 MB copy, "
        f"read + write): {bandwidth_gbs(device):.1f} GB/s. LKDN x4 at LR {LR_SIZE[1]}x{LR_SIZE[0]}: "
        f"{multi_adds / 1e9:.2f} G Multi-Adds = {2 * multi_adds / 1e9:.2f} GFLOP.",
        "",
        "| what | ms | GFLOP/s | fraction of the dense conv |",
        "| --- | ---: | ---: | ---: |",
        f"| dense conv 256->256 3x3 | {peak_ms:.1f} | {peak:.0f} | 100% |",
    ]
    for label, kwargs in layers:
        rate, ms, _ = conv_gflops(device, size=LR_SIZE, **kwargs)
        lines.append(f"| {label} at {LR_SIZE[1]}x{LR_SIZE[0]} | {ms:.1f} | {rate:.0f} | {rate / peak:.0%} |")
    for label, ms in (("LKDN x4, original eager forward", eager_ms), ("LKDN x4, Upscaler(optimize=True)", fast_ms)):
        rate = 2 * multi_adds / 1e9 / (ms / 1e3)
        lines.append(f"| {label} | {ms:.0f} | {rate:.0f} | {rate / peak:.0%} |")
    return "\n".join(lines)
