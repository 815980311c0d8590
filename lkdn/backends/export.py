"""Deployment files for OpenVINO (IR ``.xml`` + ``.bin``) and ncnn (``.param`` + ``.bin``), verified before written.

Both start from our export of the deploy network (OpenVINO: :func:`lkdn.export.onnx_graph`;
ncnn: :func:`lkdn.export.torchscript_graph`, converted by pnnx), write
the runtime's files into a temporary folder, **load those files with the runtime itself**, and
compare its output with the float32 PyTorch network on a random batch at odd sizes and on the
check images (tolerances: :data:`lkdn.backends.base.TOLERANCES`). When Set5 is found at the
network's scale (:func:`lkdn.zoo.find_benchmark`), the precision loss is also measured as Set5
PSNR/SSIM (Y channel, crop = scale) through the runtime against PyTorch. Only when every check
passes are the files written, each atomically (:func:`lkdn.utils.files.write_atomic`), weights
first, so a graph file never points at missing weights; otherwise :class:`BackendError` and
nothing is written. Both formats keep their weights in ``<name>.bin``, so an export whose ``.bin``
belongs to the other format's graph beside it (``x.xml`` and ``x.param``) is refused.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lkdn.backends import calibration_images, verification_inputs
from lkdn.backends.base import TOLERANCES, BackendError, Check, Runtime, Tolerance, check_inputs, require, verify
from lkdn.evaluate import evaluate_folder
from lkdn.export import deploy_network, image_tensor, input_channels, onnx_graph, torchscript_graph
from lkdn.utils.files import write_atomic
from lkdn.zoo import find_benchmark

logger = logging.getLogger(__name__)


@dataclass
class Set5Score:
    """Set5 means through the runtime and through PyTorch float32, and the largest per-image PSNR gap."""

    psnr: float
    ssim: float
    reference_psnr: float
    reference_ssim: float
    largest_gap: float

    def describe(self) -> str:
        return (
            f"Set5 PSNR/SSIM (Y) {self.psnr:.4f}/{self.ssim:.4f} against PyTorch float32 "
            f"{self.reference_psnr:.4f}/{self.reference_ssim:.4f} ({self.psnr - self.reference_psnr:+.4f} dB; "
            f"largest per-image gap {self.largest_gap:.4f} dB)"
        )


@dataclass
class FileExportReport:
    """What :func:`export_openvino` or :func:`export_ncnn` wrote and how it was verified."""

    files: list[Path]
    runtime: str
    precision: str
    tolerance: Tolerance
    checks: list[Check] = field(default_factory=list)
    set5: Set5Score | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for logs and scripts."""
        lines = [f"wrote {', '.join(str(p) for p in self.files)} ({self.runtime}, {self.precision})"]
        lines += [f"  {c.describe()} (tolerance {self.tolerance.describe()})" for c in self.checks]
        lines.append(f"  {self.set5.describe()}" if self.set5 else "  Set5 not found: no PSNR check")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def image_inputs(images: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, torch.Tensor]]:
    """``(name, uint8 BGR image)`` pairs as ``(name, 1x3xHxW RGB tensor in [0, 1])``."""
    return [(name, image_tensor(image)) for name, image in images]


def set5_score(runtime: Runtime, reference: nn.Module, scale: int) -> Set5Score | None:
    """Set5 PSNR/SSIM through ``runtime`` and ``reference`` (None when Set5 at ``scale`` is not found)."""
    found = find_benchmark("Set5", scale)
    if found is None:
        return None
    hr, lr = found
    with torch.no_grad():
        ours = evaluate_folder(reference, hr, lr, scale=scale)
        got = evaluate_folder(runtime, hr, lr, scale=scale)
    return Set5Score(
        psnr=float(np.mean([m["psnr"] for m in got.values()])), ssim=float(np.mean([m["ssim"] for m in got.values()])),
        reference_psnr=float(np.mean([m["psnr"] for m in ours.values()])),
        reference_ssim=float(np.mean([m["ssim"] for m in ours.values()])),
        largest_gap=max(abs(got[k]["psnr"] - ours[k]["psnr"]) for k in ours),
    )


def _finish(
    runtime: Runtime, net: nn.Module, files: Mapping[Path, Path], *, precision: str, inputs: list[tuple[str, torch.Tensor]],
    scale: int | None, what: str,
) -> FileExportReport:
    """Verify the runtime that loaded the temporary files, score Set5, then move the files (weights first)."""
    tolerance = TOLERANCES[(runtime.backend, precision)]
    targets = ", ".join(str(t) for t in files.values())
    try:
        checks = verify(runtime.raw, net, inputs, tolerance, what=what)
    except BackendError as err:
        raise BackendError(f"refusing to write {targets}: {err}") from err
    report = FileExportReport(files=list(files.values()), runtime=runtime.describe(), precision=precision,
                              tolerance=tolerance, checks=checks)
    if scale is not None:
        report.set5 = set5_score(runtime, net, scale)
    for source, target in files.items():
        write_atomic(target, source.read_bytes())
        logger.info("wrote %s (%d bytes)", target, target.stat().st_size)
    return report


def refuse_shared_weights(path: Path, other_suffix: str, other_format: str) -> None:
    """A :class:`BackendError` when the ``.bin`` of ``path`` also belongs to the ``other_format`` graph beside it.

    An OpenVINO IR ``x.xml`` and an ncnn graph ``x.param`` both keep their weights in ``x.bin``:
    writing one would silently break the other.
    """
    sibling = path.with_suffix(other_suffix)
    if sibling.exists():
        raise BackendError(
            f"{path.with_suffix('.bin')} is the weights file of the {other_format} {sibling}: writing {path} "
            "would replace it; choose another output name (or remove both files first)"
        )


