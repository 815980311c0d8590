"""Re-parameterization: replace every foldable module of a network by its deploy module.

A foldable module exposes ``fuse() -> nn.Module`` (under ``torch.no_grad``) returning the
module that computes exactly the same function with plain convs (RBSB -> BSConvU,
PixelShuffleRep -> PixelShuffleDirect, ...). :func:`reparameterize_model` walks any network
and swaps them; with ``fold_num_in=True`` it also folds LKDN's input replication.
:func:`verify_reparameterization` checks the two forms agree (float32 and float64).

This module depends on nothing of the framework but the architecture contract
(:mod:`lkdn.archs.contract`, which defines the ``fuse()`` protocol and
:func:`~lkdn.archs.contract.deploy_options`); building the deploy network from options is
:func:`lkdn.loading.deploy_form`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lkdn.archs.contract import fold_modules, foldable_modules

logger = logging.getLogger(__name__)


def fold_summary(model: nn.Module) -> dict[str, int]:
    """How many foldable modules of each class ``model`` holds (e.g. ``{'RBSB': 15}``)."""
    return dict(Counter(type(module).__name__ for _, module in foldable_modules(model)))


def reparameterize_model(model: nn.Module, *, fold_num_in: bool = False, inplace: bool = False,
                         log: bool = True) -> nn.Module:
    """Return ``model`` with every foldable sub-module replaced by its deploy form.

    Args:
        model: any network; modules without ``fuse`` are kept as they are.
        fold_num_in: also fold input replication (networks with ``fold_num_in()``, e.g. LKDN),
            so the deploy network takes ``num_in: 1``. Ignored, with a warning, for networks
            without it.
        inplace: modify ``model`` itself instead of a deep copy (a model that is itself
            foldable is returned as a new module either way).
        log: log how many modules were folded (when there were any).

    The result is in the same train/eval mode as the input; its forward equals the original's
    up to float rounding.
    """
    model, count = fold_modules(model if inplace else copy.deepcopy(model))
    if count and log:
        logger.info("re-parameterized %d module(s) of %s", count, type(model).__name__)
    if fold_num_in:
        if callable(getattr(model, "fold_num_in", None)):
            with torch.no_grad():
                model.fold_num_in()
        else:
            logger.warning("%s has no fold_num_in(); input replication left as it is", type(model).__name__)
    return model


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


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Make ``dtype`` torch's default floating dtype inside the block, and restore the previous one after.

    Modules and tensors created without an explicit dtype (``nn.Conv2d(...)`` in a ``fuse``) get ``dtype``.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


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
      wrong one by as much as in float32. The fold runs with float64 as torch's default dtype, so a
      ``fuse`` that builds its modules in the default dtype (``nn.Conv2d(...)``, then copies the
      folded weights in) keeps them in float64 instead of rounding them to float32.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(tuple(input_shape), generator=generator, dtype=torch.float64)
    diff32, scale32, _ = max_abs_difference(original, deploy, inputs, dtype=torch.float32)
    original64 = copy.deepcopy(original).to(torch.float64)
    with default_dtype(torch.float64):
        folded64 = reparameterize_model(original64, fold_num_in=fold_num_in, log=False)  # the same fold again
    diff64, scale, shape = max_abs_difference(original64, folded64, inputs, dtype=torch.float64)
    return Verification(
        max_diff32=diff32, max_diff64=diff64, atol=atol * max(1.0, scale32), atol64=atol64 * max(1.0, scale),
        output_scale=scale,
        input_shape=tuple(input_shape), output_shape=shape,
    )
