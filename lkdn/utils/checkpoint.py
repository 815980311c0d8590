"""Checkpoint I/O in one place: safe loading, canonical state dicts, atomic saving.

* Every load goes through :func:`load_file`: ``torch.load(..., weights_only=True)`` for
  ``.pth``/``.pt``/``.state`` (never a fallback to full unpickling), or safetensors for
  ``.safetensors``. A file that would need arbitrary code to unpickle is refused.
* :func:`extract_state_dict` canonicalizes BasicSR dicts (``params_ema`` preferred over
  ``params``, or a named key) and bare state dicts, and strips ``module.`` prefixes (a dict
  holding both ``module.x`` and ``x`` is ambiguous and refused). Keys must be strings and
  tensors real (not ``meta``), dense, no larger than their storage (a broadcast view of 2 KB
  can claim terabytes), and finite numbers.
* Loading into a network (:func:`load_network`, :func:`fitting_skeleton`) refuses tensors whose
  dtype cannot hold the parameter's values (complex, integer or bool for a float parameter)
  instead of letting torch cast them.
* :func:`load_network` loads into a network and, on a mismatch, lists missing and
  unexpected keys and differing shapes, and names the network options to check.
* :func:`save_file` writes atomically (:func:`lkdn.utils.files.write_atomic`); an interrupted
  save (SIGKILL, power loss) leaves the previous file intact, and a failed one (disk full) is a
  :class:`CheckpointError` that says so.
* Importing this module requires ``torch>=2.10``: ``weights_only`` loading could be bypassed
  up to torch 2.5.1 (CVE-2025-32434) and up to 2.9.1 (CVE-2026-24747).
* :func:`save_network_file` writes self-describing ``.safetensors`` files (metadata
  ``{"lkdn_format": "1", "network_g": <JSON options>, "scale": "<int>"}``), read back by
  :func:`read_metadata` and :func:`network_from_file`. Metadata is data from the file, so it
  may name only this project's architectures, and their arguments are checked against the
  tensors' shapes on the ``meta`` device (nothing allocated) before the network is built.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lkdn.utils.files import partial_writes, write_atomic

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
PREFERRED_KEYS = ("params_ema", "params")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, written, or does not fit the network; the message says why."""


MIN_TORCH = (2, 10)
"""The oldest torch whose ``torch.load(weights_only=True)`` has no known way to run code."""


def require_safe_torch(version: str | None = None) -> None:
    """Raise ImportError unless ``version`` (default: the installed torch) is at least :data:`MIN_TORCH`."""
    version = torch.__version__ if version is None else version
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_TORCH:
        raise ImportError(
            f"lkdn needs torch>={MIN_TORCH[0]}.{MIN_TORCH[1]} to load checkpoints safely, found torch {version}: "
            "torch.load(weights_only=True) can run code from a crafted file up to torch 2.5.1 (CVE-2025-32434) "
            "and up to 2.9.1 (CVE-2026-24747). Upgrade: pip install -U 'torch>=2.10' (see requirements.txt)."
        )


require_safe_torch()


