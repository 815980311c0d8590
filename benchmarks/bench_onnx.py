"""onnxruntime (CPU) against PyTorch eager on the same input: LKDN x4, LR 320x180 -> 1280x720, float32.

The ONNX file is produced by :func:`lkdn.export.export_onnx` (verified against PyTorch before
it is written). onnxruntime runs on the CPU provider with as many intra-op threads as torch
(``ctx['threads']``, 2 by default). When ``lkdn.Upscaler`` exists, ``Upscaler(optimize=True)``
is measured too. Official weights from ../shared when present (timing does not depend on them).
"""

from __future__ import annotations

import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import lkdn
from lkdn import build_network
from lkdn.export import OnnxRuntimeNetwork, export_onnx
from lkdn.utils.checkpoint import load_network

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LKDN_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "pretrained" / "LKDN" / "LKDN_x4.pth"
OPTIONS = {"type": "LKDN", "upscale": 4}
LR_SIZE = (180, 320)  # height, width
REPEATS = 5


def median_ms(fn: Callable[[], torch.Tensor], repeats: int = REPEATS) -> tuple[float, torch.Tensor]:
    """Median wall time of ``fn`` in ms over ``repeats`` runs after one warm-up, and its output."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def _upscaler(threads: int) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    upscaler_class = getattr(lkdn, "Upscaler", None)
    if upscaler_class is None:
        try:
            upscaler_class = importlib.import_module("lkdn.upscaler").Upscaler
        except (ImportError, AttributeError):
            return None
    if not WEIGHTS.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        yml = Path(tmp) / "lkdn_x4.yml"
        yml.write_text("name: bench\nscale: 4\nnetwork_g: {type: LKDN, upscale: 4}\n", encoding="utf-8")
        upscaler = upscaler_class.from_config(yml, weights=WEIGHTS, optimize=True, device="cpu")
    return "lkdn.Upscaler(optimize=True), PyTorch", upscaler


def run(ctx: dict) -> str:
    threads = int(ctx.get("threads", 2))
    torch.set_num_threads(threads)
    net = build_network(OPTIONS).eval()
    weights = "official LKDN_x4.pth" if WEIGHTS.is_file() else "random weights (../shared absent)"
    if WEIGHTS.is_file():
        load_network(net, WEIGHTS)
    x = torch.rand(1, 3, *LR_SIZE, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(net, Path(tmp) / "lkdn_x4.onnx")
        runtime = OnnxRuntimeNetwork(report.path, threads=threads)
    rows = []
    with torch.inference_mode():
        eager_ms, eager_out = median_ms(lambda: net(x))
        rows.append(("PyTorch eager", eager_ms, 0.0))
        ort_ms, ort_out = median_ms(lambda: runtime(x))
        rows.append((f"onnxruntime {report.onnxruntime_version} CPU ({threads} intra-op threads)", ort_ms,
                     float((ort_out - eager_out).abs().max())))
        upscaler = _upscaler(threads)
        if upscaler is not None:
            name, fn = upscaler
            up_ms, up_out = median_ms(lambda: fn(x))
            rows.append((name, up_ms, float((up_out.float() - eager_out.clamp(0, 1)).abs().max())))
    lines = [
        "## ONNX Runtime vs PyTorch (CPU)",
        "",
        f"LKDN x4 ({weights}), input 1x3x{LR_SIZE[0]}x{LR_SIZE[1]} float32 -> 1280x720, {threads} threads, "
        f"median of {REPEATS} runs after one warm-up. ONNX: opset {report.opset}, {report.exporter}, dynamic shape, "
        "folded `num_in`.",
        "",
        "| runtime | median ms | vs PyTorch eager | max abs diff to eager |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {ms:.1f} | {eager_ms / ms:.2f}x | {diff:.1e} |" for name, ms, diff in rows]
    if upscaler is None:
        lines += ["", "`lkdn.Upscaler` is not available in this checkout (or ../shared is absent): not measured."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run({"threads": 2}))
