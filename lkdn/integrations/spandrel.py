"""spandrel support: load checkpoints of every architecture of ours with ``spandrel.ModelLoader``.

    import lkdn.integrations.spandrel as lkdn_spandrel
    from spandrel import ModelLoader

    lkdn_spandrel.install()
    model = ModelLoader().load_from_file("LKDN_x4.pth")  # ImageModelDescriptor, model.scale == 4
    sr = model(lr)                                         # 1x3xHxW in [0, 1] -> 1x3x4Hx4W

    model = lkdn_spandrel.load_model("LKDN_x4.pth")       # the same, read by lkdn's safe loader

:func:`load_model` reads the file with :func:`lkdn.checkpoint.load_file` (``weights_only``
or safetensors; never TorchScript, which spandrel tries for ``.pt``) and raises one-line
:class:`lkdn.checkpoint.CheckpointError` for a file that is unreadable, would run code, or
holds no architecture spandrel knows.

:func:`install` adds one spandrel architecture per architecture of ours whose contract declares
a ``spandrel`` detection (:class:`lkdn.archs.contract.StateDictDetection`), with id
``lkdn:<name>``, detected from state-dict keys before spandrel's built-in ones, every
hyperparameter read from tensor shapes by the architecture's own function. Nothing here is
specific to a network: a new architecture that declares its detection is picked up as it is.
What each detection cannot read from the weights is in its architecture's file (RFDN's
``img_range`` is probed; VDSR's weights fix no scale, so it loads at x4; LKDN's ``BSConvU_idt``
has the parameters of ``BSConvU`` and loads as ``BSConvU``).

spandrel unwraps BasicSR checkpoints itself, preferring ``params_ema`` over ``params`` (the
only key whose names match the architecture in the official ``LKDN_x4.pth``), and loads
files through its own safe loader (``weights_only``).
spandrel is an optional dependency: ``import lkdn`` never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

try:
    from spandrel import MAIN_REGISTRY as _MAIN_REGISTRY
    from spandrel import (
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        SizeRequirements,
        StateDict,
    )
except ImportError as _err:  # pragma: no cover - exercised by a test that hides spandrel
    raise ImportError(
        f"lkdn.integrations.spandrel needs spandrel ({_err}): pip install -e \".[spandrel]\" in the clone"
    ) from _err

from lkdn.archs import build_network, our_architectures
from lkdn.archs.contract import ArchContract
from lkdn.checkpoint import CheckpointError, extract_state_dict, load_file

logger = logging.getLogger(__name__)

ID_PREFIX = "lkdn:"


class ContractArch(Architecture[nn.Module]):
    """A spandrel architecture made from one of our architectures' contract.

    Args:
        entry: the contract; it must declare a ``spandrel`` detection.
    """

    def __init__(self, entry: ArchContract) -> None:
        if entry.spandrel is None:
            raise ValueError(f"{entry.name} declares no spandrel detection")
        detection = entry.spandrel
        super().__init__(id=f"{ID_PREFIX}{entry.name}", name=entry.name, detect=detection.matches)
        self.entry = entry

    def options(self, state_dict: StateDict) -> dict[str, Any]:
        """The ``network_g`` options the state dict fits (read from its shapes)."""
        assert self.entry.spandrel is not None
        return self.entry.spandrel.options(state_dict)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[nn.Module]:
        detection = self.entry.spandrel
        assert detection is not None
        options = self.options(state_dict)
        # the network may hold no more tensors or values than the state dict: shapes that imply
        # 20,000 channels are refused before anything is allocated
        model = build_network(options, where=f"{self.name} options read from the state dict", weights=state_dict,
                              weights_source="the state dict")
        scale = int(getattr(model, "upscale", options.get("upscale", 1)))
        channels = int(options.get("num_in_ch", 3))
        tags = [f"{k}={v}" for k, v in options.items() if k != "type" and v != self.entry.default(k)]
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR" if scale > 1 else "Restoration",
            tags=tags,
            supports_half=detection.supports_half,
            supports_bfloat16=True,
            scale=scale,
            input_channels=channels,
            output_channels=int(options.get("num_out_ch", channels)),
            size_requirements=SizeRequirements(minimum=detection.min_size) if detection.min_size else None,
        )


def architectures() -> list[ContractArch]:
    """One spandrel architecture per architecture of ours that declares a detection."""
    return [ContractArch(entry) for entry in our_architectures().values() if entry.spandrel is not None]


def install(registry: ArchRegistry | None = None) -> list[str]:
    """Register our architectures in ``registry`` (spandrel's ``MAIN_REGISTRY`` by default).

    Ours are detected before every architecture already registered, so they win over any
    built-in whose keys happen to match. Calling it again does nothing (idempotent).
    Returns the ids added by this call.
    """
    registry = _MAIN_REGISTRY if registry is None else registry
    existing = tuple(arch.architecture.id for arch in registry.architectures("insertion"))
    supports = []
    for arch in architectures():
        current = registry.get(arch.id)
        if current is not None:
            kind = type(current.architecture)
            if (kind.__module__, kind.__qualname__) != (ContractArch.__module__, ContractArch.__qualname__):
                raise RuntimeError(f"spandrel registry already has a different architecture with id {arch.id!r}")
            continue
        supports.append(ArchSupport(arch, arch.detect, before=tuple(i for i in existing if i != arch.id)))
    added = registry.add(*supports)
    ids = [support.architecture.id for support in added]
    if ids:
        logger.info("registered %s with spandrel", ", ".join(ids))
    return ids


def load_model(path: Any, device: Any = "cpu") -> ImageModelDescriptor:
    """A spandrel model descriptor for the checkpoint ``path``, read only by lkdn's safe loader.

    Our architectures are :func:`install`-ed first. BasicSR dicts are unwrapped as spandrel does
    (``params_ema`` before ``params``).

    Raises:
        CheckpointError: the file is missing, unreadable or would run code, or spandrel knows no
            architecture for its tensors (the message names the file and a few keys).
    """
    from spandrel import ModelLoader, UnsupportedModelError  # optional: spandrel

    install()
    state = extract_state_dict(load_file(path), source=str(path))
    try:
        return ModelLoader(device=device).load_from_state_dict(state)
    except UnsupportedModelError as err:
        keys = ", ".join(list(state)[:4])
        raise CheckpointError(f"{path}: spandrel knows no architecture with these tensors ({keys}, ...); "
                              "lkdn's own architectures are detected after install()") from err
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the tensors look like a known architecture but do not load ({err})") from err
