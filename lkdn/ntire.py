"""The NTIRE efficient-SR challenge protocol (the harness ``test_demo.py`` of NTIRE 2024-2026), reproduced.

What the harness measures for a submitted model, and how (github.com/Amazingren/NTIRE2026_ESR):

* **PSNR**: on RGB uint8 images (the output rounded as ``util.tensor2uint``: clamp to [0, 1],
  ``round(x * 255)``), HR mod-cropped to the scale, ``border = scale`` pixels removed, mean over
  the images (:func:`psnr_rgb`); no Y channel, unlike the papers' tables.
* **Runtime**: batch 1, float32, the whole image, CUDA events recorded just before and after
  ``model(img_lq)`` (loading and the host-to-device copy not timed), ``torch.cuda.synchronize()``,
  mean over the images; ``cudnn.benchmark`` off; no warm-up (:func:`run_images`).
* **Memory**: ``torch.cuda.max_memory_allocated`` after the images.
* **Params, FLOPs, activations, convs**: :func:`lkdn.profiling.ntire_counts`.
* **Score** of a metric: ``exp(2 * team / baseline)`` (lower is better); the final score weighs
  runtime, FLOPs and parameters 0.7 / 0.15 / 0.15 (2024, 2025) or 0.8 / 0.1 / 0.1 (2026)
  (:func:`challenge_score`).
* **Data**: ``DIV2K_LSDIR_valid`` (DIV2K 0801-0900 and LSDIR 0000001-0000100): HR
  ``DIV2K_LSDIR_valid_HR/<name>.png``, LR ``DIV2K_LSDIR_valid_LR/<name>x4.png`` (:func:`challenge_pairs`
  reads that layout and any paired folder of this project's layouts).

On a machine without CUDA the runtime is wall time (``time.perf_counter``) and is labelled so.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lkdn.images import image_pairs, read_image

Forward = Callable[[torch.Tensor], torch.Tensor]

SCORE_WEIGHTS: dict[int, dict[str, float]] = {
    2024: {"runtime": 0.7, "flops": 0.15, "params": 0.15},
    2025: {"runtime": 0.7, "flops": 0.15, "params": 0.15},
    2026: {"runtime": 0.8, "flops": 0.1, "params": 0.1},
}
#: The challenge's PSNR thresholds on DIV2K_LSDIR_valid and _test (dB).
PSNR_THRESHOLDS = {"valid": 26.90, "test": 26.99}


def metric_score(team: float, baseline: float) -> float:
    """``exp(2 * team / baseline)``: 1 for nothing, e**2 for the baseline's value; lower is better."""
    if baseline <= 0:
        raise ValueError(f"the baseline's value must be positive, got {baseline}")
    return math.exp(2 * team / baseline)


def challenge_score(team: Mapping[str, float], baseline: Mapping[str, float], *, year: int = 2026) -> dict[str, float]:
    """Per-metric scores and the weighted final score of ``team`` against ``baseline``.

    Both map ``runtime`` (ms), ``flops`` (G) and ``params`` (M) to values in the same units.
    """
    if year not in SCORE_WEIGHTS:
        raise ValueError(f"no scoring rule for {year}; known years: {', '.join(map(str, SCORE_WEIGHTS))}")
    weights = SCORE_WEIGHTS[year]
    scores = {name: metric_score(team[name], baseline[name]) for name in weights}
    scores["final"] = sum(weights[name] * scores[name] for name in weights)
    return scores


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, *, border: int) -> float:
    """The harness's ``util.calculate_psnr`` on two uint8 images of the same shape (``border`` cropped)."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")
    h, w = sr.shape[:2]
    a = sr[border:h - border, border:w - border].astype(np.float64)
    b = hr[border:h - border, border:w - border].astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 20 * math.log10(255.0 / math.sqrt(mse))


def challenge_pairs(root: str | Path, *, scale: int = 4) -> list[tuple[Path, Path]]:
    """``(HR, LR)`` file pairs of a paired set, sorted by HR name (:func:`lkdn.images.image_pairs`).

    Layouts: the challenge's ``DIV2K_LSDIR_{valid,test}_HR`` + ``..._LR/<name>x<scale>.png``;
    ``<root>/HR`` + ``<root>/LR``; ``<root>/GTmod<s>`` + ``<root>/LRbicx<s>`` (LR named like the HR,
    or ``<name>x<s>``). A ValueError names the folder when none fits or an LR image is missing.
    """
    root = Path(root)
    candidates = [(p, root / f"{p.name[:-3]}_LR") for p in sorted(root.glob("*_HR")) if p.is_dir()]
    candidates += [(root / "HR", root / "LR"), (root / f"GTmod{scale}", root / f"LRbicx{scale}")]
    for hr_dir, lr_dir in candidates:
        if lr_dir.is_dir() and hr_dir.is_dir():
            return image_pairs(hr_dir, lr_dir, templates=(f"{{}}x{scale}", "{}"))
    raise ValueError(f"{root}: no paired folders (DIV2K_LSDIR_valid_HR + _LR, HR + LR, or GTmod{scale} + LRbicx{scale})")


def _to_tensor(bgr: np.ndarray, device: torch.device) -> torch.Tensor:
    """``util.uint2tensor4`` of the RGB image (data range 1)."""
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0).to(device)


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """``util.tensor2uint``: clamp to [0, 1], ``round(x * 255)``, HWC."""
    image = tensor.data.squeeze().float().clamp_(0, 1).cpu().numpy()
    if image.ndim == 3:
        image = np.transpose(image, (1, 2, 0))
    return np.uint8((image * 255.0).round())


@dataclass
class HarnessRun:
    """What the harness records for one model over a set of images."""

    psnr: dict[str, float] = field(default_factory=dict)
    runtime_ms: dict[str, float] = field(default_factory=dict)
    memory_mb: float | None = None
    timer: str = "CUDA events"

    @property
    def mean_psnr(self) -> float:
        return statistics.fmean(self.psnr.values())

    @property
    def mean_runtime_ms(self) -> float:
        return statistics.fmean(self.runtime_ms.values())


def run_images(forward: Forward, pairs: list[tuple[Path, Path]], *, device: torch.device, scale: int = 4,
               progress: Callable[[str], None] | None = None) -> HarnessRun:
    """Super-resolve every LR image as the harness does and record PSNR, runtime and peak memory."""
    result = HarnessRun(timer="CUDA events" if device.type == "cuda" else "wall time (CPU)")
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        for hr_path, lr_path in pairs:
            lr = _to_tensor(read_image(lr_path), device)
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                sr = forward(lr)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                begin = time.perf_counter()
                sr = forward(lr)
                elapsed = (time.perf_counter() - begin) * 1e3
            hr = read_image(hr_path)[:, :, ::-1]
            hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
            name = hr_path.stem
            result.psnr[name] = psnr_rgb(_to_uint8(sr), np.ascontiguousarray(hr), border=scale)
            result.runtime_ms[name] = elapsed
            if progress is not None:
                progress(f"{name}: {result.psnr[name]:.2f} dB, {elapsed:.2f} ms")
    finally:
        torch.backends.cudnn.benchmark = previous
    if device.type == "cuda":
        result.memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return result
