"""Scoring super-resolved images with the published protocol: the one evaluation used everywhere.

:func:`evaluate` runs a forward function over paired samples (basicsr's ``lq``/``gt``/``lq_path``
dicts, batch 1), rounds each output to uint8 with ``basicsr.utils.tensor2img`` and scores it
against the ground truth with ``basicsr.metrics.calculate_metric`` and the ``val.metrics``
options, exactly as BasicSR's ``SRModel.validation`` does and as the published tables were
computed (PSNR and SSIM on the Y channel, BT.601, ``crop_border`` pixels removed). It is what
``lkdn/test.py``, validation during training and :func:`evaluate_folder` (the published-number
tests) all call.

A score that is not finite (identical images give an infinite PSNR) is reported as ``None`` for
that image and left out of the mean, with a warning, so ``metrics.json`` stays valid JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from tqdm import tqdm

from lkdn.data.safe_dataset import build_checked_dataset

logger = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]
MetricOptions = Mapping[str, Mapping[str, Any]]


def protocol_metrics(scale: int) -> dict[str, dict[str, Any]]:
    """The benchmark protocol's ``val.metrics``: PSNR and SSIM on Y, ``crop_border = scale``."""
    common = {"crop_border": scale, "test_y_channel": True}
    return {"psnr": {"type": "calculate_psnr", **common}, "ssim": {"type": "calculate_ssim", **common}}


@dataclass
class Evaluation:
    """Per-image scores (``None`` where not finite) and their means over the images that have them."""

    per_image: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        names = dict.fromkeys(name for scores in self.per_image.values() for name in scores)
        means = {}
        for name in names:
            values = [s[name] for s in self.per_image.values() if s.get(name) is not None]
            if values:
                means[name] = sum(values) / len(values)
        return means

    def as_json(self) -> dict[str, Any]:
        """The ``metrics.json`` entry of a dataset: means, ``num_images`` and ``per_image``."""
        return {**self.means(), "num_images": len(self.per_image), "per_image": self.per_image}


def _check_crop(metric_opts: MetricOptions, shape: tuple[int, ...], image: str) -> None:
    for name, opt in metric_opts.items():
        border = int(opt.get("crop_border", 0))
        if 2 * border >= min(shape[:2]):
            raise ValueError(
                f"val.metrics.{name}.crop_border: {border} leaves nothing of the {shape[1]}x{shape[0]} image {image}; "
                "use the scale (the benchmark protocol)"
            )


def score(sr: np.ndarray, gt: np.ndarray, metric_opts: MetricOptions, *, image: str = "image") -> dict[str, float | None]:
    """Each metric of ``metric_opts`` on two uint8 BGR images (``None`` and a warning when not finite)."""
    if sr.shape != gt.shape:
        raise ValueError(f"{image}: SR shape {sr.shape} differs from HR shape {gt.shape}")
    _check_crop(metric_opts, sr.shape, image)
    scores: dict[str, float | None] = {}
    for name, opt in metric_opts.items():
        value = float(calculate_metric({"img": sr, "img2": gt}, dict(opt)))
        if not math.isfinite(value):
            logger.warning("%s: %s is %s (identical or degenerate images); left out of the mean", image, name, value)
            scores[name] = None
        else:
            scores[name] = value
    return scores


@torch.no_grad()
def evaluate(
    forward: Forward, samples: Iterable[Mapping[str, Any]], *, metrics: MetricOptions | None,
    device: torch.device | str = "cpu", save: Callable[[str, np.ndarray], None] | None = None,
    desc: str | None = None, pbar: bool = True, total: int | None = None,
) -> Evaluation:
    """Super-resolve and score every sample.

    Args:
        forward: LR batch (1x3xHxW in [0, 1], on ``device``) to SR batch.
        samples: dicts with ``lq`` (1xCxHxW), ``lq_path`` (a path or a one-element list of one) and,
            for metrics, ``gt``: a DataLoader with batch size 1 over a basicsr dataset.
        metrics: ``val.metrics`` (name -> options); ``None`` scores nothing.
        device: where ``forward`` takes its input.
        save: called with each image's name and its uint8 BGR result (writing SR images).
        desc, pbar, total: the progress bar.
    """
    result = Evaluation()
    for data in tqdm(samples, desc=desc, unit="image", disable=not pbar, total=total, dynamic_ncols=True):
        lq_path = data["lq_path"]
        name = Path(lq_path[0] if isinstance(lq_path, list | tuple) else lq_path).stem
        lq = data["lq"]
        output = forward((lq if lq.ndim == 4 else lq[None]).to(device)).detach().float().cpu()
        sr = tensor2img([output])
        if save is not None:
            save(name, sr)
        if metrics:
            if "gt" not in data:
                raise ValueError(f"{name}: metrics need ground-truth images (dataroot_gt)")
            gt = data["gt"]
            result.per_image[name] = score(sr, tensor2img([gt if gt.ndim == 4 else gt[None]]), metrics, image=name)
        else:
            result.per_image[name] = {}
    if not result.per_image:
        raise ValueError("no images to evaluate")
    return result


def paired_folder_dataset(
    hr_dir: str | Path, lr_dir: str | Path, *, scale: int, filename_tmpl: str = "{}", name: str = "folder",
) -> torch.utils.data.Dataset:
    """basicsr's ``PairedImageDataset`` over two folders, checked (:mod:`lkdn.data.safe_dataset`)."""
    options = {
        "name": name, "type": "PairedImageDataset", "dataroot_gt": str(hr_dir), "dataroot_lq": str(lr_dir),
        "filename_tmpl": filename_tmpl, "io_backend": {"type": "disk"}, "scale": scale, "phase": "test",
    }
    return build_checked_dataset(options, where=f"folders {hr_dir} and {lr_dir}")


def evaluate_folder(
    net: Forward, hr_dir: str | Path, lr_dir: str | Path, *, scale: int, device: torch.device | str = "cpu",
    filename_tmpl: str = "{}",
) -> dict[str, dict[str, float | None]]:
    """Per-image PSNR/SSIM (Y channel, ``crop_border = scale``) of ``net`` on an HR/LR folder pair."""
    if isinstance(net, torch.nn.Module):
        net.eval()
    loader = torch.utils.data.DataLoader(paired_folder_dataset(hr_dir, lr_dir, scale=scale, filename_tmpl=filename_tmpl))
    return evaluate(net, loader, metrics=protocol_metrics(scale), device=device, pbar=False).per_image


# ---------------------------------------------------------------------------------------------
# single images (bicubic baselines, side-by-side crops)


def image_metrics(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, test_y_channel: bool = True) -> dict[str, float]:
    """PSNR and SSIM of two uint8 BGR images with basicsr's functions."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")
    kwargs = {"crop_border": crop_border, "input_order": "HWC", "test_y_channel": test_y_channel}
    return {"psnr": float(calculate_psnr(sr, hr, **kwargs)), "ssim": float(calculate_ssim(sr, hr, **kwargs))}


@torch.no_grad()
def super_resolve(net: Forward, lr_bgr: np.ndarray, *, device: torch.device | str = "cpu") -> np.ndarray:
    """Run ``net`` on a uint8 BGR image and return the uint8 BGR result (the rounding of :func:`evaluate`)."""
    tensor = img2tensor(lr_bgr.astype(np.float32) / 255.0, bgr2rgb=True, float32=True).unsqueeze(0)
    return tensor2img(net(tensor.to(device)).clamp_(0, 1), rgb2bgr=True, out_type=np.uint8, min_max=(0, 1))
