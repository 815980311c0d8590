"""Inference runtimes behind ``lkdn.Upscaler(backend=...)``: onnxruntime, OpenVINO and ncnn beside PyTorch.

Every non-torch backend runs the folded deploy network exported by our own exporter
(:mod:`lkdn.export`): onnxruntime runs the ONNX graph (:func:`lkdn.export.onnx_graph`), OpenVINO
reads it with its ONNX front end, ncnn gets the TorchScript trace of the same deploy network
(:func:`lkdn.export.torchscript_graph`) converted by pnnx (which cannot convert ESA's resize
from ONNX). :func:`convert` builds one and verifies it
against the float32 PyTorch network (:func:`lkdn.backends.base.verify`, tolerances in
:data:`lkdn.backends.base.TOLERANCES`) before returning it; a runtime that does not reproduce
PyTorch is refused with :class:`BackendError`. Files already exported (``.onnx``, an OpenVINO
``.xml``, an ncnn ``.param``) run as they are through :class:`lkdn.backends.files.ExportedModel`.

The runtimes are optional (extras of setup.py): ``pip install -e ".[onnx]"`` (onnxruntime; onnx
is needed by onnxruntime and OpenVINO, for the export), ``".[openvino]"`` (openvino, nncf) and
``".[ncnn]"`` (ncnn, pnnx). A missing one raises :class:`MissingExtraError`, one line naming the command.
Nothing here is imported by ``import lkdn`` until a backend is asked for.

Precisions per backend (:data:`BACKEND_PRECISIONS`): torch ``fp32``/``bf16``/``fp16`` (autocast),
onnxruntime ``fp32``/``fp16`` (mixed-precision graph), OpenVINO ``fp32``/``bf16`` (inference
precision hints) and ``int8`` (NNCF, needs calibration images), ncnn ``fp32``/``fp16``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lkdn.backends.base import (
    PRECISIONS,
    TOLERANCES,
    BackendError,
    Check,
    MissingExtraError,
    Runtime,
    Tolerance,
    check_inputs,
    install_command,
    require,
    verify,
)
from lkdn.deploy import deploy_network, image_tensor, input_channels, onnx_graph, torchscript_graph
from lkdn.images import IMAGE_SUFFIXES, read_image

__all__ = [
    "BACKENDS", "BACKEND_PRECISIONS", "PRECISIONS", "TOLERANCES", "BackendError", "Check", "MissingExtraError",
    "Runtime", "Tolerance", "calibration_images", "convert", "installed", "install_command",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "ncnn")
"""The backends of ``Upscaler(backend=...)``, besides ``auto``."""
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "fp16"),
    "openvino": ("fp32", "bf16", "int8"),
    "ncnn": ("fp32", "fp16"),
}
MODULES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"), "ncnn": ("ncnn", "pnnx")}
"""What each non-torch backend imports (onnx: our ONNX exporter; ncnn starts from a TorchScript trace)."""
CALIBRATION_SIZE = 256
"""Calibration images larger than this (LR pixels per side) are centre-cropped to it."""


def installed(backend: str) -> bool:
    """Whether the packages of ``backend`` import here."""
    try:
        for module in MODULES.get(backend, ()):
            require(module, needed_for=f"backend {backend!r}")
    except MissingExtraError:
        return False
    return True


def check_backend(backend: str, precision: str) -> None:
    """A ValueError naming the valid choices for an unknown backend or an unsupported precision."""
    if backend not in BACKEND_PRECISIONS:
        raise ValueError(f"backend must be one of {', '.join((*BACKENDS, 'auto'))}, got {backend!r}")
    if precision not in BACKEND_PRECISIONS[backend]:
        raise ValueError(
            f"backend {backend!r} supports precision {', '.join(BACKEND_PRECISIONS[backend])}, not {precision!r}"
        )


def calibration_images(source: str | os.PathLike[str] | Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Calibration inputs for int8: a folder of LR images (read as RGB in [0, 1]) or tensors, as 1,C,H,W arrays.

    Images larger than :data:`CALIBRATION_SIZE` per side are centre-cropped (statistics need
    content, not size). A ValueError names a folder without images.
    """
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"calibration folder {folder} not found")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        tensors = [image_tensor(read_image(p)) for p in files]
    else:
        tensors = [t if t.ndim == 4 else t[None] for t in source]
    arrays = []
    for t in tensors:
        h, w = t.shape[-2:]
        top, left = max(h - CALIBRATION_SIZE, 0) // 2, max(w - CALIBRATION_SIZE, 0) // 2
        crop = t[..., top:top + CALIBRATION_SIZE, left:left + CALIBRATION_SIZE]
        arrays.append(np.ascontiguousarray(crop.detach().to("cpu", torch.float32).numpy()))
    return arrays


