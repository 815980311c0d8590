"""Compatibility shims for running basicsr 1.4.2 on current torchvision.

basicsr 1.4.2 (its last release) imports ``torchvision.transforms.functional_tensor`` in
``basicsr/data/degradations.py``. torchvision 0.17 removed that module; the only name
basicsr takes from it, ``rgb_to_grayscale``, lives in ``torchvision.transforms.functional``.
:func:`install_torchvision_alias` puts a finder last on ``sys.meta_path`` that answers for the
old name only when no other finder does, with a small alias module. Installing it imports
nothing (``import lkdn`` calls it first thing and stays cheap); torchvision is imported when
basicsr asks for the old name. This is the only place the project adapts basicsr; basicsr's
own code is never patched.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

_OLD_NAME = "torchvision.transforms.functional_tensor"


class _AliasLoader(importlib.abc.Loader):
    """Makes the alias module: ``rgb_to_grayscale`` of ``torchvision.transforms.functional``."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        from torchvision.transforms import functional  # only when basicsr asks for the old name

        module.__doc__ = "Alias created by lkdn.compat for basicsr 1.4.2 on torchvision >= 0.17."
        module.rgb_to_grayscale = functional.rgb_to_grayscale


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: finds the old name when torchvision no longer has it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _OLD_NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


def install_torchvision_alias() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable (the real one wins where it exists)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
