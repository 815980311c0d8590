"""BatchNorm in population mode while the rest of the network keeps training.

RepSR (Wang, Dong, Shan 2022) trains its BatchNorm layers on batch statistics first and
switches them to their running (population) statistics for the last part of training, which
removes the artifacts batch statistics cause at test time. ``train.bn_population_after: <iter>``
does that for any network: from that iteration on every ``_BatchNorm`` module is in eval mode
(normalizes with, and no longer updates, its running statistics); its affine weights still learn.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_modules(net: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``net`` (1d, 2d, 3d, SyncBatchNorm)."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


def set_train_mode(net: nn.Module, *, bn_population: bool) -> int:
    """``net.train()``, then BatchNorm layers to eval mode when ``bn_population``; returns how many."""
    net.train()
    if not bn_population:
        return 0
    layers = batchnorm_modules(net)
    for layer in layers:
        layer.eval()
    return len(layers)
