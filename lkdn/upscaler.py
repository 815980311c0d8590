"""``lkdn.Upscaler``: the fastest correct way to run a network of ours for inference.

    from lkdn import Upscaler
    up = Upscaler.from_config("options/test/LKDN/test_LKDN_x4.yml")        # YAML + its weights
    up = Upscaler.from_checkpoint("LKDN_x4_deploy.safetensors")             # self-describing file
    sr = up(lr)                     # N,3,H,W float in [0, 1] -> N,3,sH,sW float32 in [0, 1]
    out = up.upscale_image(cv2.imread("photo.png", cv2.IMREAD_UNCHANGED))  # numpy in, numpy out

``optimize=True`` (the default) runs :func:`optimize_network` (re-parameterization,
``channels_last``); in inference the networks themselves run their element-wise operations in
place and skip the trunk's big concatenation. The output equals the plain eager network's
within 1e-4 in float32. ``compile=True`` adds ``torch.compile``; ``precision="bf16"``/``"fp16"``
runs under autocast (changes results; ask for it explicitly). Tiling, the x8 self-ensemble and
the out-of-memory retry come from :mod:`lkdn.images`.

``backend=`` runs the same network in another runtime, behind the same call, tiling,
self-ensemble and :meth:`Upscaler.upscale_image` (:mod:`lkdn.backends`)::

    up = Upscaler.from_config("options/test/LKDN/test_LKDN_x4.yml", backend="openvino")  # verified on build
    up = Upscaler(net, backend="auto")   # the fastest verified one, measured on the first call

``onnxruntime``, ``openvino`` and ``ncnn`` run the folded deploy network exported by
:func:`lkdn.export.onnx_graph`, on the CPU, and each is checked against the float32 PyTorch
network when it is built (tolerances per backend and precision:
:data:`lkdn.backends.TOLERANCES`); a missing extra is a one-line error naming the
``pip install -e ".[...]"`` to run.

Speed-ups that are not a property of any network (below :class:`Upscaler`). The speed of the
networks themselves is in the networks (:mod:`lkdn.archs.ops`): in inference their element-wise operations run in place, LKDN's and BSRN's trunks accumulate their 1x1 fusion
without the big concatenation, and LKDN's pixel norm keeps the ``channels_last`` layout. What
is left here (docs/efficiency.md has the measured effect of each):

1. :func:`optimize_network`: re-parameterization (:func:`lkdn.reparam.reparameterize_model` with
   ``fold_num_in``; a training-form network becomes its deploy form, which computes the same
   function with fewer and smaller convolutions), checked on a small random input against the
   network it replaces (max abs difference at most :data:`PROBE_TOLERANCE`, else the fold is
   dropped with a warning), then ``channels_last`` weights (oneDNN and cuDNN run convolutions
   natively in NHWC; :class:`lkdn.Upscaler` gives its inputs in that layout too);
2. :func:`compile_network`: ``torch.compile`` (costs start-up time);
3. :func:`tune_cpu_allocator`: glibc keeps freed memory for reuse (changes the whole process).

:class:`lkdn.Upscaler` applies the first and, on the CPU, the third by default, and compiles
only when asked.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lkdn.archs.contract import contract_of, foldable_modules
from lkdn.backends import BACKEND_PRECISIONS, BACKENDS, BackendError, MissingExtraError, check_backend, convert
from lkdn.backends.auto import AutoBackend
from lkdn.checkpoint import CheckpointError
from lkdn.deploy import onnx_graph
from lkdn.images import check_finite_output, is_out_of_memory, run_network, tile_context, upscale_image
from lkdn.loading import load_network_from_options, network_from_file, read_metadata
from lkdn.options import Val, device_of, load_options, with_defaults
from lkdn.reparam import reparameterize_model

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The torch backend's precisions (autocast dtypes); the other backends' are in :data:`lkdn.backends.BACKEND_PRECISIONS`."""
ALL_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``None`` -> CUDA when available, else the CPU; strings are parsed by ``torch.device``.

    A ValueError names a device that does not exist or is not available here.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {str(device)!r} is not a device: use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available here; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"device {device}: only cpu and cuda are supported")
    return device