def verification_inputs(
    channels: int, precision: str, calibration: Sequence[np.ndarray] = (),
) -> list[tuple[str, torch.Tensor]]:
    """What a conversion is checked on: noise and a photograph; for int8 the photograph and two calibration crops."""
    if precision != "int8":
        return check_inputs(channels)
    # int8 ranges come from the calibration images: check on images at odd sizes, not on noise
    crops = [(f"calibration image {i}", torch.from_numpy(a[..., :45, :51].copy())) for i, a in enumerate(calibration[:2])]
    return check_inputs(channels, noise=False) + crops


def convert(
    net: nn.Module, backend: str, *, precision: str = "fp32", threads: int | None = None,
    calibration: str | os.PathLike[str] | Sequence[torch.Tensor] = (), graph: bytes | None = None,
    strict: bool = True,
) -> Runtime:
    """Run ``net`` (training or deploy form; not modified) in ``backend``, verified against PyTorch float32.

    Args:
        net: the network.
        backend: ``onnxruntime``, ``openvino`` or ``ncnn``.
        precision: one of :data:`BACKEND_PRECISIONS` of the backend.
        threads: the runtime's CPU threads (default: torch's thread count).
        calibration: int8 only: a folder of LR images or image tensors (:func:`calibration_images`).
        graph: the float32 ONNX graph of ``net`` when already exported (:func:`lkdn.export.onnx_graph`),
            to convert one network for several backends (not used by ncnn, which starts from TorchScript).
        strict: refuse a runtime beyond its tolerance (default). ``False`` keeps it with a warning,
            for measuring what would be refused; ``lkdn.Upscaler`` is always strict.

    Raises:
        MissingExtraError: the backend's packages are not installed.
        BackendError: conversion failed or the output is not within :data:`TOLERANCES`.
    """
    if backend == "torch":
        raise ValueError("convert() builds the non-torch backends; the torch backend is lkdn.Upscaler itself")
    check_backend(backend, precision)
    for module in MODULES[backend]:
        require(module, needed_for=f"backend {backend!r}")
    first = next(net.parameters())
    plain = first.device.type == "cpu" and first.dtype == torch.float32
    reference = net if plain else copy.deepcopy(net).float().cpu()  # the caller's network is not modified
    channels = input_channels(reference)
    fp16_graph = backend == "onnxruntime" and precision == "fp16"
    try:
        if backend == "ncnn":
            graph = torchscript_graph(reference)  # what pnnx converts best (see lkdn.backends.ncnn_backend)
        elif graph is None or fp16_graph:
            graph = onnx_graph(reference, fp16=fp16_graph)
    except Exception as err:  # ExportError and the exporter's own types
        raise BackendError(f"backend {backend!r}: exporting {type(net).__name__} failed: {err}") from err
    arrays = calibration_images(calibration) if precision == "int8" else []
    if backend == "onnxruntime":
        from lkdn.backends.onnxruntime_backend import OnnxRuntimeBackend  # lazy: optional runtime

        runtime: Runtime = OnnxRuntimeBackend(graph, precision=precision, threads=threads)
    elif backend == "openvino":
        from lkdn.backends.openvino_backend import OpenVINOBackend  # lazy: the backend's runtime is an optional extra

        runtime = OpenVINOBackend.from_onnx(graph, precision=precision, threads=threads,
                                            net=_deploy(reference), calibration=arrays)
    else:
        from lkdn.backends.ncnn_backend import NcnnBackend  # lazy: the backend's runtime is an optional extra

        runtime = NcnnBackend.from_torchscript(graph, channels=channels, precision=precision, threads=threads)
    tolerance = TOLERANCES[(backend, precision)]
    runtime.checks = verify(runtime.raw, reference, verification_inputs(channels, precision, arrays), tolerance,
                            what=f"backend {backend!r} ({precision})", strict=strict)
    logger.info("%s: verified against PyTorch float32 (%s)", runtime.describe(),
                "; ".join(c.describe() for c in runtime.checks))
    return runtime


def _deploy(net: nn.Module) -> nn.Module:
    return deploy_network(net)
