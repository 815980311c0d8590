"""Re-parameterization: replace every foldable module of a network by its deploy module.

A foldable module exposes ``fuse() -> nn.Module`` (under ``torch.no_grad``) returning the
module that computes exactly the same function with plain convs (RBSB -> BSConvU,
PixelShuffleRep -> PixelShuffleDirect, ...). :func:`reparameterize_model` walks any network
and swaps them; with ``fold_num_in=True`` it also folds LKDN's input replication.
:func:`deploy_options` gives the ``network_g`` options that build the deploy network, and
:func:`verify_reparameterization` checks the two forms agree (float32 and float64).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

DeployRule = Callable[[dict[str, Any]], dict[str, Any]]
_DEPLOY_RULES: dict[str, DeployRule] = {}

# Option values of the training forms and the deploy forms they fold into (any architecture
# whose ``network_g`` uses these keys).
DEPLOY_VALUES: dict[str, dict[str, str]] = {
    "conv": {"BSConvU_rep": "BSConvU", "RBSB": "BSConvU"},
    "upsampler": {"pixelshuffle_rep": "pixelshuffledirect"},
}


def is_foldable(module: nn.Module) -> bool:
    """Whether ``module`` has a deploy form (a ``fuse`` method)."""
    return callable(getattr(module, "fuse", None))


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


def fold_summary(model: nn.Module) -> dict[str, int]:
    """How many foldable modules of each class ``model`` holds (e.g. ``{'RBSB': 15}``)."""
    return dict(Counter(type(module).__name__ for _, module in foldable_modules(model)))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _fused(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        fused = module.fuse()
    if not isinstance(fused, nn.Module):
        raise TypeError(f"{type(module).__name__}.fuse() returned {type(fused).__name__}, expected an nn.Module")
    return fused.train(module.training)


def _replace_children(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if is_foldable(child):
            setattr(module, name, _fused(child))
            count += 1
        else:
            count += _replace_children(child)
    return count


def reparameterize_model(model: nn.Module, *, fold_num_in: bool = False, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every foldable sub-module replaced by its deploy form.

    Args:
        model: any network; modules without ``fuse`` are kept as they are.
        fold_num_in: also fold input replication (networks with ``fold_num_in()``, e.g. LKDN),
            so the deploy network takes ``num_in: 1``. Ignored, with a warning, for networks
            without it.
        inplace: modify ``model`` itself instead of a deep copy (a model that is itself
            foldable is returned as a new module either way).

    The result is in the same train/eval mode as the input; its forward equals the original's
    up to float rounding.
    """
    model = model if inplace else copy.deepcopy(model)
    if is_foldable(model):
        model = _fused(model)
        count = 1
    else:
        count = _replace_children(model)
    logger.info("re-parameterized %d module(s) of %s", count, type(model).__name__)
    if fold_num_in:
        if callable(getattr(model, "fold_num_in", None)):
            with torch.no_grad():
                model.fold_num_in()
        else:
            logger.warning("%s has no fold_num_in(); input replication left as it is", type(model).__name__)
    return model


def register_deploy_rule(arch_type: str) -> Callable[[DeployRule], DeployRule]:
    """Register how the ``network_g`` options of ``arch_type`` change in the deploy form.

    The decorated function takes a copy of the training-form options (after the generic
    ``conv``/``upsampler`` renaming of :data:`DEPLOY_VALUES`) and returns the deploy options;
    use it for architectures whose deploy form is selected by other keys (``deploy: true``...).
    """

    def register(rule: DeployRule) -> DeployRule:
        _DEPLOY_RULES[arch_type] = rule
        return rule

    return register


