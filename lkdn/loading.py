"""Build a network from validated options and load its weights: the one way every entry point does it.

Training (fine-tuning), ``lkdn/test.py``, :class:`lkdn.Upscaler`, ONNX export,
re-parameterization, conversion, ``lkdn-infer`` and the benchmarks all call
:func:`load_network_from_options`, so each key means one thing everywhere:

* ``path.pretrain_network_g``: the weights (``.pth``/``.pt`` or ``.safetensors``; a ``weights``
  argument replaces it); a published checkpoint that is not at that path is taken from the
  reference lookup order, or downloaded on first use (:func:`lkdn.zoo.resolve_weights`);
* ``path.param_key_g``: the entry of a BasicSR checkpoint to load: the named key, else
  ``params_ema``, then ``params`` (:func:`lkdn.checkpoint.extract_state_dict`);
* ``path.strict_load_g``: strict (every key and shape must match) unless it is ``false``;
  ``~`` and absent mean strict.

It also holds what joins checkpoint files (:mod:`lkdn.checkpoint`) to architectures
(:mod:`lkdn.archs`):

* :func:`load_network` loads a file into a built network and, on a mismatch, lists missing and
  unexpected keys and differing shapes, and names the network options to check
  (:func:`options_hint`); tensors whose dtype cannot hold the parameters' values are refused.
* :func:`save_network_file` writes self-describing ``.safetensors`` files (metadata
  ``{"lkdn_format": "1", "network_g": <JSON options>, "scale": "<int>"}``), read back by
  :func:`read_metadata` and :func:`network_from_file`. Metadata is data from the file, so it
  may name only this project's architectures, and their arguments are checked against the
  tensors' shapes on the ``meta`` device (nothing allocated) before the network is built.
* :func:`deploy_form` folds a network (:func:`lkdn.reparam.reparameterize_model`) and gives the
  ``network_g`` options that build the folded network.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from lkdn.archs import build_network
from lkdn.archs.build import short_number
from lkdn.archs.contract import contract_of, deploy_options, foldable_modules
from lkdn.checkpoint import (
    SAFETENSORS_SUFFIX,
    CheckpointError,
    check_dtypes,
    is_state_dict,
    load_state_dict,
    mismatch_report,
    save_file,
)
from lkdn.reparam import reparameterize_model
from lkdn.zoo import DownloadError, resolve_weights

logger = logging.getLogger(__name__)


def strict_loading(paths: Mapping[str, Any]) -> bool:
    """``path.strict_load_g``: True unless it is ``false``."""
    return paths.get("strict_load_g") is not False


def weights_file(opt: Mapping[str, Any], weights: str | os.PathLike[str] | None = None) -> Path:
    """``weights``, else ``path.pretrain_network_g``, resolved by :func:`lkdn.zoo.resolve_weights`.

    A ValueError says how to give weights when none are named; a
    :class:`lkdn.checkpoint.CheckpointError` says what to download when a published
    checkpoint is missing and cannot be fetched.
    """
    source = weights if weights is not None else (opt.get("path") or {}).get("pretrain_network_g")
    if not source:
        where = f"{opt.source}: " if hasattr(opt, "source") else ""
        raise ValueError(
            f"{where}no weights: set path.pretrain_network_g in the options or pass the weights file "
            "(the published checkpoints: lkdn-download --list)"
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
    :class:`lkdn.checkpoint.CheckpointError` naming the file and what differs.
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
            "checkpoint with lkdn-download --names <name> (--list shows them)"
        )
    load_network(net, source, param_key=key, strict=strict_loading(paths))
    logger.info("loaded %s (%s) into %s", source, key or "params_ema, else params", type(net).__name__)
    return net


# --- weights into a network ------------------------------------------------------------------


def options_hint(net: nn.Module) -> str:
    """What to check when weights do not fit ``net``: the options of its architecture."""
    entry = contract_of(net)
    options = ", ".join(entry.parameters())
    return (f"check network_g ({entry.name}: {options}) against the checkpoint; a training-form checkpoint needs "
            "the training-form options, a deploy-form one the options lkdn-reparam wrote")


def does_not_fit(path: str | os.PathLike[str], net: nn.Module, report: str) -> CheckpointError:
    """The one message for weights that do not fit a network: what differs and which options to check."""
    return CheckpointError(f"{path} does not fit {type(net).__name__}:\n{report}\nHint: {options_hint(net)}")


def load_network(
    net: nn.Module, path: str | os.PathLike[str], *, param_key: str | None = None, strict: bool = True
) -> nn.Module:
    """Load weights from ``path`` into ``net`` (in place) and return ``net``.

    With ``strict=True`` any missing or unexpected key or differing shape is a
    :class:`CheckpointError` listing them. With ``strict=False`` keys whose shapes fit are
    loaded and the rest is logged.
    """
    state = load_state_dict(path, param_key=param_key)
    check_dtypes(path, net, state)
    report = mismatch_report(net, state)
    if report and strict:
        raise does_not_fit(path, net, report)
    if report:
        logger.warning("loading %s non-strictly:\n%s", path, report)
        own = net.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(state, strict=strict)
    return net


# --- self-describing network files (safetensors metadata) ----------------------------------

LKDN_FORMAT = "1"
"""Version of the metadata written by :func:`save_network_file`."""
MAX_OPTION_INT = 2**31 - 1
"""The largest magnitude of an integer network option read from a file's metadata."""


