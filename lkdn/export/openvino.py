"""OpenVINO IR export (``.xml`` + ``.bin``), verified with OpenVINO before written (:mod:`lkdn.export.verify`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lkdn.backends import calibration_images, verification_inputs
from lkdn.deploy import deploy_network, input_channels, onnx_graph
from lkdn.export.verify import FileExportReport, finish, float32_reference, image_inputs, refuse_shared_weights


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
    net = float32_reference(net)
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
        report = finish(runtime, net, files, precision=precision, inputs=inputs, scale=scale,
                        what=f"OpenVINO {precision} IR")
    if precision == "bf16":
        report.notes.append("bf16 is the inference precision hint (weights are float32 in the .bin): "
                            "compile with {'INFERENCE_PRECISION_HINT': 'bf16'}, as lkdn.backends.openvino_backend does")
    elif precision == "fp32":
        report.notes.append("to run it in float32 with plain OpenVINO, compile with {'INFERENCE_PRECISION_HINT': 'f32'}: "
                            "the CPU plugin's default is bf16 on CPUs with bfloat16 support")
    return report
