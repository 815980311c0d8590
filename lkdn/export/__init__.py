"""Export a network to files other runtimes load, each verified with that runtime before it is written.

* ONNX (:mod:`lkdn.export.onnx`): :func:`export_onnx`, checked with onnxruntime;
* OpenVINO IR (:mod:`lkdn.export.openvino`): :func:`export_openvino`, checked with OpenVINO;
* ncnn (:mod:`lkdn.export.ncnn`): :func:`export_ncnn`, converted by pnnx, checked with ncnn;
* what they share: the deploy network and its graphs (:mod:`lkdn.deploy`, which the runtimes of
  :mod:`lkdn.backends` use too: :func:`deploy_network`, :func:`half_network`, :func:`onnx_graph`,
  :func:`torchscript_graph`, :func:`export_metadata`), and for OpenVINO and ncnn the verification,
  Set5 score and atomic writes (:mod:`lkdn.export.verify`).

Every public name is importable from ``lkdn.export``; the runtimes themselves (onnxruntime, OpenVINO,
pnnx and ncnn) are optional extras, imported when an export runs.
"""

from __future__ import annotations

from lkdn.deploy import (
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
from lkdn.export.ncnn import export_ncnn
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
from lkdn.export.openvino import export_openvino
from lkdn.export.verify import FileExportReport, Set5Score

__all__ = [
    "DEFAULT_OPSET", "EXPORTER", "FP16_TOLERANCE", "FP32_TOLERANCE", "INPUT_NAME", "NOISE_TOLERANCE", "OUTPUT_NAME",
    "ExportCheck", "ExportError", "ExportReport", "FileExportReport", "OnnxRuntimeNetwork", "Set5Score",
    "deploy_network", "export_metadata", "export_ncnn", "export_onnx", "export_openvino", "half_network",
    "image_tensor", "input_channels", "onnx_graph", "onnx_metadata", "onnx_session", "torchscript_graph",
]
