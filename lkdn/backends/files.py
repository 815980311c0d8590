"""Exported files run as they are: ONNX (``.onnx``, onnxruntime), OpenVINO IR (``.xml`` + ``.bin``) and ncnn
(``.param`` + ``.bin``), without the PyTorch checkpoint they came from.

:class:`ExportedModel` takes the call of :class:`lkdn.Upscaler` (tiles, self-ensemble,
:meth:`~ExportedModel.upscale_image`), output clamped to [0, 1]. Its scale is measured on a
small input and checked against the one the file records (``scale`` in the ONNX
``metadata_props`` or the IR's ``rt_info['lkdn']``, written by our exporters) and the one asked
for; any disagreement is a :class:`BackendError` naming the file and both values. ncnn files
record no scale: the measured one counts. The tile context is the architecture's receptive
radius when the file records its ``network_g`` (exact tiles, as with the checkpoint), else
:data:`lkdn.images.APPROXIMATE_TILE_PAD`. Files exported for one fixed input size
(``--static``) are refused: they cannot run other image sizes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lkdn.archs.build import build_network
from lkdn.backends.base import BackendError, Runtime, require
from lkdn.images import APPROXIMATE_TILE_PAD, run_network, tile_context, upscale_image

logger = logging.getLogger(__name__)

SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".param": "ncnn"}
"""The exported files that run directly, and the backend of each."""
PROBE_SIZE = 32
"""Side in LR pixels of the input the scale is measured on (ESA-based networks need at least 15)."""


def backend_of(path: str | os.PathLike[str]) -> str:
    """The backend that runs ``path``, by its suffix; a ValueError names the file and the suffixes known."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(f"{s} ({b})" for s, b in SUFFIXES.items())
        raise ValueError(f"{path}: not an exported model file; expected {known}")
    return SUFFIXES[suffix]


