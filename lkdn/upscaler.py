"""``lkdn.Upscaler``: the fastest correct way to run a network of ours for inference.

    from lkdn import Upscaler
    up = Upscaler.from_config("options/test/LKDN/test_LKDN_x4.yml")        # YAML + its weights
    up = Upscaler.from_checkpoint("LKDN_x4_deploy.safetensors")             # self-describing file
    sr = up(lr)                     # N,3,H,W float in [0, 1] -> N,3,sH,sW float32 in [0, 1]
    out = up.upscale_image(cv2.imread("photo.png", cv2.IMREAD_UNCHANGED))  # numpy in, numpy out

``optimize=True`` (the default) runs :func:`lkdn.optimize.optimize_network` (re-parameterization,
``channels_last``); in inference the networks themselves run their element-wise operations in
place and skip the trunk's big concatenation. The output equals the plain eager network's
within 1e-4 in float32. ``compile=True`` adds ``torch.compile``; ``precision="bf16"``/``"fp16"``
runs under autocast (changes results; ask for it explicitly). Tiling, the x8 self-ensemble and
the out-of-memory retry come from :mod:`lkdn.tiling`.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from lkdn.images import upscale_image
from lkdn.loading import load_network_from_options
from lkdn.optimize import compile_network, optimize_network, tune_cpu_allocator
from lkdn.options import load_options
from lkdn.tiling import run_network, tile_context
from lkdn.utils.checkpoint import CheckpointError, network_from_file, read_metadata

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None`` -> CUDA when available, else the CPU; strings are parsed by ``torch.device``.

    A ValueError names a device that does not exist or is not available here.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {str(device)!r} is not a device: use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available here; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"device {device}: only cpu and cuda are supported")
    return device


class Upscaler:
    """A network ready for inference: optimized, on its device, callable on image batches.

    Args:
        net: the network (any registered one, in training or deploy form); it is not modified.
        scale: the upscaling factor (default and check: ``net.upscale`` when the network has one).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (CUDA when available).
        optimize: apply :func:`lkdn.optimize.optimize_network` (same result within 1e-4, float32).
        precision: ``fp32`` (default), or ``bf16`` / ``fp16`` autocast: faster (GPUs with tensor
            cores; bf16 on CPUs with AVX512-BF16), but the output changes (LKDN x4, bf16 on a CPU:
            up to 0.02, mean 0.003 on [0, 1]).
        compile: ``torch.compile`` the (optimized) network: pays off only for many calls on
            inputs of one size (the first call of each size compiles, tens of seconds on a CPU).
        tile: default tile size in LR pixels for :meth:`__call__` (``None``: whole images).
        tile_pad: context around tiles (default: the architecture's receptive radius when it is
            translation-local, which makes tiles exact; see :attr:`tiling`).
        self_ensemble: default for the x8 geometric self-ensemble.
        tune_allocator: call :func:`lkdn.optimize.tune_cpu_allocator` (process-wide: glibc keeps
            freed memory for reuse, about 15% faster on CPUs; the process keeps its peak memory).
            ``None``: when ``optimize`` is on and the device is the CPU.
    """

    def __init__(
        self, net: nn.Module, *, scale: int | None = None, device: torch.device | str | None = None,
        optimize: bool = True, precision: str = "fp32", compile: bool = False,
        tile: int | None = None, tile_pad: int | None = None, self_ensemble: bool = False,
        tune_allocator: bool | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        self.precision = precision
        self.scale = self._check_scale(scale, getattr(net, "upscale", None))
        self.tiling = tile_context(net)
        self.tile, self.self_ensemble = tile, self_ensemble
        self.tile_pad = self.tiling.pad if tile_pad is None else tile_pad
        if tile and not self.tiling.exact:
            logger.warning("Upscaler: tiles are %s", self.tiling.describe())
        net = copy.deepcopy(net).to(self.device).eval()  # the caller's network keeps its device and mode
        self.optimizations: list[str] = []
        if optimize:
            net = optimize_network(net, applied=self.optimizations)
        self.channels_last = optimize
        if tune_allocator is None:
            tune_allocator = optimize and self.device.type == "cpu"
        if tune_allocator and tune_cpu_allocator():
            self.optimizations.append("tuned CPU allocator")
        if compile:
            net = compile_network(net, device=self.device)
            self.optimizations.append("torch.compile")
        self.network: nn.Module | Callable[[torch.Tensor], torch.Tensor] = net
        logger.info(
            "Upscaler: %s on %s, %s, optimizations: %s", type(net).__name__, self.device, precision,
            ", ".join(self.optimizations) or "none",
        )

    @staticmethod
    def _check_scale(scale: Any, upscale: Any) -> int | None:
        if scale is None:
            return upscale
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if upscale is not None and scale != upscale:
            raise ValueError(f"scale {scale} but the network upscales by {upscale}")
        return scale

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *,
        overrides: Iterable[str] = (), **kwargs: Any,
    ) -> Upscaler:
        """Build ``network_g`` of a test/train YAML and load ``weights`` or ``path.pretrain_network_g``.

        The YAML is validated as every entry point validates it (:func:`lkdn.options.load_options`;
        ``overrides`` are ``--force_yml`` entries) and the weights load as everywhere
        (:func:`lkdn.loading.load_network_from_options`). Other keyword arguments are those of
        :class:`Upscaler`.
        """
        opt = load_options(path, overrides=overrides)
        net = load_network_from_options(opt, weights=weights)
        kwargs.setdefault("scale", opt.scale)
        return cls(net, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **kwargs: Any) -> Upscaler:
        """Rebuild the network from a self-describing ``.safetensors`` file (no YAML needed).

        The file's metadata must hold ``lkdn_format``, ``network_g`` (the options as JSON) and
        ``scale``, as written by ``scripts/reparameterize.py``, ``scripts/convert_checkpoint.py``
        and training; it is checked against the tensors before anything is built. Other keyword
        arguments are those of :class:`Upscaler`.
        """
        metadata = read_metadata(path)
        if "network_g" not in metadata:
            raise CheckpointError(
                f"{path}: no lkdn metadata (lkdn_format, network_g, scale): only .safetensors files written by "
                "scripts/convert_checkpoint.py, scripts/reparameterize.py or training describe their network; "
                "for other checkpoints use Upscaler.from_config(<yml>, weights=...)"
            )
        net = network_from_file(path)
        kwargs.setdefault("scale", metadata.get("scale"))
        return cls(net, **kwargs)

    # --- inference ---------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.network(x)
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return self.network(x)

    def __call__(
        self, lr: torch.Tensor, *, tile: int | None = None, tile_pad: int | None = None,
        self_ensemble: bool | None = None,
    ) -> torch.Tensor:
        """Super-resolve ``lr`` (N,C,H,W float in [0, 1], any device) into float32 in [0, 1] on this device.

        ``tile``, ``tile_pad`` and ``self_ensemble`` override the defaults given at construction.
        """
        if not isinstance(lr, torch.Tensor) or lr.ndim != 4 or not lr.is_floating_point():
            shape = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
            raise ValueError(f"expected a float tensor of shape N,C,H,W with values in [0, 1], got {shape}")
        tile = self.tile if tile is None else tile
        tile_pad = self.tile_pad if tile_pad is None else tile_pad
        self_ensemble = self.self_ensemble if self_ensemble is None else self_ensemble
        lr = lr.to(self.device, torch.float32)
        with torch.inference_mode():
            out = run_network(self._forward, lr, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble,
                              scale=self.scale)
        # clamp outside inference mode: the caller gets an ordinary tensor it may modify in place
        return out.float().clamp(0, 1).contiguous()

    def upscale_image(
        self, image: np.ndarray, *, bgr: bool = True, alpha: str = "bicubic", tile: int | None = None,
        tile_pad: int | None = None, self_ensemble: bool | None = None,
    ) -> np.ndarray:
        """Super-resolve a numpy image (uint8/uint16/float, grey/colour, with or without alpha).

        The result has the input's dtype, channels and channel order (``bgr=True``: OpenCV's).
        ``tile``, ``tile_pad`` and ``self_ensemble`` are as in :meth:`__call__`.
        """

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self(x, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble)

        return upscale_image(forward, image, device=self.device, bgr=bgr, alpha=alpha)

    def __repr__(self) -> str:
        name = type(getattr(self.network, "_orig_mod", self.network)).__name__
        return (
            f"Upscaler({name}, scale={self.scale}, device={self.device}, precision={self.precision}, "
            f"optimizations=[{', '.join(self.optimizations)}])"
        )
