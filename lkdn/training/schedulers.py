"""Learning-rate schedulers by name (``train.scheduler.type``) and the linear warm-up.

* ``MultiStepLR`` / ``MultiStepRestartLR``: basicsr's ``MultiStepRestartLR`` (as basicsr maps them).
* ``CosineAnnealingRestartLR``: basicsr's.
* ``CosineAnnealingLR`` and the other ``torch.optim.lr_scheduler`` classes whose arguments are
  plain numbers and lists (``StepLR``, ``ExponentialLR``, ``OneCycleLR``, ...): torch's.

Schedulers step once per iteration (BasicSR's convention: the learning rate of iteration
``it`` is the schedule's value after ``it - 1`` steps).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from basicsr.models import lr_scheduler as basicsr_schedulers
from torch.optim import lr_scheduler as torch_schedulers

# torch schedulers that need callables, other schedulers or a metric: not expressible in YAML.
_UNSUPPORTED = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau", "LRScheduler"}


def _registry() -> dict[str, type]:
    found: dict[str, type] = {}
    for name in dir(torch_schedulers):
        obj = getattr(torch_schedulers, name)
        if (inspect.isclass(obj) and issubclass(obj, torch_schedulers.LRScheduler) and not name.startswith("_")
                and name not in _UNSUPPORTED):
            found[name] = obj
    found["MultiStepLR"] = basicsr_schedulers.MultiStepRestartLR
    found["MultiStepRestartLR"] = basicsr_schedulers.MultiStepRestartLR
    found["CosineAnnealingRestartLR"] = basicsr_schedulers.CosineAnnealingRestartLR
    return found


def scheduler_names() -> list[str]:
    """Every name ``train.scheduler.type`` accepts."""
    return sorted(_registry())


def get_scheduler_class(name: str) -> type:
    """The scheduler class registered as ``name``; a ValueError suggests the nearest name."""
    registry = _registry()
    if name not in registry:
        match = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ValueError(f"train.scheduler.type: unknown scheduler {name!r}{hint} (known: {', '.join(sorted(registry))})")
    return registry[name]


def build_scheduler(
    optimizer: torch.optim.Optimizer, opt: Mapping[str, Any], *, where: str = "train.scheduler"
) -> Any:
    """Build the scheduler ``opt['type']`` for ``optimizer`` (``opt`` is not modified)."""
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (e.g. MultiStepLR or CosineAnnealingRestartLR)")
    cls = get_scheduler_class(opt["type"])
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    params = inspect.signature(cls).parameters
    valid = [k for k, p in params.items() if k not in ("optimizer", "last_epoch", "verbose")]
    for key in kwargs:
        if key not in valid:
            match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean {match[0]!r}?" if match else ""
            raise ValueError(f"{where}.{key}: unknown argument of {opt['type']}{hint} (valid: {', '.join(valid)})")
    for key in ("milestones", "periods", "restarts", "restart_weights"):
        if key in kwargs and isinstance(kwargs[key], list | tuple):
            kwargs[key] = [int(v) if key != "restart_weights" else float(v) for v in kwargs[key]]
    for key in ("T_max", "step_size", "total_steps", "T_0"):
        if isinstance(kwargs.get(key), float):
            kwargs[key] = int(kwargs[key])
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(f"{where} ({opt['type']}): {err}") from err


def warmup_factor(current_iter: int, warmup_iter: int | float | None) -> float:
    """Linear warm-up: ``current_iter / warmup_iter`` while ``current_iter < warmup_iter``, else 1."""
    if warmup_iter is None or warmup_iter <= 0 or current_iter >= warmup_iter:
        return 1.0
    return current_iter / warmup_iter
