"""ncnn export (``.param`` + ``.bin``, converted by pnnx), verified with ncnn before written (:mod:`lkdn.export.verify`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from lkdn.backends.base import check_inputs, require
from lkdn.deploy import input_channels, torchscript_graph
from lkdn.export.verify import FileExportReport, finish, float32_reference, image_inputs, refuse_shared_weights


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
    net = float32_reference(net)
    channels = input_channels(net)
    inputs = check_inputs(channels) + image_inputs(check_images)
    graph = torchscript_graph(net)
    with tempfile.TemporaryDirectory(prefix="lkdn-ncnn-") as tmp:
        param, weights = pnnx_convert(graph, tmp, channels=channels, fp16=precision == "fp16")
        runtime = NcnnBackend(param, weights, precision=precision, threads=threads)
        files = {weights: path.with_suffix(".bin"), param: path}
        return finish(runtime, net, files, precision=precision, inputs=inputs, scale=scale,
                      what=f"ncnn {precision} graph")
