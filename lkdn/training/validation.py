"""Validation during training: PSNR/SSIM with basicsr's metric functions and the YAML options.

Each image is super-resolved, both images go through basicsr's ``tensor2img`` (clamp to [0, 1],
round to uint8) and each ``val.metrics.<name>`` entry is evaluated by
``basicsr.metrics.calculate_metric`` with its options (``type``, ``crop_border``,
``test_y_channel``...), exactly as BasicSR's ``SRModel.nondist_validation`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import imwrite, tensor2img
from torch.utils.data import DataLoader
from tqdm import tqdm

MetricOptions = Mapping[str, Mapping[str, Any]]


@torch.no_grad()
def validate(
    forward: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, *, metrics: MetricOptions | None,
    device: torch.device, current_iter: int, save_dir: str | Path | None = None, pbar: bool = False,
) -> dict[str, float]:
    """Average metrics of ``forward`` (LR batch -> SR batch) over ``loader``.

    Args:
        forward: the network in evaluation mode.
        loader: a validation loader (batch 1) yielding ``lq``, ``gt`` and ``lq_path``.
        metrics: ``val.metrics`` (name -> options); None computes nothing.
        device: where ``forward`` runs.
        current_iter: names saved images ``<save_dir>/<image>/<image>_<iter>.png``.
        save_dir: folder for SR images, or None.
        pbar: show a progress bar.
    """
    totals = {name: 0.0 for name in (metrics or {})}
    count = 0
    for data in tqdm(loader, unit="image", disable=not pbar, desc="validation"):
        output = forward(data["lq"].to(device)).detach().float().cpu()
        sr = tensor2img([output])
        if save_dir is not None:
            stem = Path(data["lq_path"][0]).stem
            imwrite(sr, str(Path(save_dir) / stem / f"{stem}_{current_iter}.png"))
        if metrics:
            if "gt" not in data:
                raise ValueError(f"validation set {loader.dataset.opt.get('name')}: metrics need ground-truth images")
            gt = tensor2img([data["gt"]])
            for name, metric_opt in metrics.items():
                totals[name] += float(calculate_metric({"img": sr, "img2": gt}, metric_opt))
        count += 1
    if count == 0:
        raise ValueError("validation set is empty")
    return {name: total / count for name, total in totals.items()}


class BestMetrics:
    """Best value and iteration of each metric per validation set (BasicSR's rule: ties update)."""

    def __init__(self, metrics: MetricOptions | None) -> None:
        self.better = {name: opt.get("better", "higher") for name, opt in (metrics or {}).items()}
        for name, better in self.better.items():
            if better not in ("higher", "lower"):
                raise ValueError(f"val.metrics.{name}.better: expected higher or lower, got {better!r}")
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    def update(self, dataset: str, values: Mapping[str, float], current_iter: int) -> dict[str, dict[str, Any]]:
        record = self.results.setdefault(dataset, {})
        for name, value in values.items():
            higher = self.better[name] == "higher"
            best = record.setdefault(name, {"val": float("-inf") if higher else float("inf"), "iter": -1})
            if (value >= best["val"]) if higher else (value <= best["val"]):
                best.update(val=float(value), iter=int(current_iter))
        return record

    def state_dict(self) -> dict[str, Any]:
        return {d: {m: dict(v) for m, v in r.items()} for d, r in self.results.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.results = {d: {m: dict(v) for m, v in r.items()} for d, r in state.items()}
