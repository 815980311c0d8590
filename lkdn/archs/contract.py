"""The architecture contract: what the framework knows about a network, declared in the network's own file.

A network is one ``lkdn/archs/<name>_arch.py``. The only requirement is a class (or factory)
registered in basicsr's ``ARCH_REGISTRY``, with ``@ARCH_REGISTRY.register()`` or, to declare
more, with :func:`register_architecture`::

    @register_architecture(test_options={"num_feat": 8}, receptive_radius=conv_receptive_radius)
    class MyNet(nn.Module):
        ...

Everything else is optional and read from :class:`ArchContract` by the parts of the framework
that need it; nothing elsewhere is keyed to a class name:

* ``test_options`` / ``test_variants``: the small configurations the registry-driven tests run
  (default: the class's own defaults);
* ``receptive_radius``: a function of a built network giving its receptive radius in input
  pixels when it is translation-local (stride-1 convolutions and per-pixel operations), so
  tiles with that much context equal the untiled output; ``None`` (the default) means not
  local: tiles are then labelled approximate;
* ``deploy_options``: how the ``network_g`` options of a training form change in its deploy
  form when the architecture has explicit deploy options (LKDN-S ``conv: BSConvU``, RepSR
  ``deploy: true``); without it the deploy form is the generic ``reparameterized: true``;
* ``fp32_stages``: sub-modules, per block class, that must stay float32 in a float16 export;
* ``spandrel``: how to recognise a state dict of this architecture and read its options from
  the tensor shapes (:class:`StateDictDetection`), for ``lkdn.integrations.spandrel``.

The deploy form of any network whose modules have ``fuse()`` is that network after
:func:`fold_modules` (the fold itself, which :func:`lkdn.reparam.reparameterize_model` wraps); no
declaration is needed for it. :func:`deploy_options` gives the ``network_g`` options of a deploy form.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from lkdn.utils import unknown_name

StateDict = Mapping[str, torch.Tensor]
Factory = TypeVar("Factory", bound=Callable[..., nn.Module])

OUR_PACKAGE = "lkdn.archs."
"""Registered architectures whose module is under this package are ours; basicsr's own are not built."""


@dataclass(frozen=True)
class StateDictDetection:
    """How a state dict of an architecture is recognised and turned into ``network_g`` options.

    Args:
        keys: keys that must all be present.
        options: the ``network_g`` options (with ``type``) the state dict fits, read from its shapes.
        any_of: groups of keys of which each must have at least one present.
        absent: keys that must not be present (to tell apart architectures that share key names).
        only: a regular expression every key must match in full (for architectures with generic key names).
        min_size: the smallest input (pixels per side) the network accepts.
        supports_half: float16 inference was verified for this architecture.
    """

    keys: tuple[str, ...]
    options: Callable[[StateDict], dict[str, Any]]
    any_of: tuple[tuple[str, ...], ...] = ()
    absent: tuple[str, ...] = ()
    only: str | None = None
    min_size: int | None = None
    supports_half: bool = False

    def matches(self, state: StateDict) -> bool:
        """Whether ``state`` has the keys of this architecture."""
        return (
            all(k in state for k in self.keys)
            and all(any(k in state for k in group) for group in self.any_of)
            and not any(k in state for k in self.absent)
            and (self.only is None or all(re.fullmatch(self.only, k) for k in state))
        )


@dataclass(frozen=True)
class ArchContract:
    """What the framework knows about one registered architecture (see the module docstring)."""

    name: str
    factory: Callable[..., nn.Module]
    test_options: Mapping[str, Any] = field(default_factory=dict)
    test_variants: tuple[Mapping[str, Any], ...] = ()
    receptive_radius: Callable[[nn.Module], int | None] | None = None
    deploy_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    fp32_stages: Mapping[type[nn.Module], tuple[str, ...]] = field(default_factory=dict)
    spandrel: StateDictDetection | None = None

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword arguments of the factory (what ``network_g`` may set)."""
        params = inspect.signature(self.factory).parameters
        return {k: p for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def default(self, key: str) -> Any:
        """The factory's default for argument ``key`` (``inspect.Parameter.empty`` when it has none)."""
        param = self.parameters().get(key)
        return inspect.Parameter.empty if param is None else param.default

    def radius(self, net: nn.Module) -> int | None:
        """The receptive radius of ``net`` in input pixels, or None when it is not translation-local."""
        return None if self.receptive_radius is None else self.receptive_radius(net)


_CONTRACTS: dict[str, ArchContract] = {}


def register_architecture(
    factory: Factory | None = None, *, test_options: Mapping[str, Any] | None = None,
    test_variants: tuple[Mapping[str, Any], ...] = (), receptive_radius: Callable[[nn.Module], int | None] | None = None,
    deploy_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    fp32_stages: Mapping[type[nn.Module], tuple[str, ...]] | None = None, spandrel: StateDictDetection | None = None,
) -> Any:
    """Register ``factory`` in ``ARCH_REGISTRY`` under its name, with its contract.

    Usable as ``@register_architecture`` or ``@register_architecture(...)``, or called as
    ``register_architecture(LKDN_S, ...)`` for a factory function.
    """

    def register(obj: Factory) -> Factory:
        ARCH_REGISTRY.register(obj)
        _CONTRACTS[obj.__name__] = ArchContract(
            name=obj.__name__, factory=obj, test_options=dict(test_options or {}), test_variants=tuple(test_variants),
            receptive_radius=receptive_radius, deploy_options=deploy_options, fp32_stages=dict(fp32_stages or {}),
            spandrel=spandrel,
        )
        return obj

    return register if factory is None else register(factory)


