"""Images through a network: numpy images in and out, forward passes whole or in tiles, atomic image writes.

Files and numpy images:

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

Forward passes on NCHW tensors in [0, 1]:

* :func:`run_network`: one call for a forward pass, optionally tiled (:func:`tiled_forward`)
  and/or with the x8 geometric self-ensemble (:func:`self_ensemble_forward`), retried in smaller
  tiles when memory runs out.
* :func:`tile_context`: how much context a tile needs, from the architecture's contract
  (:mod:`lkdn.archs.contract`): its receptive radius when it is translation-local (then tiles
  equal the untiled output exactly: LKDN's radius is ``3 + 12 * num_block`` LR pixels, 99 for
  LKDN and 63 for LKDN-S), else :data:`APPROXIMATE_TILE_PAD` pixels and the tiles are only
  approximate, which is logged.
* :func:`tile_overhead`: how many times the image's pixels its tiles compute with their context;
  :func:`run_network` warns once per tile size and context when it is over :data:`MAX_OVERHEAD`,
  naming an efficient tile size (:func:`efficient_tile`).
* :func:`check_input_size`: refuses, before allocating, an input whose largest activation (a
  ``meta`` forward pass, :func:`largest_activation`) exceeds the device's memory;
  :func:`check_finite_output` refuses an output holding NaN or infinity
  (:class:`NonFiniteOutputError`).

Tiling works in input (LR) pixels: the image is cut into ``tile x tile`` pieces, each is run
with ``tile_pad`` extra pixels of context on every side that lies inside the image, and only
the output of the core is kept.
"""

from __future__ import annotations

import copy
import gc
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from lkdn.archs.build import format_bytes, machine_memory
from lkdn.archs.contract import contract_of
from lkdn.errors import LkdnError
from lkdn.utils import write_atomic

logger = logging.getLogger(__name__)

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


# ------------------------------------------------------------------ forward passes: whole, tiled, ensembled
APPROXIMATE_TILE_PAD = 32
"""Context for networks that are not translation-local (global or strided operations): tiles are approximate."""
MIN_TILE = 16
"""The smallest tile (LR pixels) used; smaller requests are raised to the minimum for the context, with a warning."""
MAX_OVERHEAD = 4.0
"""Tiles whose context makes the network compute more than this many times the image's pixels are warned about."""
EFFICIENT_OVERHEAD = 2.0
"""The overhead (computed pixels per image pixel) of an inner tile of the size the warning suggests."""
_overhead_warned: set[tuple[int, int]] = set()


@dataclass(frozen=True)
class TileContext:
    """The context a network's tiles get, and whether tiles then equal the untiled output."""

    pad: int
    exact: bool
    network: str

    def describe(self) -> str:
        if self.exact:
            return f"exact ({self.network} is translation-local with receptive radius {self.pad})"
        return f"approximate ({self.network} is not translation-local; {self.pad} pixels of context)"


def tile_context(net: nn.Module) -> TileContext:
    """The tile context of ``net`` from its architecture's contract."""
    entry = contract_of(net)
    radius = entry.radius(net)
    if radius is None:
        return TileContext(pad=APPROXIMATE_TILE_PAD, exact=False, network=entry.name)
    return TileContext(pad=radius, exact=True, network=entry.name)


