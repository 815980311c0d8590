"""Build a network from validated options and load its weights: the one way every entry point does it.

Training (fine-tuning), ``lkdn/test.py``, :class:`lkdn.Upscaler`, ONNX export,
re-parameterization, conversion, ``scripts/inference.py`` and the benchmarks all call
:func:`load_network_from_options`, so each key means one thing everywhere:

* ``path.pretrain_network_g``: the weights (``.pth``/``.pt`` or ``.safetensors``; a ``weights``
  argument replaces it); a published checkpoint that is not at that path is taken from the
  reference lookup order, or downloaded on first use (:func:`lkdn.zoo.resolve_weights`);
* ``path.param_key_g``: the entry of a BasicSR checkpoint to load: the named key, else
  ``params_ema``, then ``params`` (:func:`lkdn.utils.checkpoint.extract_state_dict`);
* ``path.strict_load_g``: strict (every key and shape must match) unless it is ``false``;
  ``~`` and absent mean strict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lkdn.archs import build_network
from lkdn.utils.checkpoint import CheckpointError, load_network
from lkdn.zoo import DownloadError, resolve_weights

logger = logging.getLogger(__name__)


def strict_loading(paths: Mapping[str, Any]) -> bool:
    """``path.strict_load_g``: True unless it is ``false``."""
    return paths.get("strict_load_g") is not False


def weights_file(opt: Mapping[str, Any], weights: str | os.PathLike[str] | None = None) -> Path:
    """``weights``, else ``path.pretrain_network_g``, resolved by :func:`lkdn.zoo.resolve_weights`.

    A ValueError says how to give weights when none are named; a
    :class:`lkdn.utils.checkpoint.CheckpointError` says what to download when a published
    checkpoint is missing and cannot be fetched.
    """
    source = weights if weights is not None else (opt.get("path") or {}).get("pretrain_network_g")
    if not source:
        where = f"{opt.source}: " if hasattr(opt, "source") else ""
        raise ValueError(
            f"{where}no weights: set path.pretrain_network_g in the options or pass the weights file "
            "(the published checkpoints: python scripts/download.py --list)"
        )
    try:
        return resolve_weights(source)
    except DownloadError as err:
        raise CheckpointError(str(err)) from err


def load_network_from_options(
    opt: Mapping[str, Any], *, weights: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu",
) -> nn.Module:
    """Build ``opt['network_g']``, load its weights (see the module docstring) and return it in eval mode on ``device``.

    A missing file, a file that could run code, or weights that do not fit are a
    :class:`lkdn.utils.checkpoint.CheckpointError` naming the file and what differs.
    """
    if "network_g" not in opt:
        raise ValueError("options: missing key 'network_g'")
    where = f"{opt.source}: network_g" if hasattr(opt, "source") else "network_g"
    net = build_network(opt["network_g"], where=where)
    return load_weights_from_options(net, opt, weights=weights).eval().to(device)


def load_weights_from_options(
    net: nn.Module, opt: Mapping[str, Any], *, weights: str | os.PathLike[str] | None = None,
    param_key: str | None = None,
) -> nn.Module:
    """Load the weights the options name into the built ``net`` (in place; returned), with the rules above.

    ``param_key`` replaces ``path.param_key_g`` (training loads its EMA network with ``params_ema``).
    """
    paths = opt.get("path") or {}
    source = weights_file(opt, weights)
    key = param_key if param_key is not None else paths.get("param_key_g") or None
    if not source.exists():
        raise CheckpointError(
            f"checkpoint not found: {source}; point path.pretrain_network_g at your weights, or fetch a published "
            "checkpoint with python scripts/download.py --names <name> (--list shows them)"
        )
    load_network(net, source, param_key=key, strict=strict_loading(paths))
    logger.info("loaded %s (%s) into %s", source, key or "params_ema, else params", type(net).__name__)
    return net
