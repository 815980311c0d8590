"""The deploy network and its graphs, shared by every export and runtime.

:func:`deploy_network` folds a network into its deploy form (re-parameterizable branches and
LKDN's input replication, :func:`lkdn.reparam.reparameterize_model`); :func:`onnx_graph` exports
it to ONNX (``torch.onnx.export``, the TorchScript-based exporter, ``dynamo=False``: the
torch.export-based one needs ``onnxscript``, which this project does not require) and
:func:`torchscript_graph` traces it for pnnx. Neither runs nor writes the graph:
:mod:`lkdn.export.onnx`, :mod:`lkdn.export.openvino`, :mod:`lkdn.export.ncnn` and
:mod:`lkdn.backends` verify their runtime's result themselves.

Half precision: some stages overflow float16 (LKDN's attention stage, ``c5`` -> LKA -> ``c6``
before the pixel norm, reaches magnitudes around 1e11 with the official weights, far past
float16's 65504), so a plain ``.half()`` network outputs NaN. :func:`half_network` therefore
builds a mixed-precision network: float16 everywhere except the stages the architecture's
contract lists in ``fp32_stages``, which run in float32 between two casts.

onnx is an optional dependency (``pip install -e ".[onnx]"`` in the clone), imported inside
:func:`onnx_graph` only, never by ``import lkdn``.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from lkdn.archs.contract import contract_of
from lkdn.errors import LkdnError
from lkdn.loading import deploy_form
from lkdn.reparam import reparameterize_model

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
"""LayerNormalization is a single ONNX op from opset 17 on; 13 to 21 were verified."""
INPUT_NAME = "input"
OUTPUT_NAME = "output"
EXPORTER = "torch.onnx.export(dynamo=False) (TorchScript-based)"


class ExportError(LkdnError, RuntimeError):
    """The export failed or did not reproduce PyTorch; nothing was written."""


def _require_onnx_exporter() -> Any:
    """The ``onnx`` package (torch.onnx.export needs it; onnxruntime is not needed to export)."""
    try:
        import onnx  # optional extra: pip install -e ".[onnx]"
    except ImportError as err:
        raise ImportError(
            "exporting to ONNX needs the onnx package (torch.onnx.export uses it), which is not installed: "
            "pip install -e \".[onnx]\" in the clone"
        ) from err
    return onnx


def deploy_network(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with every branch folded and its input replication folded, in eval mode."""
    folds_num_in = callable(getattr(net, "fold_num_in", None))
    return reparameterize_model(net, fold_num_in=folds_num_in).eval()


class _Float32Stage(nn.Module):
    """Run ``module`` in float32 and cast its output to ``out_dtype``."""

    def __init__(self, module: nn.Module, *, out_dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.float()
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).to(self.out_dtype)


def half_network(net: nn.Module) -> nn.Module:
    """A float16 copy of ``net`` whose overflow-prone stages (the contract's ``fp32_stages``) stay float32.

    ``fp32_stages`` maps a block class to a chain of its sub-modules: the chain runs in float32
    and its last module casts back to float16.
    """
    stages = contract_of(net).fp32_stages
    net = copy.deepcopy(net).half()
    for module in list(net.modules()):
        names = next((v for k, v in stages.items() if isinstance(module, k)), ())
        for i, name in enumerate(names):
            out_dtype = torch.float16 if i == len(names) - 1 else torch.float32
            setattr(module, name, _Float32Stage(getattr(module, name), out_dtype=out_dtype))
    return net


def image_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """A uint8 BGR HWC image as a 1x3xHxW RGB float tensor in [0, 1] (as :func:`lkdn.evaluate.super_resolve`)."""
    return torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1)[None].float() / 255.0


@torch.no_grad()
def onnx_graph(
    net: nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    fp16: bool = False,
    size: tuple[int, int] = (32, 32),
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The serialized, validated ONNX graph of the deploy form of ``net`` (not run, not written).

    The first half of :func:`lkdn.export.onnx.export_onnx`, for the runtimes that start from our ONNX graph
    (OpenVINO, ncnn through pnnx: :mod:`lkdn.backends`); they verify their own result. The
    arguments are those of :func:`lkdn.export.onnx.export_onnx`. Needs ``onnx`` (not onnxruntime).

    Raises:
        ExportError: the exporter failed or the graph is not valid ONNX.
    """
    onnx = _require_onnx_exporter()
    deploy = deploy_network(net)
    exported = half_network(deploy) if fp16 else deploy
    dtype = torch.float16 if fp16 else torch.float32
    sample = torch.rand(1, _input_channels(deploy), *size, generator=torch.Generator().manual_seed(1)).to(dtype)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    logger.info("exporting %s with %s, opset %d, %s", type(net).__name__, EXPORTER, opset, dtype)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(
                exported, (sample,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
                do_constant_folding=True,
            )
    except Exception as err:  # the exporter raises many types; say which network and opset failed
        raise ExportError(f"torch.onnx.export failed for {type(net).__name__} at opset {opset}: {err}") from err
    model = onnx.load_from_string(buffer.getvalue())
    props = {"producer": "lkdn", "precision": "float16" if fp16 else "float32", **(metadata or {})}
    onnx.helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"exported graph is not valid ONNX: {err}") from err
    return model.SerializeToString()


@torch.no_grad()
def torchscript_graph(net: nn.Module, *, size: tuple[int, int] = (32, 32)) -> bytes:
    """The deploy form of ``net`` traced with ``torch.jit.trace`` and serialized (bytes of a ``.pt`` file).

    The input pnnx converts best (``lkdn.backends.ncnn_backend``: from TorchScript it keeps
    ESA's resize to its input's size dynamic, which its ONNX front end cannot). The trace runs
    the inference path of the deploy network on a ``1xCx{size}`` random input.

    Raises:
        ExportError: tracing failed.
    """
    deploy = deploy_network(net)
    sample = torch.rand(1, _input_channels(deploy), *size, generator=torch.Generator().manual_seed(1))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
            torch.jit.save(torch.jit.trace(deploy, sample, check_trace=False), buffer)
    except Exception as err:  # tracing raises many types; name the network
        raise ExportError(f"torch.jit.trace failed for {type(net).__name__}: {err}") from err
    return buffer.getvalue()


def input_channels(net: nn.Module) -> int:
    """Image channels ``net`` takes: those of the first convolution of its deploy form (``num_in`` folded)."""
    if callable(getattr(net, "fold_num_in", None)):
        net = deploy_network(net)
    return _input_channels(net)


def _input_channels(net: nn.Module) -> int:
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ExportError(f"{type(net).__name__}: no Conv2d found to infer the input channels")
    return first.in_channels


def export_metadata(network_opt: Mapping[str, Any], net: nn.Module, scale: int) -> dict[str, str]:
    """``metadata_props`` describing the exported network: its deploy options as JSON, and the scale."""
    folds_num_in = callable(getattr(net, "fold_num_in", None))
    _, options = deploy_form(net, network_opt, fold_num_in=folds_num_in)
    return {"network_g": json.dumps(options), "scale": str(scale)}
