"""Best validation results per metric and validation set (scoring itself is :func:`lkdn.evaluate.evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MetricOptions = Mapping[str, Mapping[str, Any]]


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
