"""Read a BasicSR-style YAML option file into a plain dict, once, with clear errors.

The schema is BasicSR's (``name``, ``model_type``, ``scale``, ``num_gpu``, ``datasets``,
``network_g``, ``path``, ``train``, ``val``, ``logger``, ``dist_params``), so configs of the
official LKDN repository and of BasicSR run after changing data paths only. What this module
adds to ``basicsr.utils.options.parse_options``: no argparse or distributed set-up inside
(entry points do that), ``num_gpu: auto`` as the default, ``--force_yml`` overrides parsed
safely (no ``exec``), and errors that name the file and key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from lkdn.schema import SchemaError, validate_options


class OptionsError(ValueError):
    """An option file or override is invalid; the message names the file and key."""


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML mapping; errors name the file (and line for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f"option file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise OptionsError(f"{path}: not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise OptionsError(f"{path}: not a text file ({err})") from err
    except RecursionError as err:
        raise OptionsError(f"{path}: nested too deeply to be an option file") from err
    except OSError as err:
        raise OptionsError(f"{path}: cannot read ({err.strerror or err})") from err
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


def apply_override(opt: dict[str, Any], entry: str) -> None:
    """Apply one ``--force_yml`` entry ``a:b:c=value`` (``.`` also separates keys) in place.

    The value is parsed as YAML (``1e-4``, ``true``, ``[1, 2]``, ``~``). Intermediate keys must
    exist and be mappings.
    """
    if "=" not in entry:
        raise OptionsError(f"--force_yml {entry!r}: expected key=value, e.g. train:ema_decay=0.999")
    keys_text, value_text = (part.strip() for part in entry.split("=", 1))
    keys = [k for k in keys_text.replace(".", ":").split(":") if k]
    if not keys:
        raise OptionsError(f"--force_yml {entry!r}: empty key")
    node = opt
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            where = ":".join(keys[: depth + 1])
            raise OptionsError(f"--force_yml {entry!r}: {where} is not a section of the options")
        node = node[key]
    try:
        node[keys[-1]] = yaml.safe_load(value_text) if value_text else None
    except yaml.YAMLError as err:
        raise OptionsError(f"--force_yml {entry!r}: value is not valid YAML ({err})") from err


def resolve_num_gpu(value: Any) -> int:
    """``auto`` (or missing) -> the number of visible CUDA devices; an int is checked against it."""
    available = torch.cuda.device_count()
    if value in (None, "auto"):
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionsError(f"num_gpu: expected 'auto' or a non-negative integer, got {value!r}")
    if value > available:
        raise OptionsError(f"num_gpu: {value} requested but {available} CUDA device(s) visible; use 'auto' or 0 for CPU")
    return value


def device_of(opt: dict[str, Any]) -> torch.device:
    """The device the options select: CUDA when ``num_gpu`` > 0, else the CPU."""
    if opt["num_gpu"] == 0:
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


Lookups = Mapping[str, Callable[[str], Any]]


def default_lookups(*, is_train: bool) -> dict[str, Callable[[str], Any]]:
    """The registries :func:`lkdn.schema.validate_options` checks ``type`` keys against.

    ``network`` (basicsr's ``ARCH_REGISTRY``) always; for training also ``optim``
    (:func:`lkdn.training.optim.get_optimizer_class`), ``scheduler``
    (:func:`lkdn.training.schedulers.get_scheduler_class`) and ``loss`` (basicsr's ``LOSS_REGISTRY``).
    """
    from basicsr.utils.registry import ARCH_REGISTRY  # lkdn's package import registered our architectures

    lookups: dict[str, Callable[[str], Any]] = {"network": ARCH_REGISTRY.get}
    if is_train:
        from basicsr.utils.registry import LOSS_REGISTRY

        from lkdn.training.optim import get_optimizer_class
        from lkdn.training.schedulers import get_scheduler_class

        lookups.update(optim=get_optimizer_class, scheduler=get_scheduler_class, loss=LOSS_REGISTRY.get)
    return lookups


def parse_options(
    path: str | os.PathLike[str], *, is_train: bool, overrides: Iterable[str] = (), root_path: str | os.PathLike[str] = ".",
    debug: bool = False, lookups: Lookups | None = None,
) -> dict[str, Any]:
    """Load ``path``, apply overrides, validate, and fill in derived values as BasicSR does.

    Validation (:func:`lkdn.schema.validate_options`) runs on the file with its ``--force_yml``
    overrides applied, before anything is derived or built: unknown keys (with the nearest valid
    one), wrong types and impossible values are a :class:`lkdn.schema.SchemaError` naming the
    file, line and key. ``lookups`` maps ``network``/``optim``/``scheduler``/``loss`` to
    functions from a ``type`` name to its class (whose signature the section is checked
    against); ``None`` takes :func:`default_lookups`, ``{}`` checks no ``type``.

    Then adds ``is_train``, resolves ``num_gpu``, gives every dataset its ``phase`` (``train``,
    ``val``, ``test`` from ``train``/``val_1``/``test_2``...) and the top-level ``scale``, and sets
    ``path.experiments_root``/``models``/``training_states``/``log``/``visualization`` (training,
    under ``<root>/experiments/<name>``) or ``path.results_root``/``log``/``visualization`` (test,
    under ``<root>/results/<name>``).
    """
    opt = load_yaml(path)
    overrides = list(overrides)
    for entry in overrides:
        apply_override(opt, entry)
    text = Path(path).read_text(encoding="utf-8")
    try:
        validate_options(opt, source=str(path), text=text,
                         lookups=default_lookups(is_train=is_train) if lookups is None else lookups)
    except SchemaError as err:
        if not overrides:
            raise
        raise SchemaError(f"{err}\n  (after --force_yml {' '.join(overrides)})") from err
    for key in ("name", "network_g"):
        if key not in opt:
            raise OptionsError(f"{path}: missing required key {key!r}")
    opt["is_train"] = is_train
    if debug and not str(opt["name"]).startswith("debug"):
        opt["name"] = f"debug_{opt['name']}"
    opt["num_gpu"] = resolve_num_gpu(opt.get("num_gpu", "auto"))
    scale = opt.get("scale")
    upscale = opt["network_g"].get("upscale")
    if scale is not None and upscale is not None and scale != upscale:
        raise OptionsError(f"{path}: scale ({scale}) differs from network_g.upscale ({upscale})")
    datasets = opt.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise OptionsError(f"{path}: datasets must be a mapping of phase -> dataset options")
    for phase, dataset in datasets.items():
        if not isinstance(dataset, dict):
            raise OptionsError(f"{path}: datasets.{phase} must be a mapping")
        dataset["phase"] = str(phase).split("_")[0]
        if scale is not None:
            dataset["scale"] = scale
        for key in ("dataroot_gt", "dataroot_lq"):
            if dataset.get(key) is not None:
                dataset[key] = os.path.expanduser(str(dataset[key]))
    paths = opt.setdefault("path", {}) or {}
    opt["path"] = paths
    for key, value in paths.items():
        if value is not None and ("resume_state" in str(key) or "pretrain_network" in str(key)):
            paths[key] = os.path.expanduser(str(value))
    root = Path(root_path)
    if is_train:
        exp = root / "experiments" / str(opt["name"])
        paths.update(
            experiments_root=str(exp), models=str(exp / "models"), training_states=str(exp / "training_states"),
            log=str(exp), visualization=str(exp / "visualization"),
        )
    else:
        res = root / "results" / str(opt["name"])
        paths.update(results_root=str(res), log=str(res), visualization=str(res / "visualization"))
    return opt
