"""Compatibility shims for running basicsr 1.4.2 on current torchvision.

basicsr 1.4.2 (its last release) imports ``torchvision.transforms.functional_tensor`` in
``basicsr/data/degradations.py``. torchvision 0.17 removed that module; the only name
basicsr takes from it, ``rgb_to_grayscale``, lives in ``torchvision.transforms.functional``.
:func:`install_torchvision_alias` registers a small alias module under the old name. It
must run before the first ``import basicsr``; ``lkdn/__init__.py`` calls it first thing.
This is the only place the project adapts basicsr; basicsr's own code is never patched.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_OLD_NAME = "torchvision.transforms.functional_tensor"


def install_torchvision_alias() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable (no-op when it exists)."""
    if _OLD_NAME in sys.modules:
        return
    try:
        if importlib.util.find_spec(_OLD_NAME) is not None:
            return
    except ModuleNotFoundError:
        pass
    from torchvision.transforms import functional  # only when the alias is missing

    alias = types.ModuleType(_OLD_NAME)
    alias.__doc__ = "Alias created by lkdn.compat for basicsr 1.4.2 on torchvision >= 0.17."
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[_OLD_NAME] = alias
