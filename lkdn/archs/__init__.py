"""Network architectures. Importing this package imports every ``*_arch.py`` module in this
folder, which registers its networks in basicsr's ``ARCH_REGISTRY`` (BasicSR's convention);
:func:`build_network` builds one from ``network_g`` options."""

import importlib
from pathlib import Path

from lkdn.archs.build import build_network, network_kwargs

for _file in sorted(Path(__file__).parent.glob("*_arch.py")):
    importlib.import_module(f"lkdn.archs.{_file.stem}")

__all__ = ["build_network", "network_kwargs"]