def load_file(path: str | os.PathLike[str]) -> Any:
    """Read a checkpoint file safely (tensors, dicts, lists, numbers, strings only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _builds_objects(path):  # random bytes, a truncated file, another format
            raise CheckpointError(f"{path}: not a torch checkpoint (the bytes are not a pickle torch can read)") from err
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain containers, "
            "which could run code when unpickled. Load only checkpoints you trust, re-saved as plain "
            "state dicts or .safetensors."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AssertionError) as err:
        # torch's unpickler meets malformed bytes with whatever its stack machine trips over
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or not a torch file?): {err}") from err


_OBJECT_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"})


def _builds_objects(path: Path) -> bool:
    """Whether ``path`` is a well-formed pickle (bare, or the ``data.pkl`` of a torch zip file) that
    builds objects, read statically with :mod:`pickletools` (nothing is executed)."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = path.read_bytes()
        return any(op.name in _OBJECT_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - any failure to parse means "not a pickle"
        return False


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(
    ckpt: Any, *, param_key: str | None = None, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Return the network state dict inside ``ckpt``.

    Args:
        ckpt: what :func:`load_file` returned: a BasicSR dict ``{'params': ..., 'params_ema': ...}``
            or a bare state dict.
        param_key: the key to take; ``None`` prefers ``params_ema``, then ``params``. A named key
            that is missing falls back to the other BasicSR key with a warning (BasicSR's rule).
        source: the file name, for messages.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(ckpt).__name__}")
    if _is_state_dict(ckpt):
        state = ckpt
    else:
        keys = [param_key] if param_key else []
        keys += [k for k in PREFERRED_KEYS if k not in keys]
        found = [k for k in keys if k in ckpt and _is_state_dict(ckpt[k])]
        if not found:
            raise CheckpointError(
                f"{source}: no state dict under {', '.join(repr(k) for k in keys)}; top-level keys: {list(ckpt)}"
            )
        if param_key and found[0] != param_key:
            logger.warning("%s: key %r not found, loading %r instead", source, param_key, found[0])
        state = ckpt[found[0]]
    bad_keys = [repr(k) for k in state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{source}: state dict keys must be parameter names (strings), got {', '.join(bad_keys[:5])}")
    meta = [k for k, v in state.items() if v.is_meta]
    if meta:
        raise CheckpointError(f"{source}: tensors without data (meta device): {', '.join(meta[:5])}; save real weights")
    for key, value in state.items():  # before any value is read
        _check_layout(key, value, source)
    stripped: dict[str, str] = {}
    for key in state:
        name = key.removeprefix("module.")
        if name in stripped:
            raise CheckpointError(f"{source}: ambiguous keys {stripped[name]!r} and {key!r} name the same parameter "
                                  f"{name!r}; keep one of them")
        stripped[name] = key
    state = {name: state[key] for name, key in stripped.items()}
    non_finite = [k for k, v in state.items()
                  if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if non_finite:
        shown = ", ".join(non_finite[:10]) + (f" and {len(non_finite) - 10} more" if len(non_finite) > 10 else "")
        raise CheckpointError(
            f"{source}: refused: {len(non_finite)} tensor(s) hold NaN or infinity ({shown}); the weights are broken "
            "(a diverged run?): load an earlier checkpoint"
        )
    return state


def _check_layout(key: str, value: torch.Tensor, source: str) -> None:
    """Refuse a sparse tensor, or one that claims more elements than its storage holds (stride 0)."""
    if value.layout != torch.strided:
        raise CheckpointError(f"{source}: tensor {key!r} is {str(value.layout).removeprefix('torch.')}, not dense; "
                              "save dense weights (tensor.to_dense())")
    stored = value.untyped_storage().nbytes() // max(value.element_size(), 1)
    if value.numel() > stored:
        raise CheckpointError(
            f"{source}: tensor {key!r} has shape {tuple(value.shape)} ({value.numel()} elements) over a storage of "
            f"{stored} element(s), strides {value.stride()} (an expanded view); save real tensors (tensor.clone())"
        )


def dtype_misfits(net_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """``key (dtype)`` of each tensor of ``state`` that a floating-point entry of ``net_state`` cannot take
    without losing values (complex, integer or bool dtypes)."""
    return [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
            if k in net_state and net_state[k].is_floating_point() and not v.is_floating_point()]


def check_dtypes(source: str | os.PathLike[str], net: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` naming the file and each tensor of ``state`` whose dtype does not fit ``net``."""
    misfits = dtype_misfits(net.state_dict(), state)
    if misfits:
        shown = ", ".join(misfits[:10]) + (f" and {len(misfits) - 10} more" if len(misfits) > 10 else "")
        raise CheckpointError(f"{source}: refused: {len(misfits)} tensor(s) of a type that does not fit the network's "
                              f"floating-point parameters: {shown}; save float weights")


def load_state_dict(path: str | os.PathLike[str], *, param_key: str | None = None) -> dict[str, torch.Tensor]:
    """:func:`load_file` then :func:`extract_state_dict`."""
    return extract_state_dict(load_file(path), param_key=param_key, source=str(path))


def mismatch_report(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Describe how ``state`` differs from ``net.state_dict()`` (empty string when it fits)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"{title} ({len(items)}):\n  " + "\n  ".join(shown))
    return "\n".join(lines)


def options_hint(net: nn.Module) -> str:
    """What to check when weights do not fit ``net``: the options of its architecture."""
    from lkdn.archs.contract import contract_of

    entry = contract_of(net)
    options = ", ".join(entry.parameters())
    return (f"check network_g ({entry.name}: {options}) against the checkpoint; a training-form checkpoint needs "
            "the training-form options, a deploy-form one the options scripts/reparameterize.py wrote")


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


def save_file(obj: Any, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``obj`` to ``path`` atomically (``.safetensors`` for a flat state dict, else torch).

    A crash at any moment leaves either the old file or the new one, never a partial one. On
    error (disk full, read-only folder) the previous file is untouched and a
    :class:`CheckpointError` says what happened and what to do.
    """
    path = Path(path)

    def write(handle: Any) -> None:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save

            tensors = {k: v.detach().contiguous().cpu() for k, v in obj.items()}
            handle.write(save(tensors, metadata=dict(metadata) if metadata else None))
        else:
            torch.save(obj, handle)

    try:
        return write_atomic(path, write)
    except OSError as err:
        raise CheckpointError(_save_failure(path, err)) from err


def _save_failure(path: Path, err: OSError) -> str:
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        reason = f"no space left on the device of {path.parent} ({err.strerror or err})"
        fix = "free some space (or point the experiment elsewhere) and run again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"{path.parent} is not writable ({err.strerror or err})"
        fix = "make it writable or choose another folder"
    else:
        reason = err.strerror or str(err)
        fix = f"check that {path.parent} is a writable folder"
    kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
    return f"cannot save {path}: {reason}; {kept}; {fix}"


def partial_saves(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files :func:`save_file` left in ``folder`` when its process was killed mid-save."""
    return partial_writes(folder)


# --- self-describing network files (safetensors metadata) -------------------------------------

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
        from lkdn.archs import build_network

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
    if not _is_state_dict(state_dict):
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
    from safetensors import SafetensorError, safe_open

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
        from lkdn.archs.build import short_number

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
    from lkdn.archs import build_network

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
    from lkdn.archs import build_network

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
