"""ncnn (CPU) on our export, converted by pnnx: ``.param`` (the graph, text) + ``.bin`` (the weights).

:func:`pnnx_convert` runs the ``pnnx`` converter (the executable of the ``pnnx`` package) on the
TorchScript trace of the deploy network (:func:`lkdn.export.torchscript_graph`), with two input
shapes so the ncnn graph stays size-agnostic. pnnx reads ONNX too, but from our ONNX graph it
cannot express ESA's resize to its input's (dynamic) size (E-RFDN, BSRN: ``layer
pnnx.Expression not exists``); from TorchScript it becomes an ncnn ``Interp`` sized by its
reference blob. ``fp16`` stores the weights as float16 in the ``.bin`` (pnnx's default; half the
size) and lets ncnn use its float16 storage and arithmetic where the CPU has them (ARM; on x86
ncnn computes in float32, so only the weight rounding changes the output); ``fp32`` stores
float32 weights and turns ncnn's float16 / bfloat16 paths off, so the output is float32 on every
CPU. ncnn runs one image at a time; a batch is run image by image.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lkdn.backends.base import BackendError, Runtime, require

PARAM_MAGIC = "7767517"
"""First line of every ncnn ``.param`` file."""
PNNX_TIMEOUT_S = 600


def _ncnn() -> Any:
    return require("ncnn", needed_for="backend 'ncnn'")


def read_param(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The input and output blob names of an ncnn ``.param`` file, after checking its structure.

    Raises:
        BackendError: the file is missing or is not a complete ncnn graph (the message names it).
    """
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise BackendError(f"cannot read the ncnn graph {path}: {err}") from err
    where = f"ncnn graph {path} is corrupted or not an ncnn .param file"
    if not lines or lines[0] != [PARAM_MAGIC]:
        raise BackendError(f"{where}: the first line is not the magic number {PARAM_MAGIC}")
    try:
        layer_count, blob_count = (int(v) for v in lines[1])
    except (IndexError, ValueError) as err:
        raise BackendError(f"{where}: the second line is not '<layer count> <blob count>'") from err
    layers = lines[2:]
    if len(layers) != layer_count:
        raise BackendError(f"{where}: it declares {layer_count} layers but has {len(layers)}")
    consumed, produced, inputs = set(), [], []
    for number, fields in enumerate(layers, start=3):
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            bottoms, tops = fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]
        except (IndexError, ValueError) as err:
            raise BackendError(f"{where}: line {number} is not '<type> <name> <inputs> <outputs> ...'") from err
        if len(bottoms) != n_in or len(tops) != n_out:
            raise BackendError(f"{where}: line {number} ({fields[1]}) lists fewer blobs than it declares")
        consumed.update(bottoms)
        produced += tops
        if fields[0] == "Input":
            inputs += tops
    outputs = [blob for blob in produced if blob not in consumed]
    if len(set(produced)) > blob_count:
        raise BackendError(f"{where}: more blobs than the {blob_count} it declares")
    if len(inputs) != 1 or len(outputs) != 1:
        raise BackendError(f"{where}: expected one Input and one output blob, found {len(inputs)} and {len(outputs)}")
    return inputs[0], outputs[0]


