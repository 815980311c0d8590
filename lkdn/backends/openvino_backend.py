"""OpenVINO (CPU plugin) on our ONNX export: float32, bfloat16, or int8 from NNCF post-training quantization.

* The model is read from :func:`lkdn.export.onnx_graph` (OpenVINO's own ONNX front end) or from
  an IR written by ``lkdn-export-openvino`` (``.xml`` + ``.bin``).
* ``fp32`` / ``bf16`` are OpenVINO's *inference precision hint* (``INFERENCE_PRECISION_HINT``
  ``f32`` / ``bf16``); the weights stay float32 in the model and the IR. On CPUs with bfloat16
  support (AVX512-BF16, AMX) OpenVINO's own default is ``bf16``, which changes the output, so
  ``fp32`` is always asked for explicitly here. ``bf16`` is refused on a CPU without it (the
  plugin would silently run float32).
* ``int8``: :func:`quantize` runs ``nncf.quantize`` (post-training, ``MIXED`` preset: symmetric
  weights, asymmetric activations) on calibration images; the stages the architecture keeps in
  float32 for float16 (its contract's ``fp32_stages``: LKDN's attention stage reaches 1e11)
  and the first and last convolution (the image in, the image out) are left unquantized, and
  run in float32.

IR files carry their metadata in ``rt_info`` under ``lkdn`` (``precision``, ``network_g``,
``scale``, ``producer``); a plain ``openvino.Core().compile_model(xml, "CPU")`` ignores the
precision we recorded and uses the CPU's default hint (``bf16`` where supported).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from lkdn.archs.contract import contract_of
from lkdn.backends.base import BackendError, Runtime, require

logger = logging.getLogger(__name__)

METADATA_KEYS = ("producer", "precision", "network_g", "scale")
"""What :func:`save_ir` records in ``rt_info['lkdn']``."""
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""``INFERENCE_PRECISION_HINT`` per precision (int8: the unquantized layers run in float32)."""


def _openvino() -> Any:
    return require("openvino", needed_for="backend 'openvino'")