def _reference(net: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode (the caller's network keeps its device, dtype and mode)."""
    return copy.deepcopy(net).float().cpu().eval()


def export_openvino(
    net: nn.Module, path: str | os.PathLike[str], *, precision: str = "fp32",
    calibration: str | os.PathLike[str] | Sequence[torch.Tensor] = (), check_images: Sequence[tuple[str, np.ndarray]] = (),
    metadata: Mapping[str, str] | None = None, scale: int | None = None, threads: int | None = None,
) -> FileExportReport:
    """Write an OpenVINO IR (``path`` ``.xml`` and its ``.bin``) of ``net``'s deploy form, verified first.

    Args:
        net: the network (training or deploy form; not modified, float32).
        path: the ``.xml`` to write; the weights go to the same name with ``.bin``.
        precision: ``fp32``, ``bf16`` (float32 weights; ``precision: bf16`` recorded in ``rt_info``:
            the inference precision hint our loader applies) or ``int8`` (NNCF post-training
            quantization on ``calibration``).
        calibration: int8: a folder of LR images, or image tensors.
        check_images: ``(name, uint8 BGR image)`` pairs checked besides the random batch.
        metadata: ``rt_info['lkdn']`` entries (``network_g``, ``scale``: :func:`lkdn.export.export_metadata`).
        scale: the network's scale, for the Set5 check (``None``: no Set5 check).
        threads: OpenVINO's threads for the checks.

    Raises:
        BackendError: conversion failed or a check exceeded the tolerance; nothing was written.
    """
    from lkdn.backends.openvino_backend import (  # lazy: optional runtime
        OpenVINOBackend,
        _openvino,
        quantization_scope,
        quantize,
        save_ir,
    )

    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"{path}: an OpenVINO IR is an .xml file (its weights go beside it as .bin)")
    refuse_shared_weights(path, ".param", "ncnn graph")
    if precision not in OpenVINOBackend.precisions:
        raise ValueError(f"OpenVINO export precision must be one of {', '.join(OpenVINOBackend.precisions)}, got {precision!r}")
    ov = _openvino()
    net = _reference(net)
    model = ov.Core().read_model(onnx_graph(net))
    arrays = calibration_images(calibration) if precision == "int8" else []
    if precision == "int8":
        model = quantize(model, arrays, ignored=quantization_scope(deploy_network(net)))
    inputs = verification_inputs(input_channels(net), precision, arrays) + image_inputs(check_images)
    info = {"producer": "lkdn", "precision": precision, **(metadata or {})}
    with tempfile.TemporaryDirectory(prefix="lkdn-openvino-") as tmp:
        xml = Path(tmp) / "model.xml"
        save_ir(model, xml, metadata=info)
        runtime = OpenVINOBackend(xml, precision=precision, threads=threads)
        files = {xml.with_suffix(".bin"): path.with_suffix(".bin"), xml: path}
        report = _finish(runtime, net, files, precision=precision, inputs=inputs, scale=scale,
                         what=f"OpenVINO {precision} IR")
    if precision == "bf16":
        report.notes.append("bf16 is the inference precision hint (weights are float32 in the .bin): "
                            "compile with {'INFERENCE_PRECISION_HINT': 'bf16'}, as lkdn.backends.openvino_backend does")
    elif precision == "fp32":
        report.notes.append("to run it in float32 with plain OpenVINO, compile with {'INFERENCE_PRECISION_HINT': 'f32'}: "
                            "the CPU plugin's default is bf16 on CPUs with bfloat16 support")
    return report


def export_ncnn(
    net: nn.Module, path: str | os.PathLike[str], *, precision: str = "fp32",
    check_images: Sequence[tuple[str, np.ndarray]] = (), scale: int | None = None, threads: int | None = None,
) -> FileExportReport:
    """Write an ncnn graph (``path`` ``.param``) and weights (same name, ``.bin``) of ``net``'s deploy form, via pnnx.

    Args:
        net: the network (training or deploy form; not modified, float32).
        path: the ``.param`` to write; the weights go to the same name with ``.bin``.
        precision: ``fp32`` (float32 weights) or ``fp16`` (float16 weights).
        check_images: ``(name, uint8 BGR image)`` pairs checked besides the random batch.
        scale: the network's scale, for the Set5 check (``None``: no Set5 check).
        threads: ncnn's threads for the checks.

    Raises:
        BackendError: conversion failed or a check exceeded the tolerance; nothing was written.
    """
    from lkdn.backends.ncnn_backend import NcnnBackend, pnnx_convert  # lazy: the backend's runtime is an optional extra

    path = Path(path)
    if path.suffix != ".param":
        raise ValueError(f"{path}: an ncnn graph is a .param file (its weights go beside it as .bin)")
    refuse_shared_weights(path, ".xml", "OpenVINO IR")
    for module in ("ncnn", "pnnx"):
        require(module, needed_for="ncnn export")
    if precision not in NcnnBackend.precisions:
        raise ValueError(f"ncnn export precision must be one of {', '.join(NcnnBackend.precisions)}, got {precision!r}")
    net = _reference(net)
    channels = input_channels(net)
    inputs = check_inputs(channels) + image_inputs(check_images)
    graph = torchscript_graph(net)
    with tempfile.TemporaryDirectory(prefix="lkdn-ncnn-") as tmp:
        param, weights = pnnx_convert(graph, tmp, channels=channels, fp16=precision == "fp16")
        runtime = NcnnBackend(param, weights, precision=precision, threads=threads)
        files = {weights: path.with_suffix(".bin"), param: path}
        return _finish(runtime, net, files, precision=precision, inputs=inputs, scale=scale,
                       what=f"ncnn {precision} graph")
