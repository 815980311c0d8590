"""Optimizer registry: every ``torch.optim`` optimizer by its class name, plus ``Adan``.

``type: Adan`` is ``timm.optim.Adan``, a port of the official implementation (sail-sg/Adan):
Algorithm 1 of Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models" (arXiv 2208.06677), with ``betas`` given as the official configs and the paper's
default write them, ``(0.98, 0.92, 0.99)`` (the paper's coefficients are ``1 - beta``), and the
official YAML keys ``lr, betas, eps, weight_decay, no_prox, foreach``. The package
``adan-pytorch`` takes ``1 - beta`` and starts its moments differently; it is not used.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

_EXTRA: dict[str, Callable[[], type[torch.optim.Optimizer]]] = {}


def _timm_adan() -> type[torch.optim.Optimizer]:
    from timm.optim import Adan

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
        match = difflib.get_close_matches(str(name), optimizer_names(), n=1, cutoff=0.5)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ValueError(f"train.optim_g.type: unknown optimizer {name!r}{hint} (known: {', '.join(optimizer_names())})")
    return optimizers[name]


def _check_arguments(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    params = inspect.signature(cls).parameters
    valid = [k for k, p in params.items() if k != "params" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in valid:
            match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean {match[0]!r}?" if match else ""
            extra = "; clip gradients with train.grad_clip" if key == "max_grad_norm" else ""
            raise ValueError(f"{where}.{key}: unknown argument of {cls.__name__}{hint}{extra} (valid: {', '.join(valid)})")


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
