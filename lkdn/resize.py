"""Image resizing with the benchmark protocol's bicubic (MATLAB-style, antialiased).

``basicsr.utils.matlab_functions.imresize`` reproduces MATLAB's ``imresize``, which every
published SR table used to make LR images; OpenCV's ``INTER_CUBIC`` (no antialiasing) is
offered only as an explicit choice because its LR images give numbers that are not
comparable with papers.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("matlab", "cv2")


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so height and width are multiples of ``scale``."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale, ...]


def _peak(image: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    raise ValueError(f"unsupported image type {image.dtype}: expected 8- or 16-bit")


def bicubic_resize(image: np.ndarray, factor: float, *, method: str = "matlab") -> np.ndarray:
    """Resize an 8- or 16-bit image by ``factor`` (< 1 shrinks) with MATLAB's or OpenCV's bicubic."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "cv2":
        height, width = image.shape[:2]
        size = (round(width * factor), round(height * factor))
        interpolation = cv2.INTER_CUBIC
        return cv2.resize(image, size, interpolation=interpolation)
    from basicsr.utils.matlab_functions import imresize  # lazy: the MATLAB-style resize only

    peak = _peak(image)
    out = imresize(image.astype(np.float64) / peak, factor)
    return np.clip(np.round(out * peak), 0, peak).astype(image.dtype)


def downscale(hr: np.ndarray, scale: int, *, method: str = "matlab") -> np.ndarray:
    """LR image of a mod-cropped HR image, ``scale`` times smaller."""
    height, width = hr.shape[:2]
    if height % scale or width % scale:
        raise ValueError(f"image size {width}x{height} is not a multiple of the scale {scale}; mod-crop it first")
    return bicubic_resize(hr, 1 / scale, method=method)
