"""lkdn: a BasicSR-style framework for efficient single-image super-resolution (LKDN and kin).

Importing the package installs the torchvision alias that basicsr 1.4.2 needs
(:mod:`lkdn.compat`) and registers every architecture, dataset and training model of ours in
the registries (architectures and datasets in basicsr's, so BasicSR-style YAML finds
``type: LKDN``; training models in :data:`lkdn.models.MODEL_REGISTRY`).
"""

from lkdn.compat import install_torchvision_alias

install_torchvision_alias()

from lkdn import archs, data, models  # noqa: E402,F401 (registers architectures, datasets, training models)
from lkdn.archs import build_network  # noqa: E402
from lkdn.loading import load_network_from_options  # noqa: E402
from lkdn.upscaler import Upscaler  # noqa: E402 (the inference API, lkdn.Upscaler)

__version__ = "0.2.0"
__all__ = ["Upscaler", "build_network", "load_network_from_options", "__version__"]
