"""Numpy images in and out: any common kind of image through a network, and atomic image writes.

* :func:`upscale_image`: a numpy image of any common kind (uint8 / uint16 / float, grey,
  grey + alpha, colour, colour + alpha) in, the super-resolved image of the same kind out.
* :func:`float_peak`: the value range of a float image, told by its values: [0, 1] or 0-255;
  any other range, NaN or infinity is refused with the range found.
* :func:`read_image_file` / :func:`decode_image`: read and decode an image with OpenCV after
  :func:`check_image_bytes` (empty, truncated PNG / JPEG); every failure is a :class:`DataError`
  naming the file. The datasets (:mod:`lkdn.data.safe_dataset`) read through them too.
* :func:`read_image`: read a file as uint8 BGR (the form every metric and network input takes).
* :func:`read_image_unchanged`: read a file as it is (bit depth, grey, alpha kept), with a clear
  error naming the file.
* :func:`write_image`: encode and write an image atomically (a kill during the write never
  leaves a broken file where a good one was). A float image is stored as 16-bit PNG or 8-bit
  JPEG / WebP / BMP by its range (those formats hold no floats); TIFF keeps it float.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from lkdn.errors import LkdnError
from lkdn.utils import write_atomic

Forward = Callable[[torch.Tensor], torch.Tensor]
FLOAT_TYPES = (np.float16, np.float32, np.float64)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""The suffixes of the image files a folder is read for."""
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


# ------------------------------------------------------------------------------------------ reading

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
TAIL = 1024  # bytes searched for the end marker of PNG / JPEG files
READ_FIX = "re-create or remove the file (and its LR/HR partner)"


class DataError(LkdnError, ValueError):
    """An image (or a dataset of them) cannot be used; the message names the file and the fix.

    Attributes:
        path: the file at fault, when there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the first and last lines
            lines = [line for line in message.strip().splitlines() if line.strip()]
            last = lines[-1].split("DataError: ", 1)[-1]
            message = f"{last} ({lines[0].strip().rstrip('.')})"
        super().__init__(message)
        self.path = path


def check_image_bytes(data: bytes | None, source: str) -> bytes:
    """Return ``data`` when it can be a whole image file; a :class:`DataError` names ``source`` otherwise.

    Catches what decoders accept silently or report without a name: no data, an empty file, a
    PNG cut before its ``IEND`` chunk, a JPEG cut before its end-of-image marker.
    """
    if data is None:
        raise DataError(f"{source}: no such image (an LMDB key listed in meta_info.txt but absent from data.mdb?)",
                        path=source)
    if len(data) == 0:
        raise DataError(f"{source}: empty file (0 bytes); {READ_FIX}", path=source)
    tail = bytes(data[-TAIL:])
    if data[:8] == PNG_SIGNATURE and b"IEND" not in tail:
        raise DataError(f"{source}: truncated PNG ({len(data)} bytes, no IEND chunk); {READ_FIX}", path=source)
    if data[:3] == JPEG_SIGNATURE and b"\xff\xd9" not in tail:
        raise DataError(f"{source}: truncated JPEG ({len(data)} bytes, no end-of-image marker); {READ_FIX}",
                        path=source)
    return data


def decode_image(data: bytes | None, source: str, *, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode image bytes with OpenCV after :func:`check_image_bytes`; errors name ``source``."""
    data = check_image_bytes(data, source)
    buffer = np.frombuffer(data, np.uint8)
    try:
        img = cv2.imdecode(buffer, flags)
        if (img is None or img.size == 0) and flags != cv2.IMREAD_UNCHANGED:
            # OpenCV decodes 32-bit float TIFFs only unchanged: read them so, then convert to 8-bit BGR
            img = _float_to_bgr8(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), flags, source)
        elif img is not None and img.dtype in FLOAT_TYPES:
            float_peak(img, source)  # NaN, infinity or an unknown range: refused here, naming the file
    except cv2.error as err:
        raise DataError(f"{source}: cannot decode image ({err}); {READ_FIX}", path=source) from err
    except ValueError as err:
        raise DataError(str(err), path=source) from err
    if img is None or img.size == 0:
        raise DataError(f"{source}: cannot decode image (corrupt, or not an image file); {READ_FIX}", path=source)
    return img


def _float_to_bgr8(img: np.ndarray | None, flags: int, source: str) -> np.ndarray | None:
    """A float image decoded unchanged, as ``cv2.imdecode(..., flags)`` would give an 8-bit one.

    Its range ([0, 1] or 0-255) is told by its values (:func:`lkdn.images.float_peak`, which
    refuses non-finite values and other ranges with a ValueError naming ``source``).
    """
    if img is None or img.dtype not in FLOAT_TYPES:
        return None
    peak = float_peak(img, source)
    img = np.round(np.clip(img.astype(np.float64) * (255.0 / peak), 0, 255)).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if flags == cv2.IMREAD_GRAYSCALE:
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def read_image_file(path: str | os.PathLike[str], *, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read and decode one image file; a :class:`DataError` names the file for every failure."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise DataError(f"{path}: image not found", path=str(path)) from err
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})", path=str(path)) from err
    return decode_image(data, str(path), flags=flags)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as uint8 BGR HWC.

    A :class:`DataError` (a ValueError) names the file when it is missing,
    empty, truncated (PNG, JPEG), corrupt or not an image.
    """
    return read_image_file(path, flags=cv2.IMREAD_COLOR)


def read_image_unchanged(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as it is stored (bit depth, grey, alpha kept); a ValueError names the file."""
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


def image_pairs(hr_dir: str | os.PathLike[str], lr_dir: str | os.PathLike[str], *,
                templates: Sequence[str] = ("{}",)) -> list[tuple[Path, Path]]:
    """``(HR, LR)`` image files of two folders, sorted by HR name: each HR image with the LR image whose stem is
    the first of ``templates`` (formatted with the HR stem: ``"{}x4"``) found in ``lr_dir``.

    A :class:`DataError` names the folder that is missing or empty, or the LR image an HR image lacks.
    """
    hr_dir, lr_dir = Path(hr_dir), Path(lr_dir)
    for folder in (hr_dir, lr_dir):
        if not folder.is_dir():
            raise DataError(f"image folder not found: {folder}", path=str(folder))
    lr_by_stem = {p.stem: p for p in sorted(lr_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    for hr in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        stems = [template.format(hr.stem) for template in templates]
        lr = next((lr_by_stem[stem] for stem in stems if stem in lr_by_stem), None)
        if lr is None:
            raise DataError(f"{lr_dir}: no LR image {' or '.join(f'{s}.*' for s in stems)} for HR image {hr}", path=str(hr))
        pairs.append((hr, lr))
    if not pairs:
        raise DataError(f"{hr_dir}: no images", path=str(hr_dir))
    return pairs

