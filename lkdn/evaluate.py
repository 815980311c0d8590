"""Image-level evaluation with the published protocol (DESIGN: benchmark protocol).

PSNR and SSIM on the Y channel (BT.601) of uint8 images, border of ``crop_border`` pixels
removed, computed by ``basicsr.metrics`` exactly as the published tables were; the network
output is rounded to uint8 first (``basicsr.utils.tensor2img``), as BasicSR does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from torch import nn

from lkdn.data.safe_dataset import read_image_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 BGR HWC.

    A :class:`lkdn.data.safe_dataset.DataError` (a ValueError) names the file when it is missing,
    empty, truncated (PNG, JPEG), corrupt or not an image.
    """
    return read_image_file(path, flags=cv2.IMREAD_COLOR)


@torch.no_grad()
def super_resolve(net: nn.Module, lr_bgr: np.ndarray, *, device: torch.device | str = "cpu") -> np.ndarray:
    """Run ``net`` on a uint8 BGR image and return the uint8 BGR result."""
    tensor = img2tensor(lr_bgr.astype(np.float32) / 255.0, bgr2rgb=True, float32=True).unsqueeze(0).to(device)
    return tensor2img(net(tensor).clamp_(0, 1), rgb2bgr=True, out_type=np.uint8, min_max=(0, 1))


def image_metrics(sr: np.ndarray, hr: np.ndarray, *, crop_border: int, test_y_channel: bool = True) -> dict[str, float]:
    """PSNR and SSIM of two uint8 BGR images with basicsr's functions."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")
    kwargs = {"crop_border": crop_border, "input_order": "HWC", "test_y_channel": test_y_channel}
    return {"psnr": float(calculate_psnr(sr, hr, **kwargs)), "ssim": float(calculate_ssim(sr, hr, **kwargs))}


def image_pairs(hr_dir: str | Path, lr_dir: str | Path, *, filename_tmpl: str = "{}") -> list[tuple[Path, Path]]:
    """Match each HR image with the LR image named ``filename_tmpl.format(stem)`` + suffix."""
    hr_dir, lr_dir = Path(hr_dir), Path(lr_dir)
    for folder in (hr_dir, lr_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}")
    lr_by_stem = {p.stem: p for p in sorted(lr_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    for hr in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        lr_stem = filename_tmpl.format(hr.stem)
        if lr_stem not in lr_by_stem:
            raise FileNotFoundError(f"no LR image {lr_stem}.* in {lr_dir} for HR image {hr}")
        pairs.append((hr, lr_by_stem[lr_stem]))
    if not pairs:
        raise FileNotFoundError(f"no images in {hr_dir}")
    return pairs


def evaluate_folder(
    net: nn.Module, hr_dir: str | Path, lr_dir: str | Path, *, scale: int, device: torch.device | str = "cpu",
    filename_tmpl: str = "{}",
) -> dict[str, dict[str, float]]:
    """Per-image PSNR/SSIM (Y channel, ``crop_border = scale``) of ``net`` on an HR/LR folder pair."""
    net.eval()
    results = {}
    for hr_path, lr_path in image_pairs(hr_dir, lr_dir, filename_tmpl=filename_tmpl):
        sr = super_resolve(net, read_image(lr_path), device=device)
        results[hr_path.stem] = image_metrics(sr, read_image(hr_path), crop_border=scale)
    return results
