"""What a training step minimizes and how: losses, optimizers and learning-rate schedulers by name.

**The training losses the options may name, and a perceptual loss that reads its VGG safely.**

``train.pixel_opt`` / ``train.perceptual_opt`` name a loss ``type``. Accepted are basicsr's
losses that read no file (:data:`FILE_FREE_LOSSES`) and ``PerceptualLoss``, which here is
:class:`PerceptualLoss`: basicsr's loss (same ``forward``, same arguments) with VGG weights
read by :func:`lkdn.checkpoint.load_file` from a file the options name, never fetched by
``torch.hub`` (which unpickles without ``weights_only``) and never ``torch.load``-ed from a
fixed path in the working directory, as basicsr's ``VGGFeatureExtractor`` does. Every other
entry of basicsr's ``LOSS_REGISTRY`` (GAN losses, which :class:`lkdn.models.sr_model.SRModel` has no
discriminator for) is refused by name.

**Optimizer registry: every ``torch.optim`` optimizer by its class name, plus ``Adan``.**

``type: Adan`` is ``timm.optim.Adan``, a port of the official implementation (sail-sg/Adan):
Algorithm 1 of Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
Deep Models" (arXiv 2208.06677), with ``betas`` given as the official configs and the paper's
default write them, ``(0.98, 0.92, 0.99)`` (the paper's coefficients are ``1 - beta``), and the
official YAML keys ``lr, betas, eps, weight_decay, no_prox, foreach``. The package
``adan-pytorch`` takes ``1 - beta`` and starts its moments differently; it is not used.

Learning-rate schedulers by name (``train.scheduler.type``), and the linear warm-up:

* ``MultiStepLR`` / ``MultiStepRestartLR``: basicsr's ``MultiStepRestartLR`` (as basicsr maps them).
* ``CosineAnnealingRestartLR``: basicsr's.
* ``CosineAnnealingLR`` and the other ``torch.optim.lr_scheduler`` classes whose arguments are
  plain numbers and lists (``StepLR``, ``ExponentialLR``, ``OneCycleLR``, ...): torch's.

Schedulers step once per iteration (BasicSR's convention: the learning rate of iteration
``it`` is the schedule's value after ``it - 1`` steps).
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from basicsr.archs.vgg_arch import NAMES, insert_bn
from basicsr.losses.basic_loss import PerceptualLoss as BasicsrPerceptualLoss
from basicsr.models import lr_scheduler as basicsr_schedulers
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torch.optim import lr_scheduler as torch_schedulers

from lkdn.checkpoint import CheckpointError, extract_state_dict, load_file
from lkdn.utils import did_you_mean, thaw, unknown_keywords, unknown_name

FILE_FREE_LOSSES = ("L1Loss", "MSELoss", "CharbonnierLoss", "WeightedTVLoss")

#: torchvision's ImageNet VGG files: ``<type>-<first 8 hex digits of the SHA-256>.pth``
VGG_FILES = {
    "vgg11": "vgg11-8a719046.pth", "vgg13": "vgg13-19584684.pth", "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth", "vgg11_bn": "vgg11_bn-6002323d.pth", "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth", "vgg19_bn": "vgg19_bn-c79401a0.pth",
}
VGG_URL = "https://download.pytorch.org/models/{}"
VGG_HOME = Path("experiments") / "pretrained_models"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth$")


def default_vgg_weights(vgg_type: str) -> Path:
    """Where a VGG file is looked for when ``vgg_weights`` is not given (BasicSR's folder)."""
    return VGG_HOME / VGG_FILES[vgg_type]


def _vgg_features(vgg_type: str, weights: Path, last: int) -> nn.Sequential:
    """torchvision's ``vgg_type`` feature layers ``0..last`` with the weights of ``weights``."""
    import torchvision.models as tv  # lazy: the perceptual loss only

    if not weights.is_file():
        name = VGG_FILES[vgg_type]
        raise CheckpointError(
            f"perceptual loss: VGG weights {weights} not found; download {VGG_URL.format(name)} to "
            f"{VGG_HOME / name} (torchvision's ImageNet {vgg_type}) or set perceptual_opt.vgg_weights"
        )
    match = _HASH_IN_NAME.search(weights.name)
    if match:  # torch.hub's convention: the name carries the start of the file's SHA-256
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if not digest.startswith(match.group(1)):
            raise CheckpointError(f"{weights}: SHA-256 {digest[:12]}... does not start with {match.group(1)} as its "
                                  "name says: a corrupt or different file; download it again")
    features = getattr(tv, vgg_type)(weights=None).features[: last + 1]
    state = extract_state_dict(load_file(weights), source=str(weights))
    wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    own = features.state_dict()
    missing = sorted(set(own) - set(wanted))
    if missing:
        raise CheckpointError(f"{weights}: not {vgg_type} weights (no features.{missing[0]})")
    for key, tensor in own.items():
        if wanted[key].shape != tensor.shape:
            raise CheckpointError(f"{weights}: features.{key} has shape {tuple(wanted[key].shape)}, {vgg_type} "
                                  f"needs {tuple(tensor.shape)}")
    features.load_state_dict({k: wanted[k] for k in own})
    return features


class VGGFeatures(nn.Module):
    """The outputs of named VGG layers, as basicsr's ``VGGFeatureExtractor`` returns them (frozen)."""

    def __init__(self, layer_names: list[str], *, vgg_type: str, weights: Path, use_input_norm: bool,
                 range_norm: bool) -> None:
        super().__init__()
        names = NAMES[vgg_type.replace("_bn", "")]
        self.names = insert_bn(names) if "bn" in vgg_type else names
        self.layer_names = list(layer_names)
        last = max(self.names.index(name) for name in self.layer_names)
        features = _vgg_features(vgg_type, weights, last)
        layers = OrderedDict()
        for name, layer in zip(self.names, features, strict=False):
            layers[name] = nn.MaxPool2d(kernel_size=2, stride=2) if "pool" in name else layer
        self.vgg_net = nn.Sequential(layers).eval().requires_grad_(False)
        self.use_input_norm, self.range_norm = use_input_norm, range_norm
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        super().train(mode)
        self.vgg_net.eval()  # a frozen feature extractor
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.range_norm:
            x = (x + 1) / 2
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        output = {}
        for name, layer in self.vgg_net._modules.items():
            x = layer(x)
            if name in self.layer_names:
                output[name] = x.clone()
        return output


class PerceptualLoss(BasicsrPerceptualLoss):
    """basicsr's perceptual (and style) loss on VGG features, the VGG read by lkdn's safe loader.

    Args:
        layer_weights: weight per VGG layer name, e.g. ``{"conv5_4": 1.0}``.
        vgg_type: ``vgg11`` ... ``vgg19`` or their ``_bn`` variants.
        use_input_norm: normalize [0, 1] inputs with the ImageNet mean and std.
        range_norm: map [-1, 1] inputs to [0, 1] first.
        perceptual_weight: weight of the feature distance (0 turns it off).
        style_weight: weight of the Gram-matrix distance (0 turns it off).
        criterion: ``l1``, ``l2`` or ``fro``.
        vgg_weights: torchvision's ImageNet weights of ``vgg_type`` (``.pth`` or ``.safetensors``);
            default ``experiments/pretrained_models/<torchvision file name>``.
    """

    def __init__(self, layer_weights: Mapping[str, float], vgg_type: str = "vgg19", use_input_norm: bool = True,
                 range_norm: bool = False, perceptual_weight: float = 1.0, style_weight: float = 0.0,
                 criterion: str = "l1", vgg_weights: str | None = None) -> None:
        nn.Module.__init__(self)
        if vgg_type not in VGG_FILES:
            raise ValueError(unknown_name("VGG type", vgg_type, VGG_FILES, where="perceptual_opt.vgg_type"))
        unknown = sorted(set(layer_weights) - set(NAMES[vgg_type.replace("_bn", "")]))
        if unknown:
            raise ValueError(unknown_name(f"{vgg_type} layer", unknown[0], NAMES[vgg_type.replace("_bn", "")],
                                          where="perceptual_opt.layer_weights"))
        criteria = {"l1": nn.L1Loss(), "l2": nn.MSELoss(), "fro": None}
        if criterion not in criteria:
            raise ValueError(unknown_name("criterion", criterion, criteria, where="perceptual_opt.criterion"))
        self.perceptual_weight, self.style_weight = perceptual_weight, style_weight
        self.layer_weights = dict(layer_weights)
        self.criterion_type, self.criterion = criterion, criteria[criterion]
        weights = Path(vgg_weights) if vgg_weights else default_vgg_weights(vgg_type)
        self.vgg = VGGFeatures(list(layer_weights), vgg_type=vgg_type, weights=weights,
                               use_input_norm=use_input_norm, range_norm=range_norm)


def loss_class(name: str) -> type[nn.Module]:
    """The loss class of a ``pixel_opt`` / ``perceptual_opt`` ``type`` (a ``KeyError`` naming the choices)."""
    if name == "PerceptualLoss":
        return PerceptualLoss
    if name in FILE_FREE_LOSSES:
        return LOSS_REGISTRY.get(name)
    known = (*FILE_FREE_LOSSES, "PerceptualLoss")
    if name in LOSS_REGISTRY:
        raise KeyError(f"basicsr's {name} is not a loss lkdn trains with (choose from {', '.join(known)})")
    raise KeyError(f"unknown loss {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")


def build_loss(options: Mapping[str, Any]) -> nn.Module:
    """The loss ``options`` describe (``type`` plus its arguments; ``options`` is not changed)."""
    arguments = thaw({k: v for k, v in options.items() if k != "type"})
    return loss_class(str(options.get("type")))(**arguments)


_EXTRA: dict[str, Callable[[], type[torch.optim.Optimizer]]] = {}


def _timm_adan() -> type[torch.optim.Optimizer]:
    from timm.optim import Adan  # optional: only Adan needs timm

    return Adan


_EXTRA["Adan"] = _timm_adan


def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    found = {}
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            found[name] = obj
    return found


def optimizer_names() -> list[str]:
    """Every name ``train.optim_g.type`` accepts."""
    return sorted({*_torch_optimizers(), *_EXTRA})


def get_optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class registered as ``name``; a ValueError suggests the nearest name."""
    if name in _EXTRA:
        return _EXTRA[name]()
    optimizers = _torch_optimizers()
    if name not in optimizers:
        raise ValueError(unknown_name("optimizer", name, optimizer_names(), where="train.optim_g.type"))
    return optimizers[name]


def _check_arguments(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    for key, problem in unknown_keywords(cls, kwargs, skip=("params",)):
        extra = " (clip gradients with train.grad_clip)" if key == "max_grad_norm" else ""
        raise ValueError(f"{where}.{key}: {problem}{extra}")


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], opt: Mapping[str, Any], *,
    where: str = "train.optim_g",
) -> torch.optim.Optimizer:
    """Build the optimizer ``opt['type']`` with the other keys of ``opt`` as arguments (``opt`` is not modified)."""
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (e.g. Adan or Adam)")
    cls = get_optimizer_class(opt["type"])
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    _check_arguments(cls, kwargs, where)
    for key in ("betas",):  # YAML lists -> tuples, as the optimizers document
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} ({opt['type']}): {err}") from err


# ----------------------------------------------------------------------------------- schedulers


# torch schedulers that need callables, other schedulers or a metric: not expressible in YAML.
_UNSUPPORTED = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau", "LRScheduler"}


def _registry() -> dict[str, type]:
    found: dict[str, type] = {}
    for name in dir(torch_schedulers):
        obj = getattr(torch_schedulers, name)
        if (inspect.isclass(obj) and issubclass(obj, torch_schedulers.LRScheduler) and not name.startswith("_")
                and name not in _UNSUPPORTED):
            found[name] = obj
    found["MultiStepLR"] = basicsr_schedulers.MultiStepRestartLR
    found["MultiStepRestartLR"] = basicsr_schedulers.MultiStepRestartLR
    found["CosineAnnealingRestartLR"] = basicsr_schedulers.CosineAnnealingRestartLR
    return found


def get_scheduler_class(name: str) -> type:
    """The scheduler class registered as ``name``; a ValueError suggests the nearest name."""
    registry = _registry()
    if name not in registry:
        raise ValueError(unknown_name("scheduler", name, registry, where="train.scheduler.type"))
    return registry[name]


def build_scheduler(
    optimizer: torch.optim.Optimizer, opt: Mapping[str, Any], *, where: str = "train.scheduler"
) -> Any:
    """Build the scheduler ``opt['type']`` for ``optimizer`` (``opt`` is not modified)."""
    if "type" not in opt:
        raise ValueError(f"{where}: missing key 'type' (e.g. MultiStepLR or CosineAnnealingRestartLR)")
    cls = get_scheduler_class(opt["type"])
    kwargs = {k: v for k, v in opt.items() if k != "type"}
    for key, problem in unknown_keywords(cls, kwargs, skip=("optimizer", "last_epoch", "verbose")):
        raise ValueError(f"{where}.{key}: {problem}")
    for key in ("milestones", "periods", "restarts", "restart_weights"):
        if key in kwargs and isinstance(kwargs[key], list | tuple):
            kwargs[key] = [int(v) if key != "restart_weights" else float(v) for v in kwargs[key]]
    for key in ("T_max", "step_size", "total_steps", "T_0"):
        if isinstance(kwargs.get(key), float):
            kwargs[key] = int(kwargs[key])
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(f"{where} ({opt['type']}): {err}") from err


def warmup_factor(current_iter: int, warmup_iter: int | float | None) -> float:
    """Linear warm-up: ``current_iter / warmup_iter`` while ``current_iter < warmup_iter``, else 1."""
    if warmup_iter is None or warmup_iter <= 0 or current_iter >= warmup_iter:
        return 1.0
    return current_iter / warmup_iter
