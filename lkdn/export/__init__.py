"""Export a network to files other runtimes load, each verified with that runtime before it is written.

* ONNX (:mod:`lkdn.export.onnx`): :func:`export_onnx`, checked with onnxruntime;
* OpenVINO IR (:mod:`lkdn.export.openvino`): :func:`export_openvino`, checked with OpenVINO;
* ncnn (:mod:`lkdn.export.ncnn`): :func:`export_ncnn`, converted by pnnx, checked with ncnn;
* what they share: the deploy network and its graphs (:mod:`lkdn.export.graphs`: :func:`deploy_network`,
  :func:`half_network`, :func:`onnx_graph`, :func:`torchscript_graph`, :func:`export_metadata`), and
  for OpenVINO and ncnn the verification, Set5 score and atomic writes (:mod:`lkdn.export.verify`).

Every public name is importable from ``lkdn.export``. The OpenVINO and ncnn names are loaded on
first use: their modules import :mod:`lkdn.backends`, which itself imports
:mod:`lkdn.export.graphs`, so this package cannot import them while it is being imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lkdn.export.graphs import (
    DEFAULT_OPSET,
    EXPORTER,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    deploy_network,
    export_metadata,
    half_network,
    image_tensor,
    input_channels,
    onnx_graph,
    torchscript_graph,
)
from lkdn.export.onnx import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    NOISE_TOLERANCE,
    ExportCheck,
    ExportReport,
    OnnxRuntimeNetwork,
    export_onnx,
    onnx_metadata,
    onnx_session,
)

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ loads them
    from lkdn.export.ncnn import export_ncnn
    from lkdn.export.openvino import export_openvino
    from lkdn.export.verify import FileExportReport, Set5Score

_ON_FIRST_USE = {
    "export_openvino": "lkdn.export.openvino",
    "export_ncnn": "lkdn.export.ncnn",
    "FileExportReport": "lkdn.export.verify",
    "Set5Score": "lkdn.export.verify",
}


def __getattr__(name: str) -> Any:
    """The OpenVINO and ncnn names, imported on first use (see the module docstring)."""
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the ones loaded on first use included."""
    return sorted(__all__)


__all__ = [
    "DEFAULT_OPSET", "EXPORTER", "FP16_TOLERANCE", "FP32_TOLERANCE", "INPUT_NAME", "NOISE_TOLERANCE", "OUTPUT_NAME",
    "ExportCheck", "ExportError", "ExportReport", "FileExportReport", "OnnxRuntimeNetwork", "Set5Score",
    "deploy_network", "export_metadata", "export_ncnn", "export_onnx", "export_openvino", "half_network",
    "image_tensor", "input_channels", "onnx_graph", "onnx_metadata", "onnx_session", "torchscript_graph",
]
