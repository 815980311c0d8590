"""ONNX export, verified with onnxruntime against PyTorch before anything is written.

:func:`export_onnx` exports the deploy form (:func:`lkdn.deploy.onnx_graph`), runs the
exported bytes through onnxruntime (CPU provider) on a random batch and on the given images, and
compares with the *original* PyTorch network in float32. Only when every check is within
tolerance is the file written, atomically (temporary file in the same folder, fsync,
``os.replace``). ``fp16=True`` exports the mixed-precision graph of
:func:`lkdn.deploy.half_network`, compared with the float32 PyTorch network within
:data:`FP16_TOLERANCE`.

onnxruntime and onnx are optional dependencies (``pip install -e ".[onnx]"`` in the clone)
imported inside functions only, never by ``import lkdn``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lkdn.deploy import (
    DEFAULT_OPSET,
    EXPORTER,
    INPUT_NAME,
    ExportError,
    image_tensor,
    input_channels,
    onnx_graph,
)
from lkdn.utils import write_atomic

logger = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
"""Largest accepted |onnxruntime - PyTorch| for a float32 export (output in [0, 1] units)."""
FP16_TOLERANCE = 1e-2
"""Largest accepted |onnxruntime float16 - PyTorch float32| for a mixed-precision export."""
NOISE_TOLERANCE = 5e-4
"""float32 default on the uniform-noise check (the hardest input for rounding): networks that compute
at 255x the image scale (SPAN: ``(x - mean) * 255``) differ there by up to 1.6e-4 (SPAN c28, official
weights); on images every network stays within :data:`FP32_TOLERANCE`."""


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx  # optional extra: pip install -e ".[onnx]"
        import onnxruntime  # optional extra
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs onnx and onnxruntime ({err.name} is missing): pip install -e \".[onnx]\" in the clone"
        ) from err
    return onnx, onnxruntime


@dataclass(frozen=True)
class ExportCheck:
    """One comparison of onnxruntime with PyTorch."""

    name: str
    shape: tuple[int, ...]
    max_abs: float


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and verified."""

    path: Path
    opset: int
    dtype: str
    dynamic: bool
    tolerance: float
    onnxruntime_version: str
    exporter: str = EXPORTER
    checks: list[ExportCheck] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for logs and scripts."""
        lines = [
            f"wrote {self.path} (opset {self.opset}, {self.dtype}, {'dynamic' if self.dynamic else 'static'} shape, "
            f"{self.exporter}, onnxruntime {self.onnxruntime_version})"
        ]
        lines += [
            f"  {c.name} {c.shape}: max |onnxruntime - pytorch| = {c.max_abs:.2e} (tolerance {self.tolerance:.0e})"
            for c in self.checks
        ]
        return "\n".join(lines)


def onnx_session(model: bytes | str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads; default: torch's thread count)."""
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxRuntimeNetwork(nn.Module):
    """An onnxruntime session behind an ``nn.Module`` face, so :mod:`lkdn.evaluate` can run it.

    ``forward`` takes an N,3,H,W float tensor in [0, 1], casts it to the model's input type
    (float16 for a half-precision export) and returns a float32 tensor.
    """

    def __init__(self, model: bytes | str | os.PathLike[str], *, threads: int | None = None) -> None:
        super().__init__()
        self.session = onnx_session(model, threads=threads)
        self.input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(self.input_dtype)
        out = self.session.run(None, {INPUT_NAME: array})[0]
        return torch.from_numpy(out.astype(np.float32))


def _check_inputs(
    images: Sequence[tuple[str, np.ndarray]], *, dynamic: bool, size: tuple[int, int], channels: int
) -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    h, w = size
    if dynamic:  # another batch size and odd sizes than those traced
        inputs = [("random", torch.rand(2, channels, h + 5, w + 11, generator=generator))]
    else:
        inputs = [("random", torch.rand(1, channels, h, w, generator=generator))]
    for name, image in images:
        if not dynamic:  # fit the fixed size: crop (top left), or mirror the image where it is smaller
            pad = ((0, max(h - image.shape[0], 0)), (0, max(w - image.shape[1], 0)), (0, 0))
            image = np.pad(image, pad, mode="symmetric")[:h, :w]
        inputs.append((name, image_tensor(image)))
    return inputs


