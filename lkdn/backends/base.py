"""What every inference runtime behind ``lkdn.Upscaler(backend=...)`` shares.

* :class:`Runtime`: a network converted for one runtime. It takes and returns N,C,H,W float32
  torch tensors on the CPU (images in [0, 1]; the output clamped to [0, 1], as
  :class:`lkdn.Upscaler` returns it; :meth:`Runtime.raw` is the unclamped output), so tiling,
  the self-ensemble and :func:`lkdn.images.upscale_image` run on it unchanged.
* :func:`verify`: the check every conversion passes before it is used or written: the runtime's
  output against the float32 PyTorch network's on the same inputs, within the
  :data:`TOLERANCES` of the backend and precision; otherwise :class:`BackendError`.
* :func:`require`: the import of an optional runtime, or :class:`MissingExtraError`, a one-line
  error naming the ``pip install`` to run.

Tolerances are on images in [0, 1]: ``max_abs`` is the largest accepted
``max |runtime - PyTorch float32|`` (output not clamped), ``min_psnr`` the smallest accepted PSNR
in dB of the runtime's clamped output against PyTorch's (peak 1). Reduced precisions are judged
by PSNR because their error is spread over the image (bfloat16 keeps 8 bits of mantissa through
100+ layers), int8 by PSNR only.
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from lkdn.errors import LkdnError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
"""Every precision name the backends use (each backend supports some of them)."""

EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "ncnn": "ncnn", "onnx": "onnx", "nncf": "openvino",
          "pnnx": "ncnn"}
"""The extra of setup.py that installs each optional module."""


class BackendError(LkdnError, RuntimeError):
    """A runtime could not convert or load a network, or does not reproduce PyTorch; the message says which."""


class MissingExtraError(LkdnError, ImportError):
    """An optional runtime is not installed; the message is one line naming the ``pip install`` to run."""


def install_command(extra: str) -> str:
    """The install command of an extra (in the clone: the name ``lkdn`` on the package index is somebody else's)."""
    return f'pip install -e ".[{extra}]"'


def require(module: str, *, needed_for: str) -> ModuleType:
    """Import ``module`` (an optional runtime) or raise :class:`MissingExtraError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = EXTRAS[module.split(".")[0]]
        raise MissingExtraError(
            f"{needed_for} needs the {module} package, which is not installed: {install_command(extra)} in the clone"
        ) from err


@dataclass(frozen=True)
class Tolerance:
    """What a converted network must reproduce of the float32 PyTorch network (see the module docstring)."""

    max_abs: float | None = None
    min_psnr: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_abs is not None:
            parts.append(f"max abs <= {self.max_abs:.0e}")
        if self.min_psnr is not None:
            parts.append(f"PSNR >= {self.min_psnr:g} dB")
        return " and ".join(parts)


FP32_TOLERANCE = Tolerance(max_abs=1e-4)
"""onnxruntime float32: the ONNX export's own tolerance (:data:`lkdn.export.FP32_TOLERANCE`)."""
FP32_WINOGRAD_TOLERANCE = Tolerance(max_abs=5e-4)
"""OpenVINO and ncnn float32: their Winograd / re-ordered convolutions round differently from
oneDNN's (SPAN, which works at 255x the image scale, on the noise input: up to 9e-5 and 1.7e-4;
PyTorch float32 itself is 3.4e-5 from float64 there; on images about 1e-5)."""
HALF_TOLERANCE = Tolerance(max_abs=1e-1, min_psnr=45.0)
"""float16 weights (ncnn) or a mixed-precision float16 graph (onnxruntime): on noise up to 4.4e-2 at single
pixels (SPAN, BSRN; PSNR 58 dB), on images below 1e-2."""
BF16_TOLERANCE = Tolerance(min_psnr=30.0)
"""bfloat16 keeps 8 bits of mantissa: on noise the error reaches 0.4 at single pixels (SPAN); PSNR judges it."""
INT8_TOLERANCE = Tolerance(min_psnr=25.0)
"""int8 (NNCF post-training quantization): on images only (noise lies outside the calibrated ranges)."""

TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("onnxruntime", "fp32"): FP32_TOLERANCE,
    ("onnxruntime", "fp16"): HALF_TOLERANCE,
    ("openvino", "fp32"): FP32_WINOGRAD_TOLERANCE,
    ("openvino", "bf16"): BF16_TOLERANCE,
    ("openvino", "int8"): INT8_TOLERANCE,
    ("ncnn", "fp32"): FP32_WINOGRAD_TOLERANCE,
    ("ncnn", "fp16"): HALF_TOLERANCE,
}
"""Per (backend, precision), on every verification input; measured maxima: docs/deployment.md ("Backends")."""