def our_architectures() -> dict[str, ArchContract]:
    """Every registered architecture of this project (declared or plain ``ARCH_REGISTRY.register``), by name."""
    found = {}
    for name, obj in sorted(ARCH_REGISTRY):  # basicsr's Registry iterates over (name, object) pairs
        if name in _CONTRACTS:
            found[name] = _CONTRACTS[name]
        elif str(getattr(obj, "__module__", "")).startswith(OUR_PACKAGE):
            found[name] = ArchContract(name=name, factory=obj)
    return found


def contract(name: str, *, where: str = "network_g.type") -> ArchContract:
    """The contract of the architecture registered as ``name``; a ValueError suggests the nearest name.

    Only this project's architectures are accepted: basicsr's own (SpyNet, EDVR, ...) are
    registered in the same registry but are not networks of this framework (some load files
    themselves).
    """
    known = our_architectures()
    if not isinstance(name, str) or name not in known:
        raise ValueError(unknown_name("network", name, known, where=where))
    return known[name]


def contract_of(net: nn.Module) -> ArchContract:
    """The contract of a built network: the architecture whose class ``net`` is (or derives from).

    A network built by a factory function (``LKDN_S``) has the contract of its class (``LKDN``).
    An unregistered module gets the default contract (not local, nothing declared).
    """
    known = our_architectures()
    for cls in type(net).__mro__:
        entry = known.get(cls.__name__)
        if entry is not None and entry.factory is cls:
            return entry
    return ArchContract(name=type(net).__name__, factory=type(net))


# ---------------------------------------------------------------------------------------------
# translation locality


_NON_LOCAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Upsample,
)


def conv_receptive_radius(net: nn.Module) -> int | None:
    """An upper bound on the receptive radius of ``net`` in input pixels, or None when it is not local.

    The sum over every ``nn.Conv2d`` of ``dilation * (kernel - 1) // 2`` (per axis, the larger
    one): exact for networks whose spatial convolutions lie on one path with 1x1 side
    branches, as in LKDN (``3 + 12 * num_block``). Not local (None) when the network holds
    pooling, resampling modules, strided convolutions, or a module whose class declares
    ``translation_local = False`` (global statistics such as CCA's, or ESA's strided branch).
    For an architecture whose forward uses only such modules and per-pixel functions, declare
    ``receptive_radius=conv_receptive_radius``.
    """
    radius = 0
    for module in net.modules():
        if isinstance(module, _NON_LOCAL_TYPES) or getattr(module, "translation_local", True) is False:
            return None
        if isinstance(module, nn.Conv2d):
            if any(s != 1 for s in module.stride):
                return None
            radius += max(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation, strict=True))
    return radius


# ---------------------------------------------------------------------------------------------
# deploy forms: the fuse() protocol and the options that build a folded network


def is_foldable(module: nn.Module) -> bool:
    """Whether ``module`` has a deploy form (a ``fuse`` method; a sub-module named ``fuse`` is not one)."""
    return callable(getattr(type(module), "fuse", None))


def foldable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost foldable modules of ``model`` as ``(qualified name, module)``, in order.

    A foldable module's own children are not listed: its ``fuse`` folds them. ``model`` itself
    is listed with the name ``""`` when it is foldable.
    """
    if is_foldable(model):
        return [("", model)]
    found = []
    for name, child in model.named_children():
        found += [(f"{name}.{sub}" if sub else name, mod) for sub, mod in foldable_modules(child)]
    return found


def fused(module: nn.Module) -> nn.Module:
    """``module.fuse()`` (under ``torch.no_grad``), in ``module``'s train/eval mode; a TypeError unless a module."""
    with torch.no_grad():
        result = module.fuse()
    if not isinstance(result, nn.Module):
        raise TypeError(f"{type(module).__name__}.fuse() returned {type(result).__name__}, expected an nn.Module")
    return result.train(module.training)


def _replace_children(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if is_foldable(child):
            setattr(module, name, fused(child))
            count += 1
        else:
            count += _replace_children(child)
    return count


def fold_modules(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace, in place, every outermost foldable module of ``model`` by its ``fuse()`` result.

    Returns the folded network (``model`` itself, or its fused form when ``model`` is foldable)
    and the number of modules folded.
    """
    if is_foldable(model):
        return fused(model), 1
    return model, _replace_children(model)


def deploy_options(network_opt: Mapping[str, Any], *, fold_num_in: bool = False, explicit: bool = True) -> dict[str, Any]:
    """The ``network_g`` options of the deploy form of ``network_opt`` (a new dict).

    With ``explicit`` and an architecture that declares ``deploy_options`` in its contract
    (LKDN-S ``conv: BSConvU``, RepSR ``deploy: true``), those; otherwise the generic deploy form
    ``reparameterized: true`` (built as configured, then folded). With ``fold_num_in`` the options
    get ``num_in: 1`` when the architecture takes ``num_in``.
    """
    opt = copy.deepcopy(dict(network_opt))
    entry = contract(opt.get("type"))
    if explicit and entry.deploy_options is not None:
        opt = entry.deploy_options(opt)
    else:
        opt["reparameterized"] = True
    if fold_num_in and "num_in" in entry.parameters():
        opt["num_in"] = 1
    return opt
