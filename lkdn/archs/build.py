"""Build a network from its ``network_g`` options, with errors that name the key at fault."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


def _nearest(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def network_kwargs(opt: Mapping[str, Any], *, where: str = "network_g") -> tuple[Any, dict[str, Any]]:
    """Return the registered network callable and its keyword arguments for ``opt``.

    The options are not modified. Unknown ``type`` values and unknown keys raise a
    ``ValueError`` that names the key (prefixed by ``where``) and the nearest valid one.
    """
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (the registered network name, e.g. LKDN)")
    name = opt["type"]
    names = sorted(ARCH_REGISTRY._obj_map)  # basicsr's Registry keeps its map here
    if name not in names:
        raise ValueError(f"{where}.type: unknown network {name!r}{_nearest(str(name), names)} (known: {', '.join(names)})")
    factory = ARCH_REGISTRY.get(name)
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for key in kwargs:
            if key not in valid:
                raise ValueError(
                    f"{where}.{key}: unknown option for {name}{_nearest(key, valid)} (valid: {', '.join(valid)})"
                )
    return factory, kwargs


def build_network(opt: Mapping[str, Any], *, where: str = "network_g") -> nn.Module:
    """Build the registered network named by ``opt['type']`` with the other keys as arguments."""
    factory, kwargs = network_kwargs(opt, where=where)
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} ({opt['type']}): {err}") from err
