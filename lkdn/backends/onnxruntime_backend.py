"""onnxruntime (CPU provider) on our ONNX export: float32, or the mixed-precision float16 graph.

The graph is :func:`lkdn.export.onnx_graph` (the deploy network; ``fp16`` keeps the
architecture's ``fp32_stages`` in float32, :func:`lkdn.export.half_network`). The session is
:func:`lkdn.export.onnx_session`: ``threads`` intra-op threads, one inter-op thread, onnxruntime's
default graph optimizations (all levels).
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from lkdn.backends.base import BackendError, Runtime, require
from lkdn.deploy import INPUT_NAME
from lkdn.export.onnx import onnx_session


class OnnxRuntimeBackend(Runtime):
    """An ONNX graph (bytes or a ``.onnx`` file) in an onnxruntime CPU session.

    Args:
        model: the serialized graph or the path of a ``.onnx`` file.
        precision: ``fp32``, or ``fp16`` for a graph exported with ``fp16=True`` (float16 input
            and output; the input is cast here).
        threads: intra-op threads (default: torch's thread count).
    """

    backend: ClassVar[str] = "onnxruntime"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def __init__(self, model: bytes | str | os.PathLike[str], *, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__(precision=precision, threads=threads)
        self.version = require("onnxruntime", needed_for="backend 'onnxruntime'").__version__
        where = "the exported graph" if isinstance(model, bytes) else str(model)
        try:
            self.session = onnx_session(model, threads=self.threads)
        except Exception as err:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {where}: {err}") from err
        graph_fp16 = "float16" in self.session.get_inputs()[0].type
        if graph_fp16 != (precision == "fp16"):
            raise BackendError(f"{where} is a {'float16' if graph_fp16 else 'float32'} graph, not {precision}")
        self.input_dtype = np.float16 if graph_fp16 else np.float32

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: x.astype(self.input_dtype, copy=False)})[0].astype(np.float32)

    def describe(self) -> str:
        return f"onnxruntime {self.version} CPU, {self.precision}, {self.threads} threads"
