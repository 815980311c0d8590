"""``lkdn/train.py`` whose loss is NaN on rank 1 at the iterations listed in ``LKDN_NAN_ITERS`` (a test helper,
launched by torchrun in tests/reliability/test_crash_resume.py)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lkdn  # noqa: E402,F401 (registers)
from lkdn.models.sr_model import SRModel  # noqa: E402
from lkdn.training.pipeline import train_pipeline  # noqa: E402

BAD = {int(i) for i in os.environ.get("LKDN_NAN_ITERS", "").split(",") if i}
_losses, _step = SRModel._losses, SRModel.optimize_parameters
_current = {"iter": 0}


def _step_with_iter(self: SRModel, current_iter: int) -> None:
    _current["iter"] = current_iter
    _step(self, current_iter)


def _losses_nan_on_rank_1(self: SRModel, output):
    total, parts = _losses(self, output)
    if os.environ.get("RANK") == "1" and _current["iter"] in BAD:
        total, parts = total * math.nan, {k: v * math.nan for k, v in parts.items()}
    return total, parts


SRModel.optimize_parameters = _step_with_iter
SRModel._losses = _losses_nan_on_rank_1

if __name__ == "__main__":
    sys.exit(train_pipeline())
