"""Re-parameterization: replace every foldable module of a network by its deploy module.

A foldable module exposes ``fuse() -> nn.Module`` (under ``torch.no_grad``) returning the
module that computes exactly the same function with plain convs (RBSB -> BSConvU,
PixelShuffleRep -> PixelShuffleDirect, ...). :func:`reparameterize_model` walks any network
and swaps them; with ``fold_num_in=True`` it also folds LKDN's input replication.
"""

from __future__ import annotations

import copy

from torch import nn


def is_foldable(module: nn.Module) -> bool:
    """Whether ``module`` has a deploy form (a ``fuse`` method)."""
    return callable(getattr(module, "fuse", None))


def _replace_children(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if is_foldable(child):
            setattr(module, name, child.fuse())
            count += 1
        else:
            count += _replace_children(child)
    return count


def reparameterize_model(model: nn.Module, *, fold_num_in: bool = False, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every foldable sub-module replaced by its deploy form.

    Args:
        model: any network; modules without ``fuse`` are kept as they are.
        fold_num_in: also fold input replication (networks with ``fold_num_in()``, e.g. LKDN),
            so the deploy network takes ``num_in: 1``.
        inplace: modify ``model`` itself instead of a deep copy.

    The result is in the same train/eval mode as the input; its forward equals the original's
    up to float rounding.
    """
    model = model if inplace else copy.deepcopy(model)
    if is_foldable(model):
        model = model.fuse()
    else:
        _replace_children(model)
    if fold_num_in and callable(getattr(model, "fold_num_in", None)):
        model.fold_num_in()
    return model


def deploy_options(network_opt: dict, *, fold_num_in: bool = False) -> dict:
    """The ``network_g`` options of the deploy form of ``network_opt`` (a new dict)."""
    opt = dict(network_opt)
    if opt.get("conv") in ("BSConvU_rep", "RBSB"):
        opt["conv"] = "BSConvU"
    if opt.get("upsampler") == "pixelshuffle_rep":
        opt["upsampler"] = "pixelshuffledirect"
    if fold_num_in:
        opt["num_in"] = 1
    return opt