def network_metadata(network_opt: Mapping[str, Any], *, scale: int | None = None) -> dict[str, str]:
    """The safetensors metadata that describes a network: ``lkdn_format``, ``network_g`` (JSON), ``scale``.

    ``scale`` defaults to ``network_opt['upscale']``, else the ``upscale`` of the network the
    options build.
    """
    if "type" not in network_opt:
        raise CheckpointError(f"network options need a 'type' (the registered network name); got {dict(network_opt)}")
    if scale is None:
        scale = network_opt.get("upscale")
    if scale is None:
        scale = getattr(build_network(network_opt), "upscale", None)
    if scale is None:
        raise CheckpointError(f"cannot tell the scale of {network_opt['type']}: pass scale= or set 'upscale'")
    return {"lkdn_format": LKDN_FORMAT, "network_g": json.dumps(dict(network_opt)), "scale": str(int(scale))}


def save_network_file(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], network_opt: Mapping[str, Any],
    *, scale: int | None = None, extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save network weights atomically: ``.safetensors`` with :func:`network_metadata`, else ``{'params': ...}``.

    Args:
        state_dict: a flat state dict (names to tensors).
        path: ``.safetensors`` (self-describing: options and scale in the metadata) or
            ``.pth`` (a BasicSR checkpoint ``{'params': state_dict}``).
        network_opt: the ``network_g`` options that build the network these weights fit.
        scale: the upscaling factor (default: from the options).
        extra_metadata: more string entries for the ``.safetensors`` metadata (e.g. ``iter``);
            they cannot replace the entries of :func:`network_metadata`.
    """
    if not is_state_dict(state_dict):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors, got {type(state_dict).__name__}")
    metadata = {**{k: str(v) for k, v in (extra_metadata or {}).items()}, **network_metadata(network_opt, scale=scale)}
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        return save_file(dict(state_dict), path, metadata=metadata)
    return save_file({"params": {k: v.detach().cpu() for k, v in state_dict.items()}}, path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` file, with ``network_g`` parsed back to a dict and ``scale`` an int.

    Files without metadata (and ``.pth`` files, which carry none) give ``{}``; metadata written by a
    newer, unknown ``lkdn_format`` is a :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix != SAFETENSORS_SUFFIX:
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata: dict[str, Any] = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if "lkdn_format" in metadata and metadata["lkdn_format"] != LKDN_FORMAT:
        raise CheckpointError(
            f"{path}: lkdn_format {metadata['lkdn_format']!r} is not supported (this version reads {LKDN_FORMAT!r})"
        )
    if "network_g" in metadata:
        try:
            network_g = json.loads(metadata["network_g"])
        except (ValueError, RecursionError) as err:  # JSONDecodeError, or an integer beyond Python's digit limit
            raise CheckpointError(f"{path}: metadata 'network_g' is not valid JSON options ({str(err)[:200]})") from err
        if not isinstance(network_g, dict) or not all(
            isinstance(v, str | int | float | bool | type(None)) for v in network_g.values()
        ):
            raise CheckpointError(f"{path}: metadata 'network_g' must be a flat mapping of network options")
        for key, value in network_g.items():
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OPTION_INT:
                raise CheckpointError(f"{path}: metadata network_g.{key}: {short_number(value)} is out of range "
                                      f"(network options are integers from -{MAX_OPTION_INT} to {MAX_OPTION_INT})")
        metadata["network_g"] = network_g
    if "scale" in metadata:
        text = metadata["scale"]
        if not re.fullmatch(r"\s*[+-]?\d{1,9}\s*", text) or int(text) < 1:
            shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
            raise CheckpointError(f"{path}: metadata 'scale' must be an integer from 1 to 999999999, got {shown!r}")
        metadata["scale"] = int(text)
    return metadata


def fitting_skeleton(
    network_g: Mapping[str, Any], state: Mapping[str, torch.Tensor], *, source: str | os.PathLike[str],
    where: str = "network_g", label: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build ``network_g`` on the ``meta`` device (nothing allocated) and check that ``state`` fits it.

    The build stops as soon as the options register far more parameter tensors or values than
    ``state`` holds (:func:`lkdn.archs.build_network` with ``weights``), so options that describe
    a far larger network (``num_block: 300000``) are refused at once. Keys, shapes and dtypes
    must fit; every failure is a :class:`CheckpointError` naming ``source`` (``label`` in the
    mismatch report).
    """
    try:
        with torch.device("meta"):
            skeleton = build_network(network_g, where=where, weights=state, weights_source=str(source))
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    check_dtypes(source, skeleton, state)
    report = mismatch_report(skeleton, state)
    if report:
        raise does_not_fit(label or source, skeleton, report)
    return skeleton


