"""Numpy images in and out: any common kind of image through a network, and atomic image writes.

* :func:`upscale_image`: a numpy image of any common kind (uint8 / uint16 / float, grey,
  grey + alpha, colour, colour + alpha) in, the super-resolved image of the same kind out.
* :func:`float_peak`: the value range of a float image, told by its values: [0, 1] or 0-255;
  any other range, NaN or infinity is refused with the range found.
* :func:`read_image_unchanged`: read a file as it is (bit depth, grey, alpha kept), with a clear
  error naming the file.
* :func:`write_image`: encode and write an image atomically (a kill during the write never
  leaves a broken file where a good one was). A float image is stored as 16-bit PNG or 8-bit
  JPEG / WebP / BMP by its range (those formats hold no floats); TIFF keeps it float.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from lkdn.utils.files import write_atomic

Forward = Callable[[torch.Tensor], torch.Tensor]
FLOAT_TYPES = (np.float16, np.float32, np.float64)
FLOAT_SUFFIXES = (".tif", ".tiff", ".exr", ".hdr", ".pfm")  # formats OpenCV writes float images to


def float_peak(image: np.ndarray, source: str = "image") -> float:
    """The white level of a float image by its values: 1.0 for [0, 1], 255.0 for 0-255.

    A ValueError naming ``source`` refuses NaN or infinite pixels and any other range (HDR,
    negative values), which would otherwise come out black, white or as noise.
    """
    finite = np.isfinite(image)
    if not finite.all():
        bad = image.size - int(np.count_nonzero(finite))
        raise ValueError(f"{source}: {bad} of {image.size} float pixel values are NaN or infinite; "
                         "fix or re-export the image")
    if image.size == 0:
        return 1.0
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return 1.0
    if low >= 0 and high <= 255:
        return 255.0
    raise ValueError(f"{source}: float pixel values span [{low:g}, {high:g}]: expected [0, 1] or [0, 255] "
                     "(tone-map or rescale the image first)")


def _value_range(image: np.ndarray, source: str = "image") -> float:
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    if image.dtype in FLOAT_TYPES:
        return float_peak(image, source)
    raise ValueError(f"unsupported image type {image.dtype}: expected uint8, uint16 or float in [0, 1] or [0, 255]")


def _from_float(image: np.ndarray, dtype: np.dtype, peak: float | None = None) -> np.ndarray:
    """``image`` in [0, 1] as ``dtype``: integers scaled to their range, floats to ``peak`` (default 1)."""
    if np.issubdtype(dtype, np.integer):
        top = _value_range(np.empty(0, dtype))
        return np.clip(np.round(image * top), 0, top).astype(dtype)
    return (np.clip(image, 0, 1) * (peak or 1.0)).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an HW / HWC image into colour (HW or HWx3) and alpha (HW or ``None``).

    Channels: 1 grey, 2 grey + alpha, 3 colour, 4 colour + alpha.
    """
    if image.ndim == 2:
        return image, None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {image.shape}: expected HxW or HxWxC with C in 1..4")
    channels = image.shape[2]
    if channels == 1:
        return image[..., 0], None
    if channels == 2:
        return image[..., 0], image[..., 1]
    if channels == 3:
        return image, None
    return image[..., :3], image[..., 3]


def upscale_image(
    forward: Forward, image: np.ndarray, *, device: torch.device | str = "cpu", bgr: bool = True,
    alpha: str = "bicubic",
) -> np.ndarray:
    """Super-resolve a numpy image and return one of the same kind (dtype, channels, order).

    Args:
        forward: maps a 1x3xHxW float tensor in [0, 1] on ``device`` to its super-resolved
            1x3xsHxsW tensor (an :class:`lkdn.Upscaler`, with its tiling and self-ensemble).
        image: HxW (grey) or HxWxC with C = 1 (grey), 2 (grey + alpha), 3 (colour), 4 (colour +
            alpha); uint8, uint16 (kept 16-bit) or float in [0, 1] or [0, 255] (told by the values,
            see :func:`float_peak`; the output keeps the range).
        device: where ``forward`` takes its input.
        bgr: colour channels are in OpenCV's BGR order (``cv2.imread``); ``False`` for RGB.
        alpha: ``"bicubic"`` upscales an alpha channel with bicubic interpolation and re-attaches
            it; ``"error"`` refuses images with alpha.

    Grey images are replicated to three channels for the network and written back as the mean
    of the three output channels. Integer outputs are rounded (as ``basicsr.utils.tensor2img``).
    """
    if alpha not in ("bicubic", "error"):
        raise ValueError(f"alpha must be 'bicubic' or 'error', got {alpha!r}")
    peak = _value_range(image)
    colour, alpha_channel = split_alpha(image)
    if alpha_channel is not None and alpha == "error":
        raise ValueError(f"image has an alpha channel (shape {image.shape}); use alpha='bicubic' to upscale it")
    grey = colour.ndim == 2
    rgb = np.repeat(colour[..., None], 3, axis=2) if grey else (colour[..., ::-1] if bgr else colour)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(peak))
    tensor = tensor.permute(2, 0, 1).unsqueeze(0).to(device)
    out = forward(tensor)
    out = out.squeeze(0).float().clamp_(0, 1).permute(1, 2, 0).cpu().numpy()
    if grey:
        out = out.mean(axis=2)
    elif bgr:
        out = out[..., ::-1]
    result = _from_float(np.ascontiguousarray(out), image.dtype, peak)
    if alpha_channel is not None:
        size = (result.shape[1], result.shape[0])
        scaled = cv2.resize(alpha_channel.astype(np.float32) / np.float32(peak), size, interpolation=cv2.INTER_CUBIC)
        result = np.dstack([result, _from_float(scaled, image.dtype, peak)])
    elif image.ndim == 3 and image.shape[2] == 1:
        result = result[..., None]
    return result


def read_image_unchanged(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as it is stored (bit depth, grey, alpha kept); a ValueError names the file."""
    from lkdn.data.safe_dataset import read_image_file

    return read_image_file(path, flags=cv2.IMREAD_UNCHANGED)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Encode ``image`` by the suffix of ``path`` (PNG by default) and write it atomically.

    A float image (range by :func:`float_peak`) goes to TIFF as it is, to PNG as 16-bit and to
    other formats as 8-bit. A ValueError says when the image cannot be encoded in that format;
    an OSError (disk full, read-only folder) leaves any previous file at ``path`` unchanged.
    """
    path = Path(path)
    suffix = path.suffix or ".png"
    if image.dtype in FLOAT_TYPES and suffix.lower() not in FLOAT_SUFFIXES:
        unit = image.astype(np.float32) / np.float32(float_peak(image, str(path)))
        image = _from_float(unit, np.dtype(np.uint16 if suffix.lower() == ".png" else np.uint8))
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise ValueError(f"cannot encode a {image.dtype} image of shape {image.shape} as {suffix} for {path}")
    return write_atomic(path, encoded.tobytes())
