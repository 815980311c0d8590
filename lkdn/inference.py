"""Inference building blocks shared by ``lkdn/test.py``, ``scripts/inference.py`` and the Upscaler.

* :func:`run_network`: one call for a forward pass on an NCHW tensor in [0, 1], optionally
  tiled (:func:`tiled_forward`) and/or with the x8 geometric self-ensemble
  (:func:`self_ensemble_forward`).
* :func:`receptive_radius`, :func:`is_translation_local`, :func:`default_tile_pad`: how much
  context (in input pixels) a tile needs so that tiled inference equals the untiled one.
  LKDN's radius is ``3 + 12 * num_block`` LR pixels: 99 for LKDN (8 blocks), 63 for LKDN-S.
* :func:`upscale_image`: a numpy image of any common kind (uint8 / uint16 / float, grey,
  grey+alpha, colour, colour+alpha) in, the super-resolved image of the same kind out.
* :func:`load_model`: build ``network_g`` and load ``path.pretrain_network_g`` from parsed
  options, in eval mode on a device.

Tiling works in input (LR) pixels: the image is cut into ``tile x tile`` pieces, each is run
with ``tile_pad`` extra pixels of context on every side that lies inside the image, and only
the output of the core is kept. For a network made of stride-1 convolutions and per-pixel
operations (LKDN), the output of the core is exactly the untiled output whenever ``tile_pad``
is at least the network's receptive radius; networks with global or strided operations (CCA,
ESA in RFDN/BSRN) give approximate tiles only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from lkdn import build_network
from lkdn.utils.checkpoint import load_network

logger = logging.getLogger(__name__)

#: Context used when a network's receptive radius cannot be bounded (global or strided operations).
FALLBACK_TILE_PAD = 32
#: Module classes whose output at a pixel depends on far-away pixels (pooling, resampling,
#: channel attention over the whole image, ESA's strided branch).
_NON_LOCAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Upsample,
)
_NON_LOCAL_NAMES = frozenset({"CCA", "CCALayer", "ESA", "ESACCA"})

Forward = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# receptive field


def receptive_radius(net: nn.Module) -> int:
    """An upper bound on the receptive radius of ``net``, in input pixels.

    The sum over every ``nn.Conv2d`` of ``dilation * (kernel - 1) // 2`` (per axis, the larger
    one). It is exact for networks whose spatial convolutions all lie on one path with 1x1
    side branches, as in LKDN: ``fea_conv`` 1, each LKDB 12 (three 3x3 remaining-branch convs,
    the 3x3 BSConvU ``c4``, LKA's 5x5 (2) and 5x5 dilation 3 (6)), ``c2`` 1, upsampler 1, so
    ``3 + 12 * num_block``. (The re-parameterizable upsampler counts 2 for its parallel 3x3
    branches, one more than its true radius.) Meaningful only when
    :func:`is_translation_local` holds.
    """
    radius = 0
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            per_axis = [d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation, strict=True)]
            radius += max(per_axis)
    return radius


def is_translation_local(net: nn.Module) -> bool:
    """Whether ``net`` is built of stride-1 convolutions and per-pixel operations only.

    False when it holds pooling, resampling, global channel attention (CCA) or strided convs
    (ESA): then no finite tile padding makes tiled output equal untiled output.
    """
    for module in net.modules():
        if isinstance(module, _NON_LOCAL_TYPES) or type(module).__name__ in _NON_LOCAL_NAMES:
            return False
        if isinstance(module, nn.Conv2d) and any(s != 1 for s in module.stride):
            return False
    return True


def default_tile_pad(net: nn.Module) -> int:
    """The tile padding that makes tiling exact (:func:`receptive_radius`), or 32 when none can."""
    if is_translation_local(net):
        return receptive_radius(net)
    return FALLBACK_TILE_PAD


# ---------------------------------------------------------------------------------------------
# forward passes


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
ENSEMBLE_TRANSFORMS: tuple[tuple[bool, bool, bool], ...] = tuple(
    (t, v, h) for t in (False, True) for v in (False, True) for h in (False, True)
)


def _transform(x: torch.Tensor, transform: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, vflip, hflip = transform
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose:
        x = x.transpose(-2, -1)
    return x


def _inverse_transform(x: torch.Tensor, transform: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, vflip, hflip = transform
    if transpose:
        x = x.transpose(-2, -1)
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x


def self_ensemble_forward(forward: Forward, lr: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble: mean over flips and transposes of the inverse-transformed outputs."""
    total: torch.Tensor | None = None
    for transform in ENSEMBLE_TRANSFORMS:
        out = _inverse_transform(forward(_transform(lr, transform).contiguous()), transform)
        total = out if total is None else total.add_(out)
    assert total is not None
    return total.div_(len(ENSEMBLE_TRANSFORMS))


class InferenceMemoryError(RuntimeError):
    """Out of memory even with the smallest tiles; the message gives the input size and what to try."""


#: The smallest tile (LR pixels) the out-of-memory fallback tries before giving up.
MIN_FALLBACK_TILE = 16


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` reports exhausted memory: CUDA (``torch.OutOfMemoryError``), the CPU allocator
    (``DefaultCPUAllocator: can't allocate memory``), other back-ends (``... out of memory``) or Python."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _forward_once(
    net: nn.Module | Forward, lr: torch.Tensor, *, tile: int | None, tile_pad: int | None, self_ensemble: bool,
) -> torch.Tensor:
    forward: Forward = net
    if tile:
        if tile_pad is None:
            if not isinstance(net, nn.Module):
                raise ValueError("tile_pad must be given when net is not an nn.Module")
            tile_pad = default_tile_pad(net)
        pad = tile_pad

        def forward(x: torch.Tensor) -> torch.Tensor:
            return tiled_forward(net, x, tile=tile, tile_pad=pad)

    return self_ensemble_forward(forward, lr) if self_ensemble else forward(lr)


def run_network(
    net: nn.Module | Forward, lr: torch.Tensor, *, tile: int | None = None, tile_pad: int | None = None,
    self_ensemble: bool = False, oom_fallback: bool = True,
) -> torch.Tensor:
    """Super-resolve ``lr`` (NCHW, values in [0, 1]) without gradients; the output is not clamped.

    Args:
        net: the network (put it in eval mode first) or any callable on NCHW tensors.
        lr: input batch, on the network's device.
        tile: tile size in LR pixels; ``None`` or 0 runs the whole image at once.
        tile_pad: context around each tile in LR pixels; ``None`` takes
            :func:`default_tile_pad` (the receptive radius, which makes tiling exact for LKDN).
        self_ensemble: average the x8 geometric self-ensemble (8 forward passes).
        oom_fallback: when the pass runs out of memory (:func:`is_out_of_memory`), log it and retry
            with tiles of half the image's (or the current tile's) size, halving down to
            :data:`MIN_FALLBACK_TILE` pixels; for an ``nn.Module`` without ``tile_pad`` the tiles get
            the receptive radius as context, so the result is the untiled one (LKDN). Beyond that an
            :class:`InferenceMemoryError` says so.
    """
    if lr.ndim != 4:
        raise ValueError(f"expected an NCHW tensor, got shape {tuple(lr.shape)}")
    height, width = lr.shape[-2:]
    size = tile or None
    while True:
        failure = None
        try:
            with torch.no_grad():
                return _forward_once(net, lr, tile=size, tile_pad=tile_pad, self_ensemble=self_ensemble)
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
            if not oom_fallback or not is_out_of_memory(err):
                raise
            failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if size is not None and size <= MIN_FALLBACK_TILE:
                raise InferenceMemoryError(
                    f"out of memory on a {height}x{width} input even with {size}x{size} tiles ({failure}); free "
                    "memory, run on another device (--device cpu) or use a smaller network"
                ) from err
        # outside the except block: the failed attempt's tensors (held by the traceback) are freed
        _release_memory(lr.device)
        size = max(MIN_FALLBACK_TILE, math.ceil((size or max(height, width)) / 2))
        if tile_pad is None and not isinstance(net, nn.Module):
            tile_pad = FALLBACK_TILE_PAD
        pad = tile_pad if tile_pad is not None else default_tile_pad(net)  # type: ignore[arg-type]
        logger.warning("out of memory on a %dx%d input (%s); retrying with %dx%d tiles and %d pixels of context",
                       height, width, failure, size, size, pad)


def tile_options(val: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """``(size, pad)`` from a ``val`` section's ``tile: {size: N, pad: P}``; no ``pad``: ``None`` (receptive radius)."""
    tile = (val or {}).get("tile")
    if tile is None:
        return None, None
    if not isinstance(tile, Mapping) or set(tile) - {"size", "pad"}:
        raise ValueError(f"val.tile: expected {{size: N, pad: P}} (LR pixels; pad ~ = receptive radius), got {tile!r}")
    size, pad = tile.get("size"), tile.get("pad")
    for key, value in (("size", size), ("pad", pad)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"val.tile.{key}: expected a non-negative integer, got {value!r}")
    return size or None, pad


# ---------------------------------------------------------------------------------------------
# numpy images


def _value_range(image: np.ndarray) -> float:
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    if image.dtype in (np.float32, np.float64):
        return 1.0
    raise ValueError(f"unsupported image type {image.dtype}: expected uint8, uint16 or float in [0, 1]")


def _from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    peak = _value_range(np.empty(0, dtype))
    if np.issubdtype(dtype, np.integer):
        return np.clip(np.round(image * peak), 0, peak).astype(dtype)
    return np.clip(image, 0, 1).astype(dtype)


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
    net: nn.Module, image: np.ndarray, *, device: torch.device | str = "cpu", bgr: bool = True,
    tile: int | None = None, tile_pad: int | None = None, self_ensemble: bool = False, alpha: str = "bicubic",
) -> np.ndarray:
    """Super-resolve a numpy image and return one of the same kind (dtype, channels, order).

    Args:
        net: a network on ``device`` in eval mode, taking RGB in [0, 1].
        image: HxW (grey) or HxWxC with C = 1 (grey), 2 (grey + alpha), 3 (colour), 4 (colour +
            alpha); uint8, uint16 (kept 16-bit) or float in [0, 1].
        device: where to run ``net``.
        bgr: colour channels are in OpenCV's BGR order (``cv2.imread``); ``False`` for RGB.
        tile, tile_pad, self_ensemble: as in :func:`run_network`.
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
    out = run_network(net, tensor, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble)
    out = out.squeeze(0).float().clamp_(0, 1).permute(1, 2, 0).cpu().numpy()
    if grey:
        out = out.mean(axis=2)
    elif bgr:
        out = out[..., ::-1]
    result = _from_float(np.ascontiguousarray(out), image.dtype)
    if alpha_channel is not None:
        size = (result.shape[1], result.shape[0])
        scaled = cv2.resize(alpha_channel.astype(np.float32) / np.float32(peak), size, interpolation=cv2.INTER_CUBIC)
        result = np.dstack([result, _from_float(scaled, image.dtype)])
    elif image.ndim == 3 and image.shape[2] == 1:
        result = result[..., None]
    return result


# ---------------------------------------------------------------------------------------------
# models from options


def load_model(
    opt: Mapping[str, Any], *, weights: str | None = None, device: torch.device | str = "cpu",
) -> nn.Module:
    """Build ``opt['network_g']`` and load its weights; return it in eval mode on ``device``.

    The weights come from ``weights`` or ``opt['path']['pretrain_network_g']`` (one of them is
    required), with ``path.param_key_g`` (default: ``params_ema``, then ``params``) and
    ``path.strict_load_g`` (default true), as in BasicSR.
    """
    paths = opt.get("path") or {}
    weights = weights or paths.get("pretrain_network_g")
    if not weights:
        raise ValueError("no weights: set path.pretrain_network_g in the options (or pass the weights file)")
    net = build_network(opt["network_g"])
    strict = paths.get("strict_load_g", True)
    load_network(net, weights, param_key=paths.get("param_key_g") or None, strict=True if strict is None else bool(strict))
    logger.info("loaded %s into %s", weights, opt["network_g"].get("type"))
    return net.eval().to(device)