@dataclass(frozen=True)
class Check:
    """One comparison of a runtime with PyTorch float32."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    psnr: float

    def describe(self) -> str:
        return f"{self.name} {self.shape}: max abs {self.max_abs:.2e}, PSNR {self.psnr:.1f} dB"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (both clamped; ``inf`` when equal)."""
    mse = float((a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


class Runtime(abc.ABC):
    """A network converted for one runtime, callable like the PyTorch network on CPU float32 tensors.

    Subclasses set :attr:`backend` and :attr:`precisions` and implement :meth:`run` (numpy
    N,C,H,W float32 in, numpy N,C,sH,sW out) and :meth:`describe`. :attr:`checks` holds the
    comparisons of :func:`verify` once it passed.
    """

    backend: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]

    def __init__(self, *, precision: str, threads: int | None) -> None:
        if precision not in self.precisions:
            raise ValueError(
                f"backend {self.backend!r} supports precision {', '.join(self.precisions)}, not {precision!r}"
            )
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be a positive number, got {threads}")
        self.precision = precision
        self.threads = threads or torch.get_num_threads()
        self.checks: list[Check] = []

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """N,C,H,W float32 in [0, 1] -> N,C,sH,sW float32 (not clamped)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line: runtime and version, precision, threads."""

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The runtime's output on ``x``, not clamped (what :func:`verify` compares with PyTorch).

        A failure of the runtime is a :class:`BackendError` naming it and the input's shape.
        """
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            out = self.run(array)
        except BackendError:
            raise
        except Exception as err:  # the runtimes raise their own exception types
            raise BackendError(f"{self.describe()} failed on an input of shape {tuple(array.shape)}: {err}") from err
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """N,C,H,W images in [0, 1] -> N,C,sH,sW float32 clamped to [0, 1]."""
        return self.raw(x).clamp_(0, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def natural_image(channels: int = 3, *, size: tuple[int, int] = (45, 51)) -> torch.Tensor:
    """An odd-sized photograph as a 1xCxHxW tensor in [0, 1]: scikit-image's bundled ``astronaut``, downscaled 8x.

    Reduced precisions (bf16, int8) are judged on it: on noise their errors are far larger than
    on images.
    """
    import cv2
    from skimage import data  # scikit-image: only the reduced-precision checks need it

    image = cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)[: size[0], : size[1]]
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    if channels == 3:
        return tensor
    return tensor.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)


def check_inputs(channels: int, *, noise: bool = True) -> list[tuple[str, torch.Tensor]]:
    """The verification inputs: a random batch of two at odd sizes (``noise``), and :func:`natural_image`."""
    inputs = [("photo", natural_image(channels))]
    if noise:
        generator = torch.Generator().manual_seed(0)
        inputs.insert(0, ("random", torch.rand(2, channels, 27, 35, generator=generator)))
    return inputs


@torch.no_grad()
def verify(
    forward: Callable[[torch.Tensor], torch.Tensor], reference: nn.Module, inputs: Sequence[tuple[str, torch.Tensor]],
    tolerance: Tolerance, *, what: str, strict: bool = True,
) -> list[Check]:
    """Compare ``forward`` with the float32 ``reference`` on ``inputs``; :class:`BackendError` beyond ``tolerance``.

    ``what`` names the runtime (and file) in the messages. The reference runs in eval mode
    (restored after). ``strict=False`` logs a failure as a warning instead (for measuring what
    would be refused, as ``benchmarks/quantization_table.py`` does).
    """
    was_training = reference.training
    reference.eval()
    checks, failures = [], []
    try:
        for name, x in inputs:
            expected = reference(x.float()).float()
            try:
                got = forward(x)
            except Exception as err:  # runtimes raise their own exception types
                raise BackendError(f"{what} failed on {name} {tuple(x.shape)}: {err}") from err
            if tuple(got.shape) != tuple(expected.shape):
                raise BackendError(
                    f"{what}: output shape {tuple(got.shape)} on {name} != PyTorch {tuple(expected.shape)}"
                )
            max_abs = float((got.float() - expected).abs().max())
            check = Check(name=name, shape=tuple(x.shape), max_abs=max_abs if math.isfinite(max_abs) else math.inf,
                          psnr=psnr(got, expected))
            checks.append(check)
            logger.info("%s: %s", what, check.describe())
            if tolerance.max_abs is not None and not check.max_abs <= tolerance.max_abs:
                failures.append(f"{check.describe()} (tolerance {tolerance.describe()})")
            elif tolerance.min_psnr is not None and not check.psnr >= tolerance.min_psnr:
                failures.append(f"{check.describe()} (tolerance {tolerance.describe()})")
    finally:
        reference.train(was_training)
    if failures:
        message = f"{what} does not reproduce PyTorch:\n  " + "\n  ".join(failures)
        if strict:
            raise BackendError(message)
        logger.warning("%s (strict=False: kept)", message)
    return checks