def network_from_file(path: str | os.PathLike[str]) -> nn.Module:
    """Build the network a self-describing ``.safetensors`` file names in its metadata and load it (strict).

    The metadata is checked before anything is allocated: ``network_g.type`` must be one of this
    project's architectures, the network is first built on the ``meta`` device (shapes only) and
    compared with the file's tensors, and ``scale`` must be the network's. Only then is it built.
    """
    metadata = read_metadata(path)
    if "network_g" not in metadata:
        raise CheckpointError(
            f"{path}: no 'network_g' metadata; build the network from its options and use load_network instead"
        )
    network_g = metadata["network_g"]
    state = load_state_dict(path)
    skeleton = fitting_skeleton(network_g, state, source=path, where=f"{path}: metadata network_g",
                                label=f"{path} (with its metadata's network_g {network_g})")
    scale = getattr(skeleton, "upscale", None)
    if "scale" in metadata and scale is not None and metadata["scale"] != scale:
        raise CheckpointError(f"{path}: metadata scale {metadata['scale']} but network_g builds an x{scale} network")
    net = build_network(network_g)
    net.load_state_dict(state)
    return net


# --- deploy forms ----------------------------------------------------------------------------

def deploy_form(
    net: nn.Module, network_opt: Mapping[str, Any], *, fold_num_in: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """Fold ``net`` and return ``(folded network, deploy options that build its structure)``.

    The architecture's explicit deploy options are used when the network they build has the
    folded network's keys and shapes; otherwise the generic ``reparameterized: true`` form,
    which has them by construction. The folded network is a new module; ``net`` is unchanged.
    """
    folded = reparameterize_model(net, fold_num_in=fold_num_in)
    if not foldable_modules(net) and not fold_num_in:
        return folded, copy.deepcopy(dict(network_opt))
    explicit = deploy_options(network_opt, fold_num_in=fold_num_in)
    if not explicit.get("reparameterized") and not mismatch_report(build_network(explicit), folded.state_dict()):
        return folded, explicit
    generic = deploy_options(network_opt, fold_num_in=fold_num_in, explicit=False)
    return folded, generic
