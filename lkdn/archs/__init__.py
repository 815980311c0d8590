"""Network architectures. Importing this package registers every ``*_arch`` module's
networks in basicsr's ``ARCH_REGISTRY``; :func:`build_network` builds one from options."""

from lkdn.archs import lkdn_arch  # noqa: F401 (registers)
from lkdn.archs.build import build_network, network_kwargs

__all__ = ["build_network", "network_kwargs"]
