"""Optimizer registry: every ``torch.optim`` optimizer by its class name, plus ``Adan``.

``type: Adan`` is ``timm.optim.Adan``, a port of the official implementation (sail-sg/Adan):
Algorithm 1 of Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models" (arXiv 2208.06677), with ``betas`` given as the official configs and the paper's
default write them, ``(0.98, 0.92, 0.99)`` (the paper's coefficients are ``1 - beta``), and the
official YAML keys ``lr, betas, eps, weight_decay, no_prox, foreach``. The package
``adan-pytorch`` takes ``1 - beta`` and starts its moments differently; it is not used.

Learning-rate schedulers by name (``train.scheduler.type``), and the linear warm-up:

* ``MultiStepLR`` / ``MultiStepRestartLR``: basicsr's ``MultiStepRestartLR`` (as basicsr maps them).
* ``CosineAnnealingRestartLR``: basicsr's.
* ``CosineAnnealingLR`` and the other ``torch.optim.lr_scheduler`` classes whose arguments are
  plain numbers and lists (``StepLR``, ``ExponentialLR``, ``OneCycleLR``, ...): torch's.

Schedulers step once per iteration (BasicSR's convention: the learning rate of iteration
``it`` is the schedule's value after ``it - 1`` steps).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from basicsr.models import lr_scheduler as basicsr_schedulers
from torch.optim import lr_scheduler as torch_schedulers

from lkdn.utils import unknown_keywords, unknown_name

_EXTRA: dict[str, Callable[[], type[torch.optim.Optimizer]]] = {}


def _timm_adan() -> type[torch.optim.Optimizer]:
    from timm.optim import Adan  # optional: only Adan needs timm

    return Adan


_EXTRA["Adan"] = _timm_adan


def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    found = {}
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            found[name] = obj
    return found


def optimizer_names() -> list[str]:
    """Every name ``train.optim_g.type`` accepts."""
    return sorted({*_torch_optimizers(), *_EXTRA})


def get_optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class registered as ``name``; a ValueError suggests the nearest name."""
    if name in _EXTRA:
        return _EXTRA[name]()
    optimizers = _torch_optimizers()
    if name not in optimizers:
        raise ValueError(unknown_name("optimizer", name, optimizer_names(), where="train.optim_g.type"))
    return optimizers[name]


def _check_arguments(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    for key, problem in unknown_keywords(cls, kwargs, skip=("params",)):
        extra = " (clip gradients with train.grad_clip)" if key == "max_grad_norm" else ""
        raise ValueError(f"{where}.{key}: {problem}{extra}")


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], opt: Mapping[str, Any], *,
    where: str = "train.optim_g",
) -> torch.optim.Optimizer:
    """Build the optimizer ``opt['type']`` with the other keys of ``opt`` as arguments (``opt`` is not modified)."""
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (e.g. Adan or Adam)")
    cls = get_optimizer_class(opt["type"])
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    _check_arguments(cls, kwargs, where)
    for key in ("betas",):  # YAML lists -> tuples, as the optimizers document
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} ({opt['type']}): {err}") from err


# ----------------------------------------------------------------------------------- schedulers


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


def get_scheduler_class(name: str) -> type:
    """The scheduler class registered as ``name``; a ValueError suggests the nearest name."""
    registry = _registry()
    if name not in registry:
        raise ValueError(unknown_name("scheduler", name, registry, where="train.scheduler.type"))
    return registry[name]


def build_scheduler(
    optimizer: torch.optim.Optimizer, opt: Mapping[str, Any], *, where: str = "train.scheduler"
) -> Any:
    """Build the scheduler ``opt['type']`` for ``optimizer`` (``opt`` is not modified)."""
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (e.g. MultiStepLR or CosineAnnealingRestartLR)")
    cls = get_scheduler_class(opt["type"])
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    for key, problem in unknown_keywords(cls, kwargs, skip=("optimizer", "last_epoch", "verbose")):
        raise ValueError(f"{where}.{key}: {problem}")
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