@torch.no_grad()
def export_onnx(
    net: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    fp16: bool = False,
    size: tuple[int, int] = (32, 32),
    check_images: Sequence[tuple[str, np.ndarray]] = (),
    tolerance: float | None = None,
    reference: nn.Module | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Export ``net`` to ONNX at ``path``, after checking onnxruntime reproduces PyTorch.

    Args:
        net: the network (training or deploy form); it is not modified.
        path: the ``.onnx`` file to write (only when every check passes).
        opset: ONNX opset version.
        dynamic: dynamic batch, height and width (else the shape is fixed to ``1x3x{size}``).
        fp16: export the mixed-precision graph of :func:`half_network` (float16 input/output).
        size: ``(height, width)`` of the traced input (the fixed input size when static).
        check_images: ``(name, uint8 BGR image)`` pairs run through both; with a static
            shape they are cropped to ``size`` (top left), or mirrored where smaller.
        tolerance: largest accepted max |onnxruntime - PyTorch|; default
            :data:`FP32_TOLERANCE` (:data:`NOISE_TOLERANCE` on the random batch) or :data:`FP16_TOLERANCE`.
        reference: the float32 network whose output must be reproduced (default ``net``).
        metadata: extra ``metadata_props`` stored in the ONNX file.

    Raises:
        ExportError: export failed or a check exceeded the tolerance; nothing was written and
            an existing file at ``path`` is untouched.
    """
    _, ort = _require_onnx()
    path = Path(path)
    noise_tolerance = NOISE_TOLERANCE if tolerance is None and not fp16 else None
    tolerance = (FP16_TOLERANCE if fp16 else FP32_TOLERANCE) if tolerance is None else tolerance
    reference = net if reference is None else reference
    dtype = torch.float16 if fp16 else torch.float32
    data = onnx_graph(net, opset=opset, dynamic=dynamic, fp16=fp16, size=size, metadata=metadata)
    channels = input_channels(net)
    report = ExportReport(
        path=path, opset=opset, dtype=str(dtype).removeprefix("torch."), dynamic=dynamic, tolerance=tolerance,
        onnxruntime_version=ort.__version__,
    )
    inputs = _check_inputs(check_images, dynamic=dynamic, size=size, channels=channels)
    report.checks = _compare(data, reference, inputs)
    def limit(check: ExportCheck) -> float:
        return noise_tolerance if check.name == "random" and noise_tolerance is not None else tolerance

    failures = [
        f"{c.name} {c.shape}: max abs difference {c.max_abs:.3e} > tolerance {limit(c):.1e}"
        for c in report.checks
        if not c.max_abs <= limit(c)
    ]
    if failures:
        raise ExportError(f"refusing to write {path}: onnxruntime does not reproduce PyTorch:\n  " + "\n  ".join(failures))
    write_atomic(path, data)
    logger.info("wrote %s (%d bytes)", path, len(data))
    return report


def _compare(data: bytes, reference: nn.Module, inputs: list[tuple[str, torch.Tensor]]) -> list[ExportCheck]:
    """Run ``data`` with onnxruntime and ``reference`` (float32, eval mode) on ``inputs``; max abs differences."""
    try:
        runtime = OnnxRuntimeNetwork(data)
    except Exception as err:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load the exported graph: {err}") from err
    was_training = reference.training
    reference.eval()
    checks = []
    try:
        for name, x in inputs:
            expected = reference(x.float())
            try:
                got = runtime(x)
            except Exception as err:  # reported with the input that failed
                raise ExportError(f"onnxruntime failed on {name} {tuple(x.shape)}: {err}") from err
            if got.shape != expected.shape:
                raise ExportError(f"{name}: onnxruntime output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
            max_abs = float((got - expected).abs().max())
            max_abs = max_abs if np.isfinite(max_abs) else float("inf")
            checks.append(ExportCheck(name=name, shape=tuple(x.shape), max_abs=max_abs))
            logger.info("check %s %s: max |onnxruntime - pytorch| = %.3e", name, tuple(x.shape), max_abs)
    finally:
        reference.train(was_training)
    return checks


def onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``network_g`` and ``scale`` for our exports)."""
    onnx, _ = _require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
