"""lkdn: a BasicSR-style framework for efficient single-image super-resolution (LKDN and kin).

Importing the package installs the torchvision alias that basicsr 1.4.2 needs
(:mod:`lkdn.compat`) and registers every architecture, dataset, loss and model of ours in
basicsr's registries, so BasicSR-style YAML finds ``type: LKDN``.
"""

from lkdn.compat import install_torchvision_alias

install_torchvision_alias()

from lkdn import archs, data, models  # noqa: E402,F401 (registers architectures, datasets, training models)
from lkdn.archs import build_network  # noqa: E402
from lkdn.upscaler import Upscaler  # noqa: E402,F401 (the inference API, lkdn.Upscaler)

__version__ = "0.1.0"
__all__ = ["Upscaler", "build_network", "__version__"]
