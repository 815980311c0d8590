"""``backend="auto"``: the fastest verified backend, measured on the first call at the input's size.

:class:`AutoBackend` holds verified candidates (forwards of the same network in several
runtimes). On its first call it times every candidate on that call's input (a tile, when the
Upscaler tiles: what the runtime will really see), interleaved over :data:`ROUNDS` rounds after
one untimed run at that size (first-call and new-shape set-up: OpenVINO re-plans a dynamic
graph for each new shape), keeps the fastest (the minimum of its rounds) and logs the choice
with every measured time. Candidates slower than :data:`DROP_FACTOR` times the best after the
first round are not timed again. When the input is not larger than :data:`MAX_PROBE_PIXELS`, the chosen
candidate's own output of the timing runs is returned (the measurement costs the other
candidates' runs only); larger inputs are timed on a centre crop of that many pixels. The
other candidates are released once the choice is made.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

import torch

logger = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]

ROUNDS = 3
"""Timed runs per candidate (interleaved); the minimum counts."""
DROP_FACTOR = 1.5
"""After the first round, candidates slower than this times the fastest are not timed again."""
PAUSE_S = 0.05
"""Idle time before each timed run: the thread pool of the runtime that ran last (OpenMP, TBB, onnxruntime
spin-wait for a while after their work) must not compete with the next candidate."""
MAX_PROBE_PIXELS = 640 * 360
"""Inputs with more LR pixels are timed on a centre crop of about this many pixels."""


def _probe(x: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height * width <= MAX_PROBE_PIXELS:
        return x
    factor = math.sqrt(MAX_PROBE_PIXELS / (height * width))
    h, w = max(int(height * factor), 1), max(int(width * factor), 1)
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top:top + h, left:left + w].contiguous()


class AutoBackend:
    """Choose among ``candidates`` (name -> forward) on the first call; then run the chosen one.

    Args:
        candidates: verified forwards of one network (all take and return N,C,H,W float32).
        label: how the choice is introduced in the log (the network and precision).
    """

    def __init__(self, candidates: Mapping[str, Forward], *, label: str = "auto", threads: int | None = None) -> None:
        if not candidates:
            raise ValueError("backend 'auto' needs at least one candidate")
        # runtimes run unclamped, as the torch network does: the caller (lkdn.Upscaler) clamps once, after the
        # self-ensemble's average
        self.candidates = {name: getattr(forward, "raw", forward) for name, forward in candidates.items()}
        self.label = label
        self.threads = threads or torch.get_num_threads()
        self.chosen: str | None = None
        self.times_ms: dict[str, float] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.chosen is None:
            return self.choose(x)
        return self.candidates[self.chosen](x)

    def choose(self, x: torch.Tensor) -> torch.Tensor:
        """Time every candidate on ``x`` (or its centre crop), keep the fastest, return its output on ``x``."""
        probe = _probe(x)
        names = list(self.candidates)
        if len(names) == 1:
            self.chosen = names[0]
            logger.info("%s: %s is the only candidate", self.label, self.chosen)
            return self.candidates[self.chosen](x)
        outputs = {name: self.candidates[name](probe) for name in names}  # untimed: set-up at this size
        times: dict[str, list[float]] = {name: [] for name in names}
        active = names
        for r in range(ROUNDS):
            for name in active[r % len(active):] + active[:r % len(active)]:
                time.sleep(PAUSE_S)
                start = time.perf_counter()
                outputs[name] = self.candidates[name](probe)
                times[name].append((time.perf_counter() - start) * 1e3)
            best = min(min(t) for t in times.values() if t)
            active = [n for n in active if min(times[n]) <= DROP_FACTOR * best]
        self.times_ms = {name: min(t) for name, t in times.items()}
        self.chosen = min(self.times_ms, key=self.times_ms.__getitem__)
        ranked = sorted(self.times_ms, key=self.times_ms.__getitem__)
        where = "" if probe is x else f" (centre crop of {tuple(x.shape)})"
        logger.info(
            "%s: chose %s, the fastest at %s%s, %d threads: %s (best of up to %d runs each, after one untimed run)",
            self.label, self.chosen, tuple(probe.shape), where, self.threads,
            ", ".join(f"{n} {self.times_ms[n]:.1f} ms" for n in ranked), ROUNDS,
        )
        output = outputs[self.chosen] if probe is x else self.candidates[self.chosen](x)
        self.candidates = {self.chosen: self.candidates[self.chosen]}  # release the other runtimes
        return output

    def describe(self) -> str:
        if self.chosen is None:
            return f"auto (not chosen yet among {', '.join(self.candidates)})"
        return f"auto: {self.chosen} ({', '.join(f'{n} {t:.0f} ms' for n, t in self.times_ms.items())})"