def minimum_tile(tile_pad: int) -> int:
    """The smallest useful tile for ``tile_pad`` pixels of context (below it, context dominates the work)."""
    return max(MIN_TILE, tile_pad // 2)


def tile_overhead(height: int, width: int, tile: int, tile_pad: int) -> float:
    """Pixels the network computes over pixels of the image when a ``height x width`` input runs in ``tile`` tiles
    with ``tile_pad`` pixels of context (1.0 untiled)."""
    computed = sum((min(y1 + tile_pad, height) - max(y0 - tile_pad, 0)) * (min(x1 + tile_pad, width) - max(x0 - tile_pad, 0))
                   for y0, y1, x0, x1 in iter_tiles(height, width, tile))
    return computed / (height * width)


def efficient_tile(tile_pad: int) -> int:
    """The smallest tile whose inner copies compute at most :data:`EFFICIENT_OVERHEAD` times their own pixels."""
    return math.ceil(2 * tile_pad / (math.sqrt(EFFICIENT_OVERHEAD) - 1))


def warn_tile_overhead(height: int, width: int, tile: int, tile_pad: int) -> None:
    """Log a warning, once per tile size and context, when context makes tiling cost more than :data:`MAX_OVERHEAD`."""
    if (tile >= height and tile >= width) or (tile, tile_pad) in _overhead_warned:
        return
    overhead = tile_overhead(height, width, tile, tile_pad)
    if overhead <= MAX_OVERHEAD:
        return
    _overhead_warned.add((tile, tile_pad))
    logger.warning(
        "tile %d with %d pixels of context: the network computes %.1fx the pixels of this %dx%d input (slow); "
        "tiles of %d or more compute at most %.0fx, and no tiling computes 1x, where memory allows",
        tile, tile_pad, overhead, height, width, efficient_tile(tile_pad), EFFICIENT_OVERHEAD,
    )


def iter_tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """The ``(y0, y1, x0, x1)`` cores of a ``tile``-sized grid over a ``height x width`` image."""
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            yield y0, min(y0 + tile, height), x0, min(x0 + tile, width)


def tiled_forward(forward: Forward, lr: torch.Tensor, *, tile: int, tile_pad: int) -> torch.Tensor:
    """Run ``forward`` on ``tile x tile`` pieces of ``lr`` (NCHW) with ``tile_pad`` pixels of context.

    The context is taken from the image itself and stops at the image border (where the
    network's own zero padding applies, as in the untiled pass). The output scale is read from
    the first tile and must be an integer.
    """
    if tile <= 0:
        raise ValueError(f"tile must be a positive number of LR pixels, got {tile}")
    if tile_pad < 0:
        raise ValueError(f"tile_pad must be >= 0, got {tile_pad}")
    height, width = lr.shape[-2:]
    if tile >= height and tile >= width:
        return forward(lr)
    output: torch.Tensor | None = None
    scale = 0
    for y0, y1, x0, x1 in iter_tiles(height, width, tile):
        py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
        py1, px1 = min(y1 + tile_pad, height), min(x1 + tile_pad, width)
        out = forward(lr[..., py0:py1, px0:px1])
        if output is None:
            scale = out.shape[-2] // (py1 - py0)
            if out.shape[-2] != scale * (py1 - py0) or out.shape[-1] != scale * (px1 - px0):
                raise ValueError(
                    f"tiled inference needs an integer scale: input tile {(py1 - py0, px1 - px0)} gave "
                    f"output {tuple(out.shape[-2:])}"
                )
            output = out.new_empty((*out.shape[:-2], height * scale, width * scale))
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        output[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = out[
            ..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale
        ]
    assert output is not None  # the loops run at least once
    return output


# The 8 elements of the dihedral group as (transpose, flip rows, flip columns).
ENSEMBLE_TRANSFORMS: tuple[tuple[bool, bool, bool], ...] = tuple(itertools.product((False, True), repeat=3))


def _transform(x: torch.Tensor, transform: tuple[bool, bool, bool], *, inverse: bool = False) -> torch.Tensor:
    transpose, vflip, hflip = transform
    if transpose and inverse:
        x = x.transpose(-2, -1)
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose and not inverse:
        x = x.transpose(-2, -1)
    return x


def self_ensemble_forward(forward: Forward, lr: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble: mean over flips and transposes of the inverse-transformed outputs."""
    total: torch.Tensor | None = None
    for transform in ENSEMBLE_TRANSFORMS:
        out = _transform(forward(_transform(lr, transform).contiguous()), transform, inverse=True)
        total = out if total is None else total.add_(out)
    assert total is not None
    return total.div_(len(ENSEMBLE_TRANSFORMS))


class NonFiniteOutputError(LkdnError, ValueError):
    """A network's output holds NaN or infinity: nothing may be scored or written from it."""


def check_finite_output(out: torch.Tensor, network: str) -> None:
    """Raise :class:`NonFiniteOutputError` when ``out`` (a network's output) holds NaN or infinity."""
    finite = torch.isfinite(out)
    if not bool(finite.all()):
        bad = out.numel() - int(finite.sum())
        raise NonFiniteOutputError(
            f"{network} gave {bad} of {out.numel()} output values as NaN or infinity (on a {'x'.join(map(str, out.shape))} "
            "output): its weights overflow float32 (or are broken); no result is scored or written"
        )


def largest_activation(net: nn.Module, shape: tuple[int, ...], *, scale: int | None = None) -> int:
    """Bytes of the largest tensor (input, a module's output) of a float32 forward pass of ``net`` on ``shape``.

    The pass runs on a ``meta`` copy of ``net`` (shapes only: nothing is allocated, any size is
    instant). A network whose forward cannot run on ``meta`` is estimated from its input and
    output (``scale``, else ``net.upscale``).
    """
    largest = math.prod(shape) * 4

    def record(module: nn.Module, args: object, output: object) -> None:
        nonlocal largest
        for value in output if isinstance(output, tuple | list) else (output,):
            if isinstance(value, torch.Tensor):
                largest = max(largest, value.numel() * max(value.element_size(), 4))

    try:
        meta = copy.deepcopy(net).to("meta").eval()
        handles = [m.register_forward_hook(record) for m in meta.modules()]
        with torch.no_grad():
            meta(torch.empty(shape, device="meta"))
        for handle in handles:
            handle.remove()
    except Exception:  # noqa: BLE001 - data-dependent forward passes: fall back to the output's size
        factor = scale or getattr(net, "upscale", 1) or 1
        largest = max(largest, math.prod(shape) * factor * factor * 4)
    return largest


def memory_of(device: torch.device | str) -> int:
    """Bytes of memory of ``device``: the GPU's own memory, else :func:`lkdn.archs.build.machine_memory`."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return machine_memory()


def check_input_size(net: nn.Module, shape: tuple[int, ...], *, what: str, device: torch.device | str = "cpu",
                     scale: int | None = None) -> None:
    """Raise ``ValueError`` (starting with ``what``, the flag or key that set ``shape``) when a forward pass of
    ``net`` on ``shape`` has a tensor larger than the memory of ``device`` (:func:`largest_activation`)."""
    needed, memory = largest_activation(net, shape, scale=scale), memory_of(device)
    if needed > memory:
        raise ValueError(f"{what}: a {'x'.join(map(str, shape))} input needs {format_bytes(needed)} for its largest "
                         f"activation alone, more than the {format_bytes(memory)} of {torch.device(device).type} "
                         "memory here; use a smaller size (or tiles)")


class InferenceMemoryError(LkdnError, RuntimeError):
    """Out of memory even with the smallest tiles, or for the output alone; the message says what to try."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` reports exhausted memory: CUDA (``torch.OutOfMemoryError``), the CPU allocator
    (``DefaultCPUAllocator: can't allocate memory``), other back-ends (``... out of memory``) or Python."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _check_output_fits(lr: torch.Tensor, scale: int | None, failure: str) -> None:
    """Raise :class:`InferenceMemoryError` at once when the output buffer alone cannot be allocated."""
    if not scale:
        return
    n, c, h, w = lr.shape
    shape = (n, c, h * scale, w * scale)
    try:
        torch.empty(shape, dtype=torch.float32, device=lr.device)
    except Exception as err:  # noqa: BLE001 - any allocation failure means the output cannot exist
        if not is_out_of_memory(err):
            raise
        size = math.prod(shape) * 4 / 2**30
        raise InferenceMemoryError(
            f"out of memory on a {h}x{w} input ({failure}): the {shape[2]}x{shape[3]} output alone needs {size:.1f} GiB "
            f"on {lr.device}; no tile size helps: use a smaller input or a device with more memory"
        ) from err


def run_network(
    net: nn.Module | Forward, lr: torch.Tensor, *, tile: int | None = None, tile_pad: int | None = None,
    self_ensemble: bool = False, oom_fallback: bool = True, scale: int | None = None,
) -> torch.Tensor:
    """Super-resolve ``lr`` (NCHW, values in [0, 1]) without gradients; the output is not clamped.

    Args:
        net: the network (put it in eval mode first) or any callable on NCHW tensors.
        lr: input batch, on the network's device.
        tile: tile size in LR pixels; ``None`` or 0 runs the whole image at once. Tiles below
            :func:`minimum_tile` are raised to it, with a warning.
        tile_pad: context around each tile in LR pixels; ``None`` takes :func:`tile_context` of
            ``net`` (which must then be an ``nn.Module`` when ``tile`` is given).
        self_ensemble: average the x8 geometric self-ensemble (8 forward passes).
        oom_fallback: when the pass runs out of memory (:func:`is_out_of_memory`), retry with
            tiles of half the image's (or the current tile's) size, halving down to
            :data:`MIN_TILE` pixels; an :class:`InferenceMemoryError` says when even that fails, or
            at once when the output buffer alone does not fit (needs ``scale``).
        scale: the upscaling factor, to check the output buffer on an out-of-memory error.
    """
    if lr.ndim != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(lr.shape)}")
    if tile_pad is None:
        if isinstance(net, nn.Module):
            tile_pad = tile_context(net).pad
        elif tile:
            raise ValueError("tile_pad must be given when net is not an nn.Module")
        else:
            tile_pad = APPROXIMATE_TILE_PAD  # only for the out-of-memory retry
    if tile is not None and tile < 0:
        raise ValueError(f"tile must be a positive number of LR pixels (0 or None: no tiling), got {tile}")
    height, width = lr.shape[-2:]
    size = tile or None
    if size is not None and size < minimum_tile(tile_pad):
        logger.warning("tile %d is below the minimum %d for %d pixels of context; using %d", size,
                       minimum_tile(tile_pad), tile_pad, minimum_tile(tile_pad))
        size = minimum_tile(tile_pad)
    if size:
        warn_tile_overhead(height, width, size, tile_pad)
    while True:
        failure = None
        try:
            with torch.no_grad():
                forward: Forward = net
                if size:
                    def forward(x: torch.Tensor, size: int = size) -> torch.Tensor:
                        return tiled_forward(net, x, tile=size, tile_pad=tile_pad)
                return self_ensemble_forward(forward, lr) if self_ensemble else forward(lr)
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
            if not oom_fallback or not is_out_of_memory(err):
                raise
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if size is not None and size <= MIN_TILE:
                raise InferenceMemoryError(
                    f"out of memory on a {height}x{width} input even with {size}x{size} tiles ({failure}); free "
                    "memory, run on another device (--device cpu) or use a smaller network"
                ) from err
        # outside the except block: the failed attempt's tensors (held by the traceback) are freed
        _release_memory(lr.device)
        _check_output_fits(lr, scale, failure)
        size = max(MIN_TILE, math.ceil((size or max(height, width)) / 2))
        logger.warning("out of memory on a %dx%d input (%s); retrying with %dx%d tiles and %d pixels of context",
                       height, width, failure, size, size, tile_pad)
