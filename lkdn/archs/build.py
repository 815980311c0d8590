"""Build a network from its ``network_g`` options, with errors that name the key at fault.

``network_g`` holds ``type`` (a registered architecture of this project) and the constructor's
keyword arguments, as in BasicSR, plus one key of this framework:

* ``reparameterized: true``: the deploy form of an architecture without explicit deploy
  options: the network is built as configured and every module with ``fuse()`` is folded
  (:func:`lkdn.reparam.reparameterize_model`), so the deploy checkpoint that
  ``scripts/reparameterize.py`` wrote loads into it strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from lkdn.archs.contract import ArchContract, contract
from lkdn.utils.names import did_you_mean

FRAMEWORK_KEYS = {
    "type": "the registered architecture",
    "reparameterized": "true: build the configured form, then fold every fuse() module (a deploy form)",
}


def network_kwargs(opt: Mapping[str, Any], *, where: str = "network_g") -> tuple[ArchContract, dict[str, Any]]:
    """The contract of ``opt['type']`` and the constructor's keyword arguments (the options are not modified).

    Unknown ``type`` values and unknown keys raise a ``ValueError`` that names the key (prefixed
    by ``where``) and the nearest valid one.
    """
    if not isinstance(opt, Mapping):
        raise ValueError(f"{where}: expected a mapping with 'type' and the network's arguments, got {type(opt).__name__}")
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (the registered network name, e.g. LKDN)")
    entry = contract(opt["type"], where=f"{where}.type")
    kwargs = {k: v for k, v in opt.items() if k not in FRAMEWORK_KEYS}
    valid = list(entry.parameters())
    for key in kwargs:
        if key not in valid:
            raise ValueError(
                f"{where}.{key}: unknown option for {entry.name}{did_you_mean(key, valid + list(FRAMEWORK_KEYS))} "
                f"(valid: {', '.join(valid)})"
            )
    reparameterized = opt.get("reparameterized", False)
    if not isinstance(reparameterized, bool):
        raise ValueError(f"{where}.reparameterized: expected true or false, got {reparameterized!r}")
    return entry, kwargs


def build_network(opt: Mapping[str, Any], *, where: str = "network_g") -> nn.Module:
    """Build the registered network named by ``opt['type']`` with the other keys as arguments."""
    entry, kwargs = network_kwargs(opt, where=where)
    try:
        net = entry.factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} ({entry.name}): {err}") from err
    if opt.get("reparameterized"):
        from lkdn.reparam import reparameterize_model

        net = reparameterize_model(net, inplace=True)
    return net