def _onnx_facts(path: Path) -> tuple[dict[str, str], str, list[Any]]:
    """The ``metadata_props``, the precision (by the input's element type) and the input shape of an ONNX file."""
    onnx = require("onnx", needed_for="running an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        tensor_type = model.graph.input[0].type.tensor_type
    except Exception as err:  # onnx raises DecodeError and others for a file that is not a model
        raise BackendError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    precision = "fp16" if tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "fp32"
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return {p.key: p.value for p in model.metadata_props}, precision, dims


def load_exported(path: str | os.PathLike[str], *, precision: str | None = None,
                  threads: int | None = None) -> tuple[Runtime, dict[str, str], list[Any]]:
    """The runtime of an exported file, the metadata it records and its input shape (``None`` per dynamic axis).

    ``precision``: default from the file (an ONNX float16 graph is ``fp16``, an IR records its
    own); ncnn files are run as ``fp32`` unless told.
    """
    path = Path(path)
    backend = backend_of(path)
    if not path.is_file():
        raise BackendError(f"exported model {path} not found")
    if backend == "onnxruntime":
        from lkdn.backends.onnxruntime_backend import OnnxRuntimeBackend  # lazy: optional runtime

        metadata, graph_precision, dims = _onnx_facts(path)
        return OnnxRuntimeBackend(path, precision=precision or graph_precision, threads=threads), metadata, dims
    if backend == "openvino":
        from lkdn.backends.openvino_backend import OpenVINOBackend  # lazy: the backend's runtime is an optional extra

        runtime = OpenVINOBackend(path, precision=precision or "fp32", threads=threads)
        metadata = runtime.metadata()
        if precision is None and metadata.get("precision") == "int8":
            runtime.precision = "int8"  # int8 runs with the fp32 hint: only the description changes
        shape = runtime.model.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        return runtime, metadata, dims
    from lkdn.backends.ncnn_backend import NcnnBackend  # lazy: the backend's runtime is an optional extra

    return NcnnBackend(path, precision=precision or "fp32", threads=threads), {}, [None, 3, None, None]


def _recorded_scale(path: Path, metadata: dict[str, str]) -> int | None:
    value = metadata.get("scale")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BackendError(f"{path}: its recorded scale {value!r} is not an integer") from None


def _tile_pad(metadata: dict[str, str]) -> tuple[int, bool]:
    """The tile context from the recorded ``network_g`` (exact), else the approximate default."""
    if "network_g" in metadata:
        try:
            context = tile_context(build_network(json.loads(metadata["network_g"])))
            return context.pad, context.exact
        except Exception as err:  # an unknown or newer architecture: tiles stay approximate
            logger.info("the recorded network_g gives no receptive radius (%s)", err)
    return APPROXIMATE_TILE_PAD, False


class ExportedModel:
    """An exported file behind :class:`lkdn.Upscaler`'s call, on the CPU.

    Args:
        path: ``.onnx``, ``.xml`` (its ``.bin`` beside it) or ``.param`` (its ``.bin`` beside it).
        scale: the expected upscaling factor (default: the file's); a mismatch is a :class:`BackendError`.
        precision: the runtime's precision (default: the file's; see :func:`load_exported`).
        threads: the runtime's CPU threads (default: torch's thread count).
        tile, tile_pad, self_ensemble: defaults of :meth:`__call__`, as for :class:`lkdn.Upscaler`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, scale: int | None = None, precision: str | None = None,
        threads: int | None = None, tile: int | None = None, tile_pad: int | None = None,
        self_ensemble: bool = False,
    ) -> None:
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.path = Path(path)
        self.device = torch.device("cpu")
        self.runtime, self.metadata, dims = load_exported(self.path, precision=precision, threads=threads)
        if len(dims) != 4:
            raise BackendError(f"{self.path}: its input has {len(dims)} axes, not N,C,H,W")
        if dims[2] is not None or dims[3] is not None:
            raise BackendError(
                f"{self.path}: exported for one input size ({'x'.join(str(d) for d in dims)}), so it cannot run "
                "images of other sizes; export it again with --dynamic"
            )
        self.channels = dims[1] or 3
        measured = self._measure_scale()
        recorded = _recorded_scale(self.path, self.metadata)
        if recorded is not None and recorded != measured:
            raise BackendError(f"{self.path}: records scale {recorded} but upscales by {measured}")
        if scale is not None and scale != measured:
            raise BackendError(f"scale {scale} was asked for, but {self.path} upscales by {measured}")
        self.scale = measured
        pad, exact = _tile_pad(self.metadata)
        self.tile, self.self_ensemble = tile, self_ensemble
        self.tile_pad = pad if tile_pad is None else tile_pad
        if tile and not exact and tile_pad is None:
            logger.warning("%s records no network_g: tiles get %d pixels of context and may differ slightly at "
                           "their seams", self.path, self.tile_pad)
        logger.info("%s: x%d, %s", self.path, self.scale, self.runtime.describe())

    def _measure_scale(self) -> int:
        x = torch.rand(1, self.channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
        try:
            out = self.runtime.raw(x)
        except BackendError:
            raise
        except Exception as err:  # the runtimes raise their own exception types
            raise BackendError(f"{self.path} fails on a {PROBE_SIZE}x{PROBE_SIZE} input: {err}") from err
        height, width = out.shape[-2:]
        if out.ndim != 4 or height % PROBE_SIZE or width % PROBE_SIZE or height != width:
            raise BackendError(f"{self.path}: output {tuple(out.shape)} for input {tuple(x.shape)} is not an "
                               "integer upscaling of both sides")
        return height // PROBE_SIZE

    @property
    def backend(self) -> str:
        return self.runtime.backend

    def __call__(
        self, lr: torch.Tensor, *, tile: int | None = None, tile_pad: int | None = None,
        self_ensemble: bool | None = None,
    ) -> torch.Tensor:
        """Super-resolve ``lr`` (N,C,H,W float in [0, 1]) into float32 in [0, 1] on the CPU."""
        if not isinstance(lr, torch.Tensor) or lr.ndim != 4 or not lr.is_floating_point():
            shape = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
            raise ValueError(f"expected a float tensor of shape N,C,H,W with values in [0, 1], got {shape}")
        tile = self.tile if tile is None else tile
        tile_pad = self.tile_pad if tile_pad is None else tile_pad
        self_ensemble = self.self_ensemble if self_ensemble is None else self_ensemble
        out = run_network(self.runtime.raw, lr.to("cpu", torch.float32), tile=tile, tile_pad=tile_pad,
                          self_ensemble=self_ensemble, scale=self.scale)
        return out.float().clamp(0, 1).contiguous()

    def upscale_image(
        self, image: np.ndarray, *, bgr: bool = True, alpha: str = "bicubic", tile: int | None = None,
        tile_pad: int | None = None, self_ensemble: bool | None = None,
    ) -> np.ndarray:
        """Super-resolve a numpy image, as :meth:`lkdn.Upscaler.upscale_image`."""
        def forward(x: torch.Tensor) -> torch.Tensor:
            return self(x, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble)

        return upscale_image(forward, image, device=self.device, bgr=bgr, alpha=alpha)

    def __repr__(self) -> str:
        return f"ExportedModel({self.path}, scale={self.scale}, backend={self.runtime.describe()})"