def quantization_scope(net: nn.Module) -> list[str]:
    """Name patterns (of the ONNX nodes, ``/B1/c5/Conv``) that int8 quantization leaves in float.

    The architecture contract's ``fp32_stages`` of every block, and the top-level modules holding
    the first and the last convolution of the deploy network.
    """
    stages = contract_of(net).fp32_stages
    patterns = []
    for name, module in net.named_modules():
        for block, children in stages.items():
            if isinstance(module, block):
                scope = "/" + name.replace(".", "/") if name else ""
                patterns += [f"{re.escape(f'{scope}/{child}/')}.*" for child in children]
    convs = [name for name, module in net.named_modules() if isinstance(module, nn.Conv2d)]
    for name in dict.fromkeys((convs[0], convs[-1])) if convs else ():
        patterns.append(f"{re.escape('/' + name.split('.')[0] + '/')}.*")
    return patterns


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Any:
    """Put the calling thread's alternate signal stack back as it was after the block (POSIX; elsewhere a no-op).

    OpenVINO's CPU plugin installs an alternate signal stack of its own on the thread that
    compiles a model, and puts back the one it found when that model is destroyed. Two models
    destroyed in the order they were built leave the thread's stack pointing to freed memory,
    and the next signal handled there (Python's handlers run on that stack: SIGTERM, Ctrl-C)
    kills the process with SIGSEGV instead of running the handler. Restoring the stack right
    after compiling keeps every model's saved stack the thread's own, whatever the order.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        sigaltstack = libc.sigaltstack
    except (OSError, AttributeError):  # not a POSIX libc (Windows)
        yield
        return
    saved = _SignalStack()
    if sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        current = _SignalStack()
        if sigaltstack(None, ctypes.byref(current)) == 0 and (current.ss_sp, current.ss_size) != (saved.ss_sp, saved.ss_size):
            sigaltstack(ctypes.byref(saved), None)


def quantize(model: Any, calibration: Sequence[np.ndarray], *, ignored: Sequence[str]) -> Any:
    """``nncf.quantize`` of an OpenVINO model on ``calibration`` (1,C,H,W float32 arrays in [0, 1])."""
    nncf = require("nncf", needed_for="int8 quantization (backend 'openvino')")
    if not calibration:
        raise ValueError("int8 quantization needs calibration images (a folder of LR images, or tensors)")
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        # NNCF's progress bars; NNCF compiles models of its own to collect statistics
        with contextlib.redirect_stdout(io.StringIO()), keep_signal_stack():
            return nncf.quantize(
                model, nncf.Dataset(list(calibration)), subset_size=len(calibration),
                preset=nncf.QuantizationPreset.MIXED, ignored_scope=nncf.IgnoredScope(patterns=list(ignored), validate=False),
            )
    except Exception as err:  # NNCF raises many types; name the step
        raise BackendError(f"NNCF int8 quantization failed: {err}") from err
    finally:
        nncf.set_log_level(level or logging.INFO)


def has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOBackend(Runtime):
    """An OpenVINO model compiled for the CPU.

    Args:
        model: an ``openvino.Model`` (from :meth:`from_onnx`), or the path of an IR ``.xml``
            (its ``.bin`` beside it) or of a ``.onnx`` file.
        precision: ``fp32``, ``bf16`` (inference precision hints) or ``int8`` (a quantized model:
            from :meth:`from_onnx` with calibration, or an int8 IR).
        threads: ``INFERENCE_NUM_THREADS`` (default: torch's thread count).
        config: more ``compile_model`` properties (they override ours).
    """

    backend: ClassVar[str] = "openvino"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "int8")

    def __init__(
        self, model: Any, *, precision: str = "fp32", threads: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(precision=precision, threads=threads)
        ov = _openvino()
        self.version = ov.get_version().split("-")[0]
        core = ov.Core()
        self.source = "the exported graph"
        if isinstance(model, str | os.PathLike):
            model = self.read(model, core=core)
        if precision == "bf16" and not has_bf16(core):
            raise BackendError(
                "backend 'openvino' precision bf16: this CPU has no native bfloat16 (OpenVINO capabilities: "
                f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); use fp32"
            )
        self.model = model
        properties = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": self.threads,
                      "PERFORMANCE_HINT": "LATENCY", **(config or {})}
        with keep_signal_stack():
            try:
                self.compiled = core.compile_model(model, "CPU", properties)
            except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
                raise BackendError(f"OpenVINO cannot compile {self.source}: {err}") from err
            self.request = self.compiled.create_infer_request()

    def read(self, path: str | os.PathLike[str], *, core: Any) -> Any:
        """Read an IR (``.xml`` with its ``.bin``) or ONNX file; a :class:`BackendError` names a bad file."""
        path = Path(path)
        self.source = str(path)
        if not path.is_file():
            raise BackendError(f"OpenVINO model {path} not found")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise BackendError(f"OpenVINO IR {path}: its weights {path.with_suffix('.bin')} are missing")
        try:
            return core.read_model(str(path))
        except Exception as err:  # a corrupted IR raises RuntimeError with a parser message
            lines = [line for line in str(err).splitlines() if line.strip()]
            reason = lines[-1] if lines else type(err).__name__  # OpenVINO's last line says what is wrong
            raise BackendError(f"OpenVINO cannot read {path}: not a valid IR or its .bin does not match ({reason})") from err

    @classmethod
    def from_onnx(
        cls, graph: bytes, *, precision: str = "fp32", threads: int | None = None, net: nn.Module | None = None,
        calibration: Sequence[np.ndarray] = (),
    ) -> OpenVINOBackend:
        """Read our ONNX graph (bytes); for ``int8`` quantize it with NNCF first (``net``: its deploy network)."""
        ov = _openvino()
        try:
            model = ov.Core().read_model(graph)
        except Exception as err:  # OpenVINO's ONNX front end raises RuntimeError
            raise BackendError(f"OpenVINO cannot read the exported ONNX graph: {err}") from err
        if precision == "int8":
            model = quantize(model, calibration, ignored=quantization_scope(net) if net is not None else ())
        return cls(model, precision=precision, threads=threads)

    def metadata(self) -> dict[str, str]:
        """The ``lkdn`` entries of the model's ``rt_info`` (empty for models not written by us)."""
        return {key: self.model.get_rt_info(["lkdn", key]).astype(str) for key in METADATA_KEYS
                if self.model.has_rt_info(["lkdn", key])}

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.request.infer({0: x})[0], dtype=np.float32)

    def describe(self) -> str:
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        return f"OpenVINO {self.version} CPU, {self.precision} (inference precision {hint}), {self.threads} threads"


def save_ir(model: Any, xml: str | os.PathLike[str], *, metadata: Mapping[str, str]) -> None:
    """Serialize ``model`` as an IR at ``xml`` (+ ``.bin``), float32 weights, ``metadata`` in ``rt_info['lkdn']``."""
    ov = _openvino()
    model = model.clone()
    for key, value in metadata.items():
        model.set_rt_info(str(value), ["lkdn", key])
    ov.save_model(model, str(xml), compress_to_fp16=False)


def to_numpy_images(images: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Calibration tensors (C,H,W or 1,C,H,W in [0, 1]) as 1,C,H,W float32 arrays."""
    arrays = []
    for image in images:
        t = image if image.ndim == 4 else image[None]
        arrays.append(np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()))
    return arrays
