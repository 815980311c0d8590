"""Checkpoint files: safe loading, canonical state dicts, atomic saving.

* Every load goes through :func:`load_file`: ``torch.load(..., weights_only=True)`` for
  ``.pth``/``.pt``/``.state`` (never a fallback to full unpickling), or safetensors for
  ``.safetensors``. A file that would need arbitrary code to unpickle is refused.
* :func:`extract_state_dict` canonicalizes BasicSR dicts (``params_ema`` preferred over
  ``params``, or a named key) and bare state dicts, and strips ``module.`` prefixes (a dict
  holding both ``module.x`` and ``x`` is ambiguous and refused). Keys must be strings and
  tensors real (not ``meta``), dense, no larger than their storage (a broadcast view of 2 KB
  can claim terabytes), and finite numbers.
* :func:`check_dtypes` refuses tensors whose dtype cannot hold a network's parameter values
  (complex, integer or bool for a float parameter) instead of letting torch cast them, and
  :func:`mismatch_report` lists missing and unexpected keys and differing shapes.
* :func:`save_file` writes atomically (:func:`lkdn.utils.write_atomic`); an interrupted
  save (SIGKILL, power loss) leaves the previous file intact, and a failed one (disk full) is a
  :class:`CheckpointError` that says so.
* Importing this module requires ``torch>=2.10``: ``weights_only`` loading could be bypassed
  up to torch 2.5.1 (CVE-2025-32434) and up to 2.9.1 (CVE-2026-24747).

This module knows nothing of architectures: building a network and loading weights into it
(:func:`lkdn.loading.load_network`), and self-describing ``.safetensors`` files
(:func:`lkdn.loading.save_network_file`, :func:`lkdn.loading.network_from_file`), are
:mod:`lkdn.loading`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from lkdn.errors import LkdnError
from lkdn.utils import partial_writes, write_atomic

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIX = ".safetensors"
PREFERRED_KEYS = ("params_ema", "params")


class CheckpointError(LkdnError, RuntimeError):
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
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
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


def is_state_dict(obj: Any) -> bool:
    """Whether ``obj`` is a non-empty mapping whose values are all tensors."""
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
    if is_state_dict(ckpt):
        state = ckpt
    else:
        keys = [param_key] if param_key else []
        keys += [k for k in PREFERRED_KEYS if k not in keys]
        found = [k for k in keys if k in ckpt and is_state_dict(ckpt[k])]
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


def save_file(obj: Any, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``obj`` to ``path`` atomically (``.safetensors`` for a flat state dict, else torch).

    A crash at any moment leaves either the old file or the new one, never a partial one. On
    error (disk full, read-only folder) the previous file is untouched and a
    :class:`CheckpointError` says what happened and what to do.
    """
    path = Path(path)

    def write(handle: Any) -> None:
        if path.suffix == SAFETENSORS_SUFFIX:
            tensors = {k: v.detach().contiguous().cpu() for k, v in obj.items()}
            handle.write(safetensors.torch.save(tensors, metadata=dict(metadata) if metadata else None))
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
