"""What the OpenVINO and ncnn exports share: verify the runtime's own files, score Set5, then write.

Both exports start from our export of the deploy network (OpenVINO: :func:`lkdn.deploy.onnx_graph`;
ncnn: :func:`lkdn.deploy.torchscript_graph`, converted by pnnx), write the runtime's files
into a temporary folder, **load those files with the runtime itself**, and compare its output with
the float32 PyTorch network on a random batch at odd sizes and on the check images (tolerances:
:data:`lkdn.backends.base.TOLERANCES`). When Set5 is found at the network's scale
(:func:`lkdn.zoo.find_benchmark`), the precision loss is also measured as Set5 PSNR/SSIM (Y channel,
crop = scale) through the runtime against PyTorch. Only when every check passes are the files
written, each atomically (:func:`lkdn.utils.write_atomic`), weights first, so a graph file
never points at missing weights; otherwise :class:`lkdn.backends.base.BackendError` and nothing is
written. Both formats keep their weights in ``<name>.bin``, so an export whose ``.bin`` belongs to
the other format's graph beside it (``x.xml`` and ``x.param``) is refused.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lkdn.backends.base import TOLERANCES, BackendError, Check, Runtime, Tolerance, verify
from lkdn.deploy import image_tensor
from lkdn.evaluate import evaluate_folder
from lkdn.utils import write_atomic
from lkdn.zoo import find_benchmark

logger = logging.getLogger(__name__)


@dataclass
class Set5Score:
    """Set5 means through the runtime and through PyTorch float32, and the largest per-image PSNR gap."""

    psnr: float
    ssim: float
    reference_psnr: float
    reference_ssim: float
    largest_gap: float

    def describe(self) -> str:
        return (
            f"Set5 PSNR/SSIM (Y) {self.psnr:.4f}/{self.ssim:.4f} against PyTorch float32 "
            f"{self.reference_psnr:.4f}/{self.reference_ssim:.4f} ({self.psnr - self.reference_psnr:+.4f} dB; "
            f"largest per-image gap {self.largest_gap:.4f} dB)"
        )


@dataclass
class FileExportReport:
    """What :func:`lkdn.export.export_openvino` or :func:`lkdn.export.export_ncnn` wrote and how it was verified."""

    files: list[Path]
    runtime: str
    precision: str
    tolerance: Tolerance
    checks: list[Check] = field(default_factory=list)
    set5: Set5Score | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for logs and scripts."""
        lines = [f"wrote {', '.join(str(p) for p in self.files)} ({self.runtime}, {self.precision})"]
        lines += [f"  {c.describe()} (tolerance {self.tolerance.describe()})" for c in self.checks]
        lines.append(f"  {self.set5.describe()}" if self.set5 else "  Set5 not found: no PSNR check")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def image_inputs(images: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, torch.Tensor]]:
    """``(name, uint8 BGR image)`` pairs as ``(name, 1x3xHxW RGB tensor in [0, 1])``."""
    return [(name, image_tensor(image)) for name, image in images]


def set5_score(runtime: Runtime, reference: nn.Module, scale: int) -> Set5Score | None:
    """Set5 PSNR/SSIM through ``runtime`` and ``reference`` (None when Set5 at ``scale`` is not found)."""
    found = find_benchmark("Set5", scale)
    if found is None:
        return None
    hr, lr = found
    with torch.no_grad():
        ours = evaluate_folder(reference, hr, lr, scale=scale)
        got = evaluate_folder(runtime, hr, lr, scale=scale)
    return Set5Score(
        psnr=float(np.mean([m["psnr"] for m in got.values()])), ssim=float(np.mean([m["ssim"] for m in got.values()])),
        reference_psnr=float(np.mean([m["psnr"] for m in ours.values()])),
        reference_ssim=float(np.mean([m["ssim"] for m in ours.values()])),
        largest_gap=max(abs(got[k]["psnr"] - ours[k]["psnr"]) for k in ours),
    )


def finish(
    runtime: Runtime, net: nn.Module, files: Mapping[Path, Path], *, precision: str, inputs: list[tuple[str, torch.Tensor]],
    scale: int | None, what: str,
) -> FileExportReport:
    """Verify the runtime that loaded the temporary files, score Set5, then move the files (weights first)."""
    tolerance = TOLERANCES[(runtime.backend, precision)]
    targets = ", ".join(str(t) for t in files.values())
    try:
        checks = verify(runtime.raw, net, inputs, tolerance, what=what)
    except BackendError as err:
        raise BackendError(f"refusing to write {targets}: {err}") from err
    report = FileExportReport(files=list(files.values()), runtime=runtime.describe(), precision=precision,
                              tolerance=tolerance, checks=checks)
    if scale is not None:
        report.set5 = set5_score(runtime, net, scale)
    for source, target in files.items():
        write_atomic(target, source.read_bytes())
        logger.info("wrote %s (%d bytes)", target, target.stat().st_size)
    return report


def refuse_shared_weights(path: Path, other_suffix: str, other_format: str) -> None:
    """A :class:`BackendError` when the ``.bin`` of ``path`` also belongs to the ``other_format`` graph beside it.

    An OpenVINO IR ``x.xml`` and an ncnn graph ``x.param`` both keep their weights in ``x.bin``:
    writing one would silently break the other.
    """
    sibling = path.with_suffix(other_suffix)
    if sibling.exists():
        raise BackendError(
            f"{path.with_suffix('.bin')} is the weights file of the {other_format} {sibling}: writing {path} "
            "would replace it; choose another output name (or remove both files first)"
        )


def float32_reference(net: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode (the caller's network keeps its device, dtype and mode)."""
    return copy.deepcopy(net).float().cpu().eval()
