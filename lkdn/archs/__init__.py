"""Network architectures. Importing this package imports every ``*_arch.py`` module in this folder,
which registers its networks in basicsr's ``ARCH_REGISTRY`` (BasicSR's convention) with their
contracts (:mod:`lkdn.archs.contract`); :func:`build_network` builds one from ``network_g`` options."""

import importlib
from pathlib import Path

from lkdn.archs.build import build_network, network_kwargs
from lkdn.archs.contract import contract, contract_of, our_architectures

for _file in sorted(Path(__file__).parent.glob("*_arch.py")):
    importlib.import_module(f"lkdn.archs.{_file.stem}")

__all__ = ["build_network", "contract", "contract_of", "network_kwargs", "our_architectures"]
