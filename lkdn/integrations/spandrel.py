"""spandrel support: load LKDN and RFDN checkpoints with ``spandrel.ModelLoader``.

    import lkdn.integrations.spandrel as lkdn_spandrel
    from spandrel import ModelLoader

    lkdn_spandrel.install()
    model = ModelLoader().load_from_file("LKDN_x4.pth")  # ImageModelDescriptor, model.scale == 4
    sr = model(lr)                                         # 1x3xHxW in [0, 1] -> 1x3x4Hx4W

:func:`install` adds two architectures to spandrel's registry (``MAIN_REGISTRY`` by default),
detected from state-dict keys before spandrel's built-in ones, with every hyperparameter read
from tensor shapes:

* ``lkdn:LKDN``: LKDN and LKDN-S in every form: training form (RBSB ``BSConvU_rep`` and
  ``pixelshuffle_rep``) or deploy form, ``num_in`` 1 or 4, any ``num_feat``, ``num_atten``,
  ``num_block``, ``upscale``, and the ``attention`` ablations. ``BSConvU_idt`` has the same
  parameters as ``BSConvU`` and cannot be told apart: it loads as ``BSConvU``.
* ``lkdn:RFDN``: RFDN / E-RFDN with ESA or CCA. ``img_range`` is not stored in the weights:
  the network is run on a small smooth test image with ``img_range`` 1 and 255, and the one
  whose output stays closer to the bicubic upscale of the image is kept (255 for the official
  ``RFDN_AIM.pth``).

spandrel unwraps BasicSR checkpoints itself, preferring ``params_ema`` over ``params`` (the
only key whose names match the architecture in the official ``LKDN_x4.pth``).
spandrel is an optional dependency: ``import lkdn`` never imports it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

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
    from spandrel.util import KeyCondition
except ImportError as _err:  # pragma: no cover - exercised by a test that hides spandrel
    raise ImportError(
        f"lkdn.integrations.spandrel needs spandrel ({_err}): pip install lkdn[spandrel]"
    ) from _err

from lkdn.archs.lkdn_arch import LKDN
from lkdn.archs.rfdn_arch import RFDN

logger = logging.getLogger(__name__)

LKDN_ID = "lkdn:LKDN"
RFDN_ID = "lkdn:RFDN"
IMAGE_CHANNELS = (3, 1, 4)
"""Candidate image channel counts, most likely first (spandrel's convention)."""


class ShapeError(ValueError):
    """A state dict matched the keys of an architecture but its shapes make no network."""


def _count_blocks(state: Mapping[str, object], key: str) -> int:
    """How many consecutive ``B1``, ``B2``, ... blocks have ``B{i}.{key}``."""
    count = 0
    while f"B{count + 1}.{key}" in state:
        count += 1
    return count


def _scale_and_channels(out_total: int, in_total: int) -> tuple[int, int, int]:
    """``(scale, image channels, input replication)`` from a PixelShuffle conv's output size.

    ``out_total = channels * scale**2`` and ``in_total = channels * replication``; the
    channel count is taken from :data:`IMAGE_CHANNELS`, the first that fits both.
    """
    for channels in IMAGE_CHANNELS:
        if out_total % channels or in_total % channels:
            continue
        scale = math.isqrt(out_total // channels)
        if scale * scale * channels == out_total:
            return scale, channels, in_total // channels
    raise ShapeError(f"no image channel count in {IMAGE_CHANNELS} fits {in_total} input and {out_total} upsampler channels")


def _shape(state: StateDict, key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


class LKDNArch(Architecture[LKDN]):
    """LKDN / LKDN-S for spandrel (training and deploy forms, any size)."""

    def __init__(self) -> None:
        super().__init__(
            id=LKDN_ID,
            name="LKDN",
            detect=KeyCondition.has_all(
                "fea_conv.pw.weight",
                "fea_conv.dw.weight",
                "B1.c1_d.weight",
                "B1.c1_r.pw.weight",
                "B1.c4.pw.weight",
                "B1.c5.weight",
                "B1.c6.weight",
                "B1.pixel_norm.weight",
                "c1.weight",
                "c2.pw.weight",
                KeyCondition.has_any("upsampler.0.weight", "upsampler.conv1.weight"),
            ),
        )

    @staticmethod
    def options(state: StateDict) -> dict[str, object]:
        """The ``network_g`` options (``type: LKDN``) that the state dict fits."""
        num_feat, in_total = _shape(state, "fea_conv.pw.weight")[:2]
        num_block = _count_blocks(state, "c1_d.weight")
        num_atten = _shape(state, "B1.c5.weight")[0]
        rep_upsampler = "upsampler.conv1.weight" in state
        out_total = _shape(state, "upsampler.conv1.weight" if rep_upsampler else "upsampler.0.weight")[0]
        upscale, channels, num_in = _scale_and_channels(out_total, in_total)
        if "B1.atten.pointwise.weight" in state:
            attention = "lka"
        elif any(k.startswith("B1.atten.esa.") for k in state):
            attention = "esa_cca"
        else:
            attention = "none"
        options: dict[str, object] = {
            "type": "LKDN", "num_in_ch": channels, "num_out_ch": channels, "num_feat": num_feat,
            "num_atten": num_atten, "num_block": num_block, "upscale": upscale, "num_in": num_in,
            "conv": "BSConvU_rep" if "B1.c1_r.rep1x1.weight" in state else "BSConvU",
            "upsampler": "pixelshuffle_rep" if rep_upsampler else "pixelshuffledirect",
        }
        if attention != "lka":
            options["attention"] = attention
        return options

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[LKDN]:
        options = self.options(state_dict)
        kwargs = {k: v for k, v in options.items() if k != "type"}
        model = LKDN(**kwargs)
        tags = [f"{options['num_feat']}nf", f"{options['num_block']}b"]
        if options["conv"] == "BSConvU_rep":
            tags.append("training-form")
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR" if options["upscale"] > 1 else "Restoration",
            tags=tags,
            # the attention stage reaches ~1e11 before the pixel norm: float16 overflows
            supports_half=False,
            supports_bfloat16=True,
            scale=int(options["upscale"]),
            input_channels=int(options["num_in_ch"]),
            output_channels=int(options["num_out_ch"]),
        )


def _probe_image(channels: int, size: int = 32) -> torch.Tensor:
    """A smooth 1 x channels x size x size test image in [0.1, 0.9] (sinusoids, no noise)."""
    y = torch.linspace(0, 1, size)[:, None]
    x = torch.linspace(0, 1, size)[None]
    planes = [0.5 + 0.4 * torch.sin(2 * math.pi * (x * (k + 1) + y * (2 - k) / 2)) for k in range(channels)]
    return torch.stack(planes)[None]


@torch.no_grad()
def _infer_img_range(kwargs: Mapping[str, object], state: StateDict, candidates: tuple[float, ...] = (1.0, 255.0)) -> float:
    """The ``img_range`` whose output on :func:`_probe_image` is closest to its bicubic upscale."""
    image = _probe_image(int(kwargs["num_in_ch"]))
    target = F.interpolate(image, scale_factor=int(kwargs["upscale"]), mode="bicubic", align_corners=False)
    errors = {}
    for img_range in candidates:
        model = RFDN(**kwargs, img_range=img_range)
        model.load_state_dict(state)
        errors[img_range] = float((model.eval()(image).float() - target).abs().mean())
    best = min(errors, key=errors.__getitem__)
    logger.info("RFDN img_range probe (mean |output - bicubic| per range): %s -> %s", errors, best)
    return best


class RFDNArch(Architecture[RFDN]):
    """RFDN / E-RFDN for spandrel (ESA or CCA, any size; ``img_range`` probed)."""

    def __init__(self) -> None:
        super().__init__(
            id=RFDN_ID,
            name="RFDN",
            detect=KeyCondition.has_all(
                "fea_conv.weight",
                "B1.c1_d.weight",
                "B1.c1_r.weight",
                "B1.c4.weight",
                "B1.c5.weight",
                "c.0.weight",
                "LR_conv.weight",
                "upsampler.0.weight",
                KeyCondition.has_any("B1.esa.conv1.weight", "B1.cca.conv_du.0.weight"),
            ),
        )

    @staticmethod
    def options(state: StateDict) -> dict[str, object]:
        """The ``network_g`` options (``type: RFDN``) that the state dict fits, ``img_range`` probed."""
        num_feat, num_in_ch = _shape(state, "fea_conv.weight")[:2]
        upscale, num_out_ch, _ = _scale_and_channels(_shape(state, "upsampler.0.weight")[0], num_in_ch)
        kwargs: dict[str, object] = {
            "num_in_ch": num_in_ch, "num_feat": num_feat, "num_block": _count_blocks(state, "c1_d.weight"),
            "num_out_ch": num_out_ch, "upscale": upscale,
        }
        if "B1.cca.conv_du.0.weight" in state:
            kwargs["attention"] = "cca"
            kwargs["cca_reduction"] = num_feat // _shape(state, "B1.cca.conv_du.0.weight")[0]
        else:
            kwargs["attention"] = "esa"
        kwargs["img_range"] = _infer_img_range(kwargs, state)
        return {"type": "RFDN", **kwargs}

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[RFDN]:
        options = self.options(state_dict)
        model = RFDN(**{k: v for k, v in options.items() if k != "type"})
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR" if options["upscale"] > 1 else "Restoration",
            tags=[f"{options['num_feat']}nf", f"{options['num_block']}b", str(options["attention"])],
            supports_half=False,  # not verified in float16
            supports_bfloat16=True,
            scale=int(options["upscale"]),
            input_channels=int(options["num_in_ch"]),
            output_channels=int(options["num_out_ch"]),
            # ESA: a stride-2 3x3 conv and a 7x7 max-pool need 15 pixels
            size_requirements=SizeRequirements(minimum=15) if options["attention"] == "esa" else None,
        )


ARCHITECTURES = (LKDNArch, RFDNArch)


def install(registry: ArchRegistry | None = None) -> list[str]:
    """Register LKDN and RFDN in ``registry`` (spandrel's ``MAIN_REGISTRY`` by default).

    Ours are detected before every architecture already registered, so they win over any
    built-in whose keys happen to match. Calling it again does nothing (idempotent).
    Returns the ids added by this call.
    """
    registry = _MAIN_REGISTRY if registry is None else registry
    existing = tuple(arch.architecture.id for arch in registry.architectures("insertion"))
    supports = []
    for arch_class in ARCHITECTURES:
        arch = arch_class()
        current = registry.get(arch.id)
        if current is not None:
            kind = type(current.architecture)
            if (kind.__module__, kind.__qualname__) != (arch_class.__module__, arch_class.__qualname__):
                raise RuntimeError(f"spandrel registry already has a different architecture with id {arch.id!r}")
            continue
        supports.append(ArchSupport(arch, arch.detect, before=tuple(i for i in existing if i != arch.id)))
    added = registry.add(*supports)
    ids = [support.architecture.id for support in added]
    if ids:
        logger.info("registered %s with spandrel", ", ".join(ids))
    return ids
