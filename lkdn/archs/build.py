"""Build a network from its ``network_g`` options, with errors that name the key at fault.

``network_g`` holds ``type`` (a registered architecture of this project) and the constructor's
keyword arguments, as in BasicSR, plus one key of this framework:

* ``reparameterized: true``: the deploy form of an architecture without explicit deploy
  options: the network is built as configured and every module with ``fuse()`` is folded
  (:func:`lkdn.archs.contract.fold_modules`), so the deploy checkpoint that
  ``lkdn-reparam`` wrote loads into it strictly.

Options are data (a YAML, a checkpoint's metadata, shapes read from a state dict), so every build
is first run on the ``meta`` device (shapes only, nothing allocated) and stopped as soon as it
registers more than :data:`MAX_TENSORS` parameter tensors (or, when the network must hold given
weights, :data:`WEIGHTS_MARGIN` times their tensors or values) or more parameter bytes than
:func:`machine_memory`: options such as ``num_block: 300000`` or ``num_feat: 10000000`` are a
``ValueError`` naming the options and what they would need, within seconds, before anything is
allocated.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from lkdn.archs.contract import ArchContract, contract, fold_modules
from lkdn.utils import did_you_mean

logger = logging.getLogger(__name__)

FRAMEWORK_KEYS = {
    "type": "the registered architecture",
    "reparameterized": "true: build the configured form, then fold every fuse() module (a deploy form)",
}


MAX_TENSORS = 10_000
"""The most parameter tensors a network may register (LKDN: 30 per block, 250 in all): more is a runaway option."""


WEIGHTS_MARGIN = 4
"""A network that must hold given weights may register this many times their tensors and values while it is
built (constructors replace modules they made: DSCLoRA registers 2x); exact fit is checked after the build."""


def machine_memory() -> int:
    """This machine's physical memory in bytes (the ceiling on a network's parameters and on activations)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX: no ceiling from here
        return 2**62


def format_bytes(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps it at least 1 (``3.5 GiB``, ``1.2 PiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


class NetworkTooLargeError(ValueError):
    """Options that would build more parameter tensors or bytes than allowed; the message names them."""


@contextlib.contextmanager
def _parameter_budget(max_tensors: int, max_values: int | None, note: str, describe: Any) -> Iterator[None]:
    """Raise :class:`NetworkTooLargeError` (from inside the constructor) once the parameters registered while
    the block runs exceed ``max_tensors`` tensors, ``max_values`` elements (``note`` says where both come
    from) or :func:`machine_memory` bytes; ``describe(what)`` words the message."""
    max_bytes = machine_memory()
    seen: set[tuple[int, str]] = set()
    values, size = 0, 0

    def count(module: nn.Module, name: str, param: torch.Tensor | None) -> None:
        nonlocal values, size
        if param is None:
            return
        seen.add((id(module), name))
        values += param.numel()
        size += param.numel() * param.element_size()
        if len(seen) > max_tensors:
            raise NetworkTooLargeError(describe(f"build more than {max_tensors} parameter tensors ({note})"))
        if max_values is not None and values > max_values:
            raise NetworkTooLargeError(describe(f"build more than {max_values} parameter values ({note})"))
        if size > max_bytes:
            raise NetworkTooLargeError(describe(f"need more than {format_bytes(max_bytes)} of parameters "
                                                "(this machine's memory)"))

    handle = torch_module.register_module_parameter_registration_hook(count)
    try:
        yield
    finally:
        handle.remove()


def short_number(value: int) -> str:
    """``value``, or ``an integer of about 4000 digits`` when it is too long to print (or to convert)."""
    if abs(value) < 10**20:
        return str(value)
    return f"an integer of about {int((value.bit_length() - 1) * math.log10(2)) + 1} digits"


def _numbers(kwargs: Mapping[str, Any]) -> str:
    """The options, as ``key=value`` (long integers and texts shortened)."""
    return ", ".join(f"{k}={short_number(v)}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v!r:.40}"
                     for k, v in kwargs.items())


def _is_count(key: str) -> bool:
    """Options that count channels, blocks or the scale: positive integers in every architecture."""
    return key == "upscale" or key.startswith("num_") or key.endswith("channels")


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


def build_network(
    opt: Mapping[str, Any], *, where: str = "network_g", weights: Mapping[str, torch.Tensor] | None = None,
    weights_source: str = "the checkpoint",
) -> nn.Module:
    """Build the registered network named by ``opt['type']`` with the other keys as arguments.

    The options are first built on the ``meta`` device under a budget (see the module docstring):
    at most :data:`MAX_TENSORS` parameter tensors and :func:`machine_memory` bytes, and, when the
    network must hold ``weights`` (a state dict read from ``weights_source``), no more than
    :data:`WEIGHTS_MARGIN` times their tensors and values (unless ``reparameterized: true``, whose
    built form is larger than its weights). Inside ``with torch.device("meta")`` that guarded build is the result.
    """
    entry, kwargs = network_kwargs(opt, where=where)
    for key, value in kwargs.items():
        if _is_count(key) and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"{where} ({entry.name}): {key}: expected a positive integer, got {value}")
    max_tensors, max_values, note = MAX_TENSORS, None, f"the ceiling lkdn.archs.build.MAX_TENSORS is {MAX_TENSORS}"
    if weights is not None and not opt.get("reparameterized"):
        tensors, values = len(weights), sum(v.numel() for v in weights.values())
        max_tensors, max_values = WEIGHTS_MARGIN * tensors, WEIGHTS_MARGIN * values
        note = f"{WEIGHTS_MARGIN}x the {tensors} tensors of {values} values {weights_source} holds"

    def describe(needs: str) -> str:
        return f"{where} ({entry.name}): the options {needs}; check {_numbers(kwargs)}"

    def construct() -> nn.Module:
        try:
            with _parameter_budget(max_tensors, max_values, note, describe):
                return entry.factory(**kwargs)
        except NetworkTooLargeError:
            raise
        except (TypeError, ValueError) as err:  # the architecture's own checks, or torch's (some with C++ frames)
            lines = str(err).splitlines() or [type(err).__name__]
            own = len(lines) == 1 and any(key in lines[0] for key in kwargs)  # names its option already
            text = lines[0] if own else f"{lines[0]} (options: {_numbers(kwargs)})"
            raise ValueError(f"{where} ({entry.name}): {text}") from err
        except (RuntimeError, OverflowError, MemoryError) as err:  # torch's, on sizes it cannot make
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{where} ({entry.name}): {first} (options: {_numbers(kwargs)})") from err

    if torch.get_default_device().type == "meta":
        net = construct()
    else:
        with torch.device("meta"):
            construct()  # shapes only: runaway options stop here, before any allocation
        net = construct()
    if opt.get("reparameterized"):
        net, count = fold_modules(net)
        if count:
            logger.info("re-parameterized %d module(s) of %s", count, type(net).__name__)
    return net