def _accepts(arch_type: Any, key: str, *, explicit: bool = False) -> bool:
    """Whether the registered ``arch_type`` takes the argument ``key`` (``**kwargs`` counts unless ``explicit``)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    try:
        factory = ARCH_REGISTRY.get(arch_type)
    except KeyError:
        return False
    params = inspect.signature(factory).parameters
    return key in params or (not explicit and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))


def deploy_options(network_opt: Mapping[str, Any], *, fold_num_in: bool = False) -> dict[str, Any]:
    """The ``network_g`` options of the deploy form of ``network_opt`` (a new dict).

    ``conv: BSConvU_rep``/``RBSB`` becomes ``BSConvU``, ``upsampler: pixelshuffle_rep`` becomes
    ``pixelshuffledirect``, architectures with a ``deploy`` argument (RepVGG's convention, e.g.
    RepSR) get ``deploy: true``, then the rule registered for the ``type`` (if any) applies. With
    ``fold_num_in`` the options get ``num_in: 1`` when the architecture takes ``num_in``.
    """
    opt = copy.deepcopy(dict(network_opt))
    for key, renames in DEPLOY_VALUES.items():
        if opt.get(key) in renames:
            opt[key] = renames[opt[key]]
    if "deploy" in opt or _accepts(opt.get("type"), "deploy", explicit=True):
        opt["deploy"] = True
    rule = _DEPLOY_RULES.get(opt.get("type"))
    if rule is not None:
        opt = rule(opt)
    if fold_num_in and ("num_in" in opt or _accepts(opt.get("type"), "num_in")):
        opt["num_in"] = 1
    return opt


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify_reparameterization` (max absolute output differences)."""

    max_diff32: float
    max_diff64: float
    atol: float
    atol64: float
    output_scale: float
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Both differences are within their tolerances (and finite)."""
        return self.max_diff32 <= self.atol and self.max_diff64 <= self.atol64

    def describe(self) -> str:
        """One line with both differences and tolerances."""
        return (
            f"max |original - deploy| on a random input of shape {self.input_shape}: "
            f"float32 {self.max_diff32:.3g} (atol {self.atol:.3g}), float64 {self.max_diff64:.3g} "
            f"(atol {self.atol64:.3g})"
        )


@torch.no_grad()
def max_abs_difference(
    reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor, *, dtype: torch.dtype = torch.float32
) -> tuple[float, float, tuple[int, ...]]:
    """Max ``|reference(x) - candidate(x)|`` in ``dtype``, max ``|reference(x)|`` and the output shape.

    Both networks are deep-copied, cast to ``dtype`` and put in eval mode; the callers'
    modules are left as they are. A non-finite difference is returned as ``inf``.
    """
    nets = [copy.deepcopy(net).to(dtype).eval() for net in (reference, candidate)]
    device = next(reference.parameters(), torch.empty(0)).device
    x = inputs.to(device=device, dtype=dtype)
    ref, out = (net(x) for net in nets)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: {tuple(ref.shape)} vs {tuple(out.shape)}")
    diff = (ref - out).abs().max().item()
    return (diff if diff == diff else float("inf")), ref.abs().max().item(), tuple(ref.shape)


def verify_reparameterization(
    original: nn.Module, deploy: nn.Module, *, fold_num_in: bool = False, input_shape: Sequence[int] = (2, 3, 29, 23),
    atol: float = 1e-5, atol64: float = 1e-9, seed: int = 0,
) -> Verification:
    """Check ``deploy`` against ``original`` on a random input (eval mode), in two ways.

    * float32: ``original`` against ``deploy`` as they are (the weights that get written);
      ``atol`` is absolute for outputs up to 1 and relative beyond (``atol * max(1, max|output|)``),
      so networks working on [0, 255] get the same relative check.
    * float64: ``original`` cast to float64 against its fold computed in float64 by
      :func:`reparameterize_model` (the maths of every ``fuse``, free of float32 rounding of the
      folded weights); ``atol64`` is relative to the output's magnitude
      (``atol64 * max(1, max|output|)``). A correct fold differs by float64 rounding only, a
      wrong one by as much as in float32.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(tuple(input_shape), generator=generator, dtype=torch.float64)
    diff32, scale32, _ = max_abs_difference(original, deploy, inputs, dtype=torch.float32)
    original64 = copy.deepcopy(original).to(torch.float64)
    folded64 = reparameterize_model(original64, fold_num_in=fold_num_in)
    diff64, scale, shape = max_abs_difference(original64, folded64, inputs, dtype=torch.float64)
    return Verification(
        max_diff32=diff32, max_diff64=diff64, atol=atol * max(1.0, scale32), atol64=atol64 * max(1.0, scale),
        output_scale=scale,
        input_shape=tuple(input_shape), output_shape=shape,
    )
