"""lkdn: a BasicSR-style framework for efficient single-image super-resolution (LKDN and kin).

``import lkdn`` is cheap: it imports no torch. It installs the torchvision alias that basicsr 1.4.2
needs (:mod:`lkdn.utils`, found on first use), so every later ``import basicsr`` works. The API is
imported on first use (PEP 562): ``lkdn.Upscaler`` (:mod:`lkdn.upscaler`), ``lkdn.build_network``
(:mod:`lkdn.archs`) and ``lkdn.load_network_from_options`` (:mod:`lkdn.loading`). Our architectures,
datasets and training models register themselves when their packages are imported (:mod:`lkdn.archs`,
:mod:`lkdn.data`, :mod:`lkdn.models`), which every module that builds one does; architectures and
datasets go to basicsr's registries, so BasicSR-style YAML finds ``type: LKDN``.
"""

from __future__ import annotations

import importlib
from typing import Any

from lkdn.utils import install_torchvision_alias

install_torchvision_alias()

__version__ = "0.2.0"
__all__ = ["Upscaler", "build_network", "load_network_from_options", "__version__"]

#: the API's names -> the module that holds each, imported on first use
_LAZY = {"Upscaler": "lkdn.upscaler", "build_network": "lkdn.archs", "load_network_from_options": "lkdn.loading"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lkdn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