def _device_type(device: torch.device | str) -> str:
    """The type of ``device`` (``cpu``, ``cuda``, ...) without requiring it to be available; a ValueError names a bad one."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return resolve_device(device).type  # raises the ValueError naming it


class Upscaler:
    """A network ready for inference: optimized, on its device, callable on image batches.

    Args:
        net: the network (any registered one, in training or deploy form); it is not modified.
        scale: the upscaling factor (default and check: ``net.upscale`` when the network has one).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (CUDA when available).
        optimize: apply :func:`lkdn.upscaler.optimize_network` (same result within 1e-4, float32).
        precision: ``fp32`` (default), or ``bf16`` / ``fp16`` autocast: faster (GPUs with tensor
            cores; bf16 on CPUs with AVX512-BF16), but the output changes (LKDN x4, bf16 on a CPU:
            up to 0.02, mean 0.003 on [0, 1]).
        compile: ``torch.compile`` the (optimized) network: pays off only for many calls on
            inputs of one size (the first call of each size compiles, tens of seconds on a CPU).
        tile: default tile size in LR pixels for :meth:`__call__` (``None``: whole images).
        tile_pad: context around tiles (default: the architecture's receptive radius when it is
            translation-local, which makes tiles exact; see :attr:`tiling`).
        self_ensemble: default for the x8 geometric self-ensemble.
        tune_allocator: call :func:`lkdn.upscaler.tune_cpu_allocator` (process-wide: glibc keeps
            freed memory for reuse, about 15% faster on CPUs; the process keeps its peak memory).
            ``None``: when ``optimize`` is on and the device is the CPU.
        backend: ``torch`` (default), ``onnxruntime``, ``openvino``, ``ncnn`` (CPU runtimes running
            the folded deploy network, verified against PyTorch when built: :func:`lkdn.backends.convert`)
            or ``auto``: every installed backend that supports ``precision`` and passes its
            verification, the fastest chosen on the first call at that call's input size, and
            logged with the measured times (:class:`lkdn.backends.auto.AutoBackend`). Precisions:
            torch ``fp32``/``bf16``/``fp16``, onnxruntime ``fp32``/``fp16``, openvino
            ``fp32``/``bf16``/``int8``, ncnn ``fp32``/``fp16``. ``optimize`` and ``compile`` are
            the torch backend's; the other runtimes always run the folded network and apply their
            own graph optimizations.
        threads: CPU threads of the non-torch runtimes (default: ``torch.get_num_threads()``, which
            the torch backend uses).
        calibration: ``precision="int8"`` (openvino) only: a folder of LR images or a list of image
            tensors in [0, 1] for NNCF's post-training quantization.
    """

    def __init__(
        self, net: nn.Module, *, scale: int | None = None, device: torch.device | str | None = None,
        optimize: bool = True, precision: str = "fp32", compile: bool = False,
        tile: int | None = None, tile_pad: int | None = None, self_ensemble: bool = False,
        tune_allocator: bool | None = None, backend: str = "torch", threads: int | None = None,
        calibration: str | os.PathLike[str] | Sequence[torch.Tensor] = (),
    ) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a network (torch.nn.Module), got {type(net).__name__} {str(net)[:40]!r}; "
                            "build one with lkdn.build_network or use Upscaler.from_config / from_checkpoint")
        if precision not in ALL_PRECISIONS:
            choices = PRECISIONS if backend == "torch" else ALL_PRECISIONS
            raise ValueError(f"precision must be one of {', '.join(choices)}, got {precision!r}")
        if backend == "torch":  # the torch backend is this class; lkdn.backends checks the others
            if precision not in PRECISIONS:
                raise ValueError(f"backend 'torch' supports precision {', '.join(PRECISIONS)}, not {precision!r}")
        elif backend != "auto":
            check_backend(backend, precision)
        if backend != "torch":
            if device is not None and _device_type(device) != "cpu":
                raise ValueError(f"backend {backend!r} runs on the CPU, not {device}: use device='cpu' (or backend='torch')")
            if compile:
                raise ValueError(f"compile=True is torch.compile, for backend='torch' only (got backend={backend!r})")
            device = "cpu"
        self.device = resolve_device(device)
        self.precision = precision
        self.backend = backend
        self.network_name = type(net).__name__
        self.runtime: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.scale = self._check_scale(scale, getattr(net, "upscale", None))
        self.tiling = tile_context(net)
        self.tile, self.self_ensemble = tile, self_ensemble
        self.tile_pad = self.tiling.pad if tile_pad is None else tile_pad
        if tile and not self.tiling.exact:
            logger.warning("Upscaler: tiles are %s", self.tiling.describe())
        self.optimizations: list[str] = []
        if tune_allocator is None:
            tune_allocator = optimize and self.device.type == "cpu"
        if tune_allocator and tune_cpu_allocator():
            self.optimizations.append("tuned CPU allocator")
        self.channels_last = False
        self.network: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None
        if backend in ("torch", "auto") and precision in PRECISIONS:
            torch_net = copy.deepcopy(net).to(self.device).eval()  # the caller's network keeps its device and mode
            if optimize:
                torch_net = optimize_network(torch_net, applied=self.optimizations)
            self.channels_last = optimize
            if precision == "fp16" and keep_float32_stages(torch_net):
                self.optimizations.append("float32 overflow-prone stages")
            if compile:
                torch_net = compile_network(torch_net, device=self.device)
                self.optimizations.append("torch.compile")
            self.network = torch_net
        if backend == "auto":
            self.runtime = self._auto(net, threads=threads, calibration=calibration)
        elif backend != "torch":
            self.runtime = self.network = convert(net, backend, precision=precision, threads=threads,
                                                  calibration=calibration)
        logger.info(
            "Upscaler: %s on %s, %s, backend %s, optimizations: %s", type(net).__name__, self.device, precision,
            self.runtime.describe() if self.runtime is not None else "torch", ", ".join(self.optimizations) or "none",
        )

    @staticmethod
    def _check_scale(scale: Any, upscale: Any) -> int | None:
        if scale is None:
            return upscale
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if upscale is not None and scale != upscale:
            raise ValueError(f"scale {scale} but the network upscales by {upscale}")
        return scale

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_options(
        cls, opt: Mapping[str, Any], *, weights: str | os.PathLike[str] | None = None,
        device: torch.device | str | None = None, optimize: bool | None = None, tile: int | None = None,
        tile_pad: int | None = None, self_ensemble: bool | None = None, backend: str = "torch", **kwargs: Any,
    ) -> Upscaler:
        """The :class:`Upscaler` that validated options describe: the one way from options to inference.

        ``lkdn/test.py``, ``lkdn-infer -opt`` and :meth:`from_config` all build their upscaler here, so the
        options mean the same everywhere: ``network_g`` and its weights (``path.pretrain_network_g``,
        ``param_key_g``, ``strict_load_g``; ``weights`` overrides the file), ``scale``, the device of
        ``num_gpu`` (the CPU for the non-torch backends), and ``val.optimize`` (default true), ``val.tile``
        (``size``, ``pad``) and ``val.self_ensemble`` (default false). An argument other than ``None``
        replaces its option; the other keyword arguments are those of :class:`Upscaler`.
        """
        val = with_defaults(opt.get("val"), Val)
        tile_options = val.get("tile") or {}
        for name, value in (("tile", tile), ("tile_pad", tile_pad)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative number of LR pixels, got {value!r}")
        if device is None:  # the non-torch backends run on the CPU
            device = device_of(opt) if backend == "torch" else "cpu"
        device = resolve_device(device)
        net = load_network_from_options(opt, weights=weights, device=device)
        return cls(
            net, scale=opt["scale"], device=device, backend=backend,
            optimize=bool(val["optimize"]) if optimize is None else optimize,
            tile=tile_options.get("size") if tile is None else tile,
            tile_pad=tile_options.get("pad") if tile_pad is None else tile_pad,
            self_ensemble=bool(val["self_ensemble"]) if self_ensemble is None else self_ensemble,
            **kwargs,
        )

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *,
        overrides: Iterable[str] = (), **kwargs: Any,
    ) -> Upscaler:
        """:meth:`from_options` of a test/train YAML, validated as every command validates it.

        ``overrides`` are ``--force-yml`` entries (``val.tile.size=256``); the other keyword arguments are
        those of :meth:`from_options`, each replacing its option.
        """
        return cls.from_options(load_options(path, overrides=overrides), weights=weights, **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **kwargs: Any) -> Upscaler:
        """Rebuild the network from a self-describing ``.safetensors`` file (no YAML needed).

        The file's metadata must hold ``lkdn_format``, ``network_g`` (the options as JSON) and
        ``scale``, as written by ``lkdn-reparam``, ``lkdn-convert``
        and training; it is checked against the tensors before anything is built. Other keyword
        arguments are those of :class:`Upscaler`.
        """
        metadata = read_metadata(path)
        if "network_g" not in metadata:
            raise CheckpointError(
                f"{path}: no lkdn metadata (lkdn_format, network_g, scale): only .safetensors files written by "
                "lkdn-convert, lkdn-reparam or training describe their network; "
                "for other checkpoints use Upscaler.from_config(<yml>, weights=...)"
            )
        net = network_from_file(path)
        kwargs.setdefault("scale", metadata.get("scale"))
        return cls(net, **kwargs)

    # --- inference ---------------------------------------------------------------------------

    def _auto(
        self, net: nn.Module, *, threads: int | None, calibration: str | os.PathLike[str] | Sequence[torch.Tensor],
    ) -> AutoBackend:
        """The candidates of ``backend="auto"``: torch and every installed runtime that converts and verifies."""
        candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        if self.network is not None:
            candidates["torch"] = self._torch_forward
        graph = None
        for name in BACKENDS[1:]:
            if self.precision not in BACKEND_PRECISIONS[name]:
                continue
            try:
                if graph is None and not (name == "onnxruntime" and self.precision == "fp16"):
                    graph = onnx_graph(net)
                candidates[name] = convert(net, name, precision=self.precision, threads=threads,
                                           calibration=calibration, graph=graph)
            except MissingExtraError as err:
                logger.info("backend 'auto': %s not installed (%s)", name, err)
            except (BackendError, ValueError, ImportError) as err:
                logger.warning("backend 'auto': leaving out %s: %s", name, err)
        if not candidates:
            raise BackendError(f"backend 'auto': no backend runs precision {self.precision!r} here (see the log)")
        label = f"Upscaler(backend='auto', precision={self.precision!r}) for {type(net).__name__}"
        return AutoBackend(candidates, label=label, threads=threads)

    @property
    def backend_in_use(self) -> str:
        """The backend that runs the network: ``backend``, or for ``auto`` the chosen one (``auto`` before the first call)."""
        if isinstance(self.runtime, AutoBackend):
            return self.runtime.chosen or "auto"
        return self.backend

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime is not None:  # unclamped, as the torch network: clamped once, after the self-ensemble's average
            return getattr(self.runtime, "raw", self.runtime)(x)
        return self._torch_forward(x)

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.network(x)
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            return self.network(x)

    def __call__(
        self, lr: torch.Tensor, *, tile: int | None = None, tile_pad: int | None = None,
        self_ensemble: bool | None = None,
    ) -> torch.Tensor:
        """Super-resolve ``lr`` (N,C,H,W float in [0, 1], any device) into float32 in [0, 1] on this device.

        ``tile``, ``tile_pad`` and ``self_ensemble`` override the defaults given at construction. An
        output holding NaN or infinity is a :class:`lkdn.images.NonFiniteOutputError` (a ``ValueError``).
        """
        if not isinstance(lr, torch.Tensor) or lr.ndim != 4 or not lr.is_floating_point():
            shape = tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
            raise ValueError(f"expected a float tensor of shape N,C,H,W with values in [0, 1], got {shape}")
        if lr.numel() == 0:
            raise ValueError(f"expected a float tensor of shape N,C,H,W with values in [0, 1], got an empty one of "
                             f"shape {tuple(lr.shape)}")
        finite = torch.isfinite(lr)
        if not bool(finite.all()):
            raise ValueError(f"the input holds {lr.numel() - int(finite.sum())} NaN or infinite value(s) of "
                             f"{lr.numel()}; expected values in [0, 1]")
        tile = self.tile if tile is None else tile
        tile_pad = self.tile_pad if tile_pad is None else tile_pad
        self_ensemble = self.self_ensemble if self_ensemble is None else self_ensemble
        lr = lr.to(self.device, torch.float32)
        with torch.inference_mode():
            try:
                out = run_network(self._forward, lr, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble,
                                  scale=self.scale)
            except RuntimeError as err:
                if "channels" not in str(err) or is_out_of_memory(err):
                    raise
                raise ValueError(f"an input of shape {tuple(lr.shape)} does not fit {self.network_name}: "
                                 f"{str(err).splitlines()[0]}") from err
            check_finite_output(out, self.network_name)
        # clamp outside inference mode: the caller gets an ordinary tensor it may modify in place
        return out.float().clamp(0, 1).contiguous()

    def upscale_image(
        self, image: np.ndarray, *, bgr: bool = True, alpha: str = "bicubic", tile: int | None = None,
        tile_pad: int | None = None, self_ensemble: bool | None = None,
    ) -> np.ndarray:
        """Super-resolve a numpy image (uint8/uint16/float, grey/colour, with or without alpha).

        The result has the input's dtype, channels and channel order (``bgr=True``: OpenCV's).
        ``tile``, ``tile_pad`` and ``self_ensemble`` are as in :meth:`__call__`.
        """

        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected a numpy image (H,W or H,W,C), got {type(image).__name__}")

        def forward(x: torch.Tensor) -> torch.Tensor:
            return self(x, tile=tile, tile_pad=tile_pad, self_ensemble=self_ensemble)

        return upscale_image(forward, image, device=self.device, bgr=bgr, alpha=alpha)

    def __repr__(self) -> str:
        name = self.network_name
        runtime = f", backend={self.runtime.describe()}" if self.runtime is not None else ""
        return (
            f"Upscaler({name}, scale={self.scale}, device={self.device}, precision={self.precision}{runtime}, "
            f"optimizations=[{', '.join(self.optimizations)}])"
        )


# ---------------------------------------------------------- speed-ups that are not a property of any network
#: Largest max abs difference the fold may introduce on the float32 probe output (relative beyond
#: outputs of magnitude 1: networks on a 0-255 scale, or with random weights, get the same relative check).
PROBE_TOLERANCE = 1e-4


def _probe_input(net: nn.Module, size: int = 24) -> torch.Tensor | None:
    """A small random input that ``net`` accepts (3, 1 or its first conv's channels), or None."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return None
    generator = torch.Generator().manual_seed(0)
    for channels in dict.fromkeys((3, 1, first.in_channels * first.groups)):
        x = torch.rand(1, channels, size, size, generator=generator).to(first.weight)
        try:
            with torch.inference_mode():
                net(x)
        except (RuntimeError, ValueError):
            continue
        return x
    return None


def optimize_network(
    net: nn.Module, *, reparameterize: bool = True, channels_last: bool = True, check: bool = True,
    applied: list[str] | None = None,
) -> nn.Module:
    """Return a faster copy of ``net`` in eval mode computing the same function (``net`` is not modified).

    Args:
        net: any network of this project.
        reparameterize: fold re-parameterizable branches and input replication.
        channels_last: weights in ``channels_last`` memory format (give inputs in it too).
        check: compare the folded network with ``net`` on a small random input and keep ``net``'s
            form when the output differs by more than :data:`PROBE_TOLERANCE` (relative to the
            output's magnitude beyond 1; with a warning).
        applied: a list to which the names of the steps that were applied are appended.
    """
    applied = [] if applied is None else applied
    net = copy.deepcopy(net).eval()
    foldable = bool(foldable_modules(net)) or getattr(net, "num_in", 1) > 1
    if reparameterize and foldable:
        folded = reparameterize_model(net, fold_num_in=True)
        probe = _probe_input(net) if check else None
        diff = 0.0
        if probe is not None:
            with torch.inference_mode():
                expected, got = net(probe), folded(probe)
            diff = float((expected.float() - got.float()).abs().max()) if expected.shape == got.shape else float("inf")
            diff /= max(1.0, float(expected.abs().max()))
        if diff <= PROBE_TOLERANCE:
            logger.debug("optimize: re-parameterization kept (probe max abs diff %.2e)", diff)
            net = folded
            applied.append("re-parameterization")
        else:
            logger.warning("optimize: re-parameterization dropped: it changed the output by %.3g (> %g)", diff,
                           PROBE_TOLERANCE)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    return net.eval()


class _AutocastOff(nn.Module):
    """Run ``module`` in float32 with autocast off: an overflow-prone stage inside a float16 autocast region."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.module(x.float())


def keep_float32_stages(net: nn.Module) -> int:
    """Wrap, in place, the sub-modules the architecture's contract lists in ``fp32_stages`` so that
    they run in float32 under float16 autocast (LKDN's attention stage reaches ~1e11, far past
    float16's range). Returns the number of wrapped modules."""
    stages = contract_of(net).fp32_stages
    wrapped = 0
    for module in list(net.modules()):
        for name in next((v for k, v in stages.items() if isinstance(module, k)), ()):
            child = getattr(module, name)
            if not isinstance(child, _AutocastOff):
                setattr(module, name, _AutocastOff(child))
                wrapped += 1
    return wrapped


def compile_network(net: nn.Module, *, device: torch.device) -> nn.Module:
    """``torch.compile`` for inference (inductor; weights frozen on CPU so oneDNN can prepack them).

    Compilation happens on the first call and again for every new input shape; it takes tens
    of seconds on a CPU, so it pays off only for many calls on inputs of one size.
    """
    options = {"freezing": True} if device.type == "cpu" else None
    return torch.compile(net, options=options)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_MMAP_THRESHOLD_MAX = 32 << 20  # the largest mmap threshold older glibc versions accept (64-bit)


def tune_cpu_allocator(*, keep_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system (process-wide).

    PyTorch's CPU tensors come from ``malloc``; glibc serves large blocks with ``mmap`` and gives
    them back on ``free``, so the large activations of every forward pass are page-faulted and
    zeroed anew (LKDN at 320x180 allocates dozens of 13 MB tensors per pass). Raising the mmap
    and trim thresholds keeps those pages mapped and reused, as jemalloc or tcmalloc would
    (``LD_PRELOAD``, the usual advice for PyTorch on CPUs). The cost: the process keeps its peak
    memory. Returns False (and changes nothing) where glibc's ``mallopt`` is not available.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        logger.info("tune_cpu_allocator: glibc mallopt not available; allocator left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    keep = min(int(keep_bytes), 2**31 - 1)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, keep)) or bool(mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX))
    ok = ok and bool(mallopt(_M_TRIM_THRESHOLD, keep))
    logger.info("tune_cpu_allocator: glibc keeps freed memory up to %d bytes for reuse (%s)", keep, "ok" if ok else "failed")
    return ok