def pnnx_convert(graph: bytes, folder: str | os.PathLike[str], *, channels: int, fp16: bool) -> tuple[Path, Path]:
    """Convert a TorchScript trace with pnnx into ``folder/model.ncnn.param`` and ``.bin``; returns their paths.

    pnnx writes its side files (``model.pnnx.*``, its Python and ONNX re-exports) in ``folder`` too.
    """
    pnnx = require("pnnx", needed_for="backend 'ncnn' (the converter to ncnn, pnnx)")
    folder = Path(folder)
    source = folder / "model.pt"
    source.write_bytes(graph)
    param, weights = folder / "model.ncnn.param", folder / "model.ncnn.bin"
    command = [
        pnnx.EXEC_PATH, str(source), f"inputshape=[1,{channels},32,32]f32", f"inputshape2=[1,{channels},48,40]f32",
        f"fp16={int(fp16)}", f"ncnnparam={param}", f"ncnnbin={weights}", f"ncnnpy={folder / 'model_ncnn.py'}",
        f"pnnxparam={folder / 'model.pnnx.param'}", f"pnnxbin={folder / 'model.pnnx.bin'}",
        f"pnnxpy={folder / 'model_pnnx.py'}", f"pnnxonnx={folder / 'model.pnnx.onnx'}",
    ]
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BackendError(f"pnnx ({pnnx.EXEC_PATH}) could not run: {err}") from err
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise BackendError(f"pnnx failed to convert the network to ncnn (exit status {done.returncode}):\n{tail}")
    unsupported = sorted({line.split()[0] for line in param.read_text(encoding="utf-8").splitlines()
                          if line.startswith("pnnx.")})
    if unsupported:
        raise BackendError(f"pnnx left operations ncnn cannot run ({', '.join(unsupported)}) in {param.name}")
    return param, weights


class NcnnBackend(Runtime):
    """An ncnn network loaded from a ``.param`` / ``.bin`` pair.

    Args:
        param: the graph (``.param``, text).
        weights: the weights (``.bin``; default: ``param`` with the suffix ``.bin``).
        precision: ``fp32`` (ncnn's float16 / bfloat16 paths off) or ``fp16`` (ncnn's defaults).
        threads: ncnn's ``num_threads`` (default: torch's thread count).
    """

    backend: ClassVar[str] = "ncnn"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def __init__(
        self, param: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None, *,
        precision: str = "fp32", threads: int | None = None,
    ) -> None:
        super().__init__(precision=precision, threads=threads)
        ncnn = _ncnn()
        self.version = getattr(ncnn, "__version__", "?")
        param = Path(param)
        weights = param.with_suffix(".bin") if weights is None else Path(weights)
        self.input_name, self.output_name = read_param(param)
        if not weights.is_file():
            raise BackendError(f"ncnn weights {weights} not found (the .bin of {param})")
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = self.threads
        half = precision == "fp16"
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = half
        opt.use_bf16_storage = opt.use_bf16_packed = False
        if self.net.load_param(str(param)) != 0:
            raise BackendError(f"ncnn cannot parse the graph {param}: corrupted or written by another ncnn version")
        if self.net.load_model(str(weights)) != 0:
            raise BackendError(f"ncnn cannot load the weights {weights}: corrupted, truncated or not those of {param}")
        self.param, self.weights = param, weights

    @classmethod
    def from_torchscript(
        cls, graph: bytes, *, channels: int, precision: str = "fp32", threads: int | None = None,
    ) -> NcnnBackend:
        """Convert our TorchScript trace (:func:`lkdn.export.torchscript_graph`) with pnnx in a temporary folder; load it."""
        with tempfile.TemporaryDirectory(prefix="lkdn-ncnn-") as tmp:
            param, weights = pnnx_convert(graph, tmp, channels=channels, fp16=precision == "fp16")
            return cls(param, weights, precision=precision, threads=threads)

    def run(self, x: np.ndarray) -> np.ndarray:
        ncnn = _ncnn()
        outputs = []
        for image in x:
            data = np.ascontiguousarray(image, dtype=np.float32)
            view = ncnn.Mat(data)  # shares data's memory (data stays referenced until the copy)
            owned = view.clone()  # a first layer working in place (SPAN, E-RFDN: x * 255) crashes on a shared Mat
            extractor = self.net.create_extractor()
            extractor.input(self.input_name, owned)
            status, out = extractor.extract(self.output_name)
            if status != 0:
                raise BackendError(f"ncnn failed on an image of shape {tuple(image.shape)} (status {status})")
            outputs.append(np.array(out, dtype=np.float32, copy=True))
        return np.stack(outputs)

    def describe(self) -> str:
        return f"ncnn {self.version} CPU, {self.precision}, {self.threads} threads"

