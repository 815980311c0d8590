"""Read a BasicSR-style YAML option file once: validated, derived and frozen into :class:`Options`.

The schema is BasicSR's (``name``, ``model_type``, ``scale``, ``num_gpu``, ``datasets``,
``network_g``, ``path``, ``train``, ``val``, ``logger``, ``dist_params``), so configs of the
official LKDN repository and of BasicSR run after changing data paths only. What this module
adds to ``basicsr.utils.options.parse_options``: no argparse or distributed set-up inside
(entry points do that), ``num_gpu: auto`` as the default, ``--force_yml`` overrides parsed
safely (no ``exec``), errors that name the file and key, the top-level ``scale`` as the one
source of the upscaling factor, and a read-only result: every entry point reads a YAML through
:func:`parse_options` (training, testing) or :func:`load_options` (tools that need the network
only), and nothing downstream validates again or changes the options.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from lkdn.archs.contract import contract
from lkdn.errors import LkdnError
from lkdn.losses import loss_class
from lkdn.schema import SchemaError, fill_defaults, long_integer_errors, validate_options, without_filled
from lkdn.training.optim import get_optimizer_class, get_scheduler_class
from lkdn.utils import FrozenDict, freeze, thaw


class OptionsError(LkdnError, ValueError):
    """An option file or override is invalid; the message names the file and key."""


MAX_EXPANDED_VALUES = 100_000
"""An option file expands (anchors and aliases resolved) to at most this many values."""


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoized: linear in the file)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a node reached again while it is being counted: a cycle, counted once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        else:
            memo[key] = 1
    return memo[key]


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML mapping; errors name the file (and line for syntax errors) (:func:`read_yaml`)."""
    return read_yaml(path)[0]


def read_yaml(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """A YAML mapping and the text it was read from (the file is opened once); errors name the file
    (and line for syntax errors).

    A file whose anchors and aliases expand to more than :data:`MAX_EXPANDED_VALUES` values (a
    "billion laughs" file) is refused before anything walks it.
    """
    path = Path(path)
    if not path.is_file():
        raise OptionsError(f"option file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and _expanded_size(root, {}) > MAX_EXPANDED_VALUES:
            raise OptionsError(f"{path}: its anchors and aliases expand to more than {MAX_EXPANDED_VALUES:,d} values; "
                               "an option file is far smaller (write the values out)")
        errors = long_integer_errors(root, str(path))  # Python refuses to read them, naming neither file nor key
        if errors:
            raise SchemaError("invalid options:\n  " + "\n  ".join(errors))
        data = yaml.safe_load(text)
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
    return data, text


def apply_override(opt: dict[str, Any], entry: str) -> None:
    """Apply one ``--force_yml`` entry ``a:b:c=value`` (``.`` also separates keys) in place.

    The value is parsed as YAML (``1e-4``, ``true``, ``[1, 2]``, ``~``). Intermediate keys must
    exist and be mappings.
    """
    if "=" not in entry:
        raise OptionsError(f"--force-yml {entry!r}: expected key=value, e.g. train:ema_decay=0.999")
    keys_text, value_text = (part.strip() for part in entry.split("=", 1))
    keys = [k for k in keys_text.replace(".", ":").split(":") if k]
    if not keys:
        raise OptionsError(f"--force-yml {entry!r}: empty key")
    node = opt
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            where = ":".join(keys[: depth + 1])
            raise OptionsError(f"--force-yml {entry!r}: {where} is not a section of the options")
        node = node[key]
    try:
        node[keys[-1]] = yaml.safe_load(value_text) if value_text else None
    except yaml.YAMLError as err:
        raise OptionsError(f"--force-yml {entry!r}: value is not valid YAML ({err})") from err
    except ValueError as err:  # an integer beyond Python's digit limit
        raise OptionsError(f"--force-yml {keys_text}=<{len(value_text)} characters>: {err}") from err


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


def device_of(opt: Mapping[str, Any]) -> torch.device:
    """The device the options select: CUDA when ``num_gpu`` (``auto`` or missing: every visible GPU) is above 0, else the CPU."""
    if resolve_num_gpu(opt.get("num_gpu", "auto")) == 0:
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


Lookups = Mapping[str, Callable[[str], Any]]


def default_lookups(*, is_train: bool) -> dict[str, Callable[[str], Any]]:
    """The registries :func:`lkdn.schema.validate_options` checks ``type`` keys against.

    ``network`` (this project's architectures, :func:`lkdn.archs.contract.contract`) always; for training also ``optim``
    (:func:`lkdn.training.optim.get_optimizer_class`), ``scheduler``
    (:func:`lkdn.training.optim.get_scheduler_class`) and ``loss`` (:func:`lkdn.losses.loss_class`).
    """
    lookups: dict[str, Callable[[str], Any]] = {"network": lambda name: contract(name).factory}
    if is_train:
        lookups.update(optim=get_optimizer_class, scheduler=get_scheduler_class, loss=loss_class)
    return lookups


class Options(FrozenDict):
    """Validated, read-only options of one YAML file (a mapping, plus typed accessors).

    Built only by :func:`load_options` and :func:`parse_options`, after validation; every value
    below is frozen (:mod:`lkdn.utils`), so no consumer can change what another reads.
    Code that needs a mutable copy (basicsr's dataset constructors) takes ``thaw(opt[...])``.
    """

    def __init__(self, data: Mapping[str, Any], *, source: str, filled: Iterable[tuple[Any, ...]] = (),
                 text: str = "") -> None:
        super().__init__(freeze(dict(data)))
        self.source = source
        self.filled = tuple(filled)
        self.text = text  # the file as read, once (training saves it with its overrides)

    def as_written(self) -> dict[str, Any]:
        """A mutable copy without the declared defaults the validation filled in: what the file and its
        overrides set, and the derived values (to write an option file back)."""
        return without_filled(self, list(self.filled))

    def section(self, key: str) -> FrozenDict:
        """The mapping under ``key`` (empty when absent or ``~``)."""
        value = self.get(key)
        return value if isinstance(value, FrozenDict) else FrozenDict()

    @property
    def name(self) -> str:
        return str(self["name"])

    @property
    def scale(self) -> int:
        """The upscaling factor: the top-level ``scale``, the one source (``network_g.upscale`` agrees)."""
        return int(self["scale"])

    @property
    def network_g(self) -> FrozenDict:
        return self["network_g"]

    @property
    def is_train(self) -> bool:
        return bool(self.get("is_train", False))

    @property
    def num_gpu(self) -> int:
        """The number of GPUs: resolved by :func:`parse_options`; ``auto`` (:func:`load_options`) resolved here."""
        return resolve_num_gpu(self["num_gpu"])

    @property
    def path(self) -> FrozenDict:
        return self.section("path")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Options, (thaw(self),), {"source": self.source, "filled": self.filled, "text": self.text})

    def __deepcopy__(self, memo: dict[int, Any]) -> Options:
        return self


def _validated(
    path: str | os.PathLike[str], *, is_train: bool, overrides: Iterable[str], lookups: Lookups | None
) -> tuple[dict[str, Any], list[tuple[Any, ...]], str]:
    """The options of ``path`` with ``overrides`` applied, validated and with every declared default filled in
    (a plain dict, not yet derived), and the key paths of the defaults filled in (:func:`lkdn.schema.fill_defaults`)."""
    opt, text = read_yaml(path)
    overrides = list(overrides)
    for entry in overrides:
        apply_override(opt, entry)
    try:
        validate_options(opt, source=str(path), text=text,
                         lookups=default_lookups(is_train=is_train) if lookups is None else lookups)
    except SchemaError as err:
        if not overrides:
            raise
        raise SchemaError(f"{err}\n  (after --force-yml {' '.join(overrides)})") from err
    if "network_g" not in opt:
        raise OptionsError(f"{path}: missing required key 'network_g'")
    filled = fill_defaults(opt)
    opt["scale"] = _scale(opt, path)
    return opt, filled, text


def _scale(opt: dict[str, Any], path: str | os.PathLike[str]) -> int:
    """The top-level ``scale`` (from ``network_g.upscale`` or the architecture's default when absent).

    The validation already refused a ``scale`` that differs from ``network_g.upscale``. When
    ``network_g`` does not set ``upscale`` and the architecture takes one, it is set to ``scale``,
    so the network is built at the scale the options name.
    """
    network = opt["network_g"]
    try:
        entry = contract(network.get("type"))
    except ValueError as err:
        raise OptionsError(f"{path}: {err}") from err
    scale = opt.get("scale")
    if scale is None:
        scale = network.get("upscale", entry.default("upscale"))
    if scale is inspect.Parameter.empty or scale is None:
        raise OptionsError(f"{path}: set the top-level 'scale' (the upscaling factor)")
    if "upscale" in entry.parameters() and network.get("upscale") is None:
        network["upscale"] = scale
    return int(scale)


def load_options(
    path: str | os.PathLike[str], *, overrides: Iterable[str] = (), lookups: Lookups | None = None
) -> Options:
    """Load, validate and freeze a YAML that describes a network (any train or test option file).

    For the tools that need ``network_g``, ``scale`` and ``path`` only (export, profiling,
    re-parameterization, conversion, :class:`lkdn.Upscaler`): the same validation as
    :func:`parse_options` (unknown keys with line and nearest key, types, impossible values,
    ``scale`` vs ``network_g.upscale``), without the training and test folders.
    """
    opt, filled, text = _validated(path, is_train=False, overrides=overrides, lookups=lookups)
    _expand_paths(opt)
    return Options(opt, source=str(path), filled=filled, text=text)


def _expand_paths(opt: dict[str, Any]) -> None:
    paths = opt["path"]  # a section with a default: filled in by the validation
    for key, value in paths.items():
        if value is not None and ("resume_state" in str(key) or "pretrain_network" in str(key)):
            paths[key] = os.path.expanduser(str(value))


def parse_options(
    path: str | os.PathLike[str], *, is_train: bool, overrides: Iterable[str] = (), root_path: str | os.PathLike[str] = ".",
    debug: bool = False, lookups: Lookups | None = None,
) -> Options:
    """Load ``path``, apply overrides, validate, derive what BasicSR derives, and freeze.

    Validation (:func:`lkdn.schema.validate_options`) runs on the file with its ``--force_yml``
    overrides applied, before anything is derived or built: unknown keys (with the nearest valid
    one), wrong types and impossible values are a :class:`lkdn.schema.SchemaError` naming the
    file, line and key. ``lookups`` maps ``network``/``optim``/``scheduler``/``loss`` to
    functions from a ``type`` name to its class (whose signature the section is checked
    against); ``None`` takes :func:`default_lookups`, ``{}`` checks no ``type``.

    Then adds ``is_train`` and ``root_path``, resolves ``num_gpu`` and ``scale``, gives every
    dataset its ``phase`` (``train``, ``val``, ``test`` from ``train``/``val_1``/``test_2``...) and
    the scale, applies ``debug`` (BasicSR's: ``debug_`` name prefix, a line per iteration,
    validation and saving every 8), and sets ``path.experiments_root``/``models``/
    ``training_states``/``log``/``visualization`` (training, under
    ``<root>/experiments/<name>``) or ``path.results_root``/``log``/``visualization`` (test,
    under ``<root>/results/<name>``).
    """
    opt, filled, text = _validated(path, is_train=is_train, overrides=overrides, lookups=lookups)
    if "name" not in opt:
        raise OptionsError(f"{path}: missing required key 'name'")
    root = Path(root_path).resolve()
    opt["is_train"] = is_train
    opt["root_path"] = str(root)
    if debug and not str(opt["name"]).startswith("debug"):
        opt["name"] = f"debug_{opt['name']}"
    if "debug" in str(opt["name"]) and is_train:
        opt["logger"].update(print_freq=1, save_checkpoint_freq=8)
        if opt.get("val"):
            opt["val"]["val_freq"] = 8
    opt["num_gpu"] = resolve_num_gpu(opt["num_gpu"])
    datasets = opt.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise OptionsError(f"{path}: datasets must be a mapping of phase -> dataset options")
    for phase, dataset in datasets.items():
        if not isinstance(dataset, dict):
            raise OptionsError(f"{path}: datasets.{phase} must be a mapping")
        dataset["phase"] = str(phase).split("_")[0]
        dataset["scale"] = opt["scale"]
        if "use_flip" in dataset:  # the key of older BasicSR configs: basicsr 1.4.2 reads use_hflip
            if "use_hflip" in dataset and dataset["use_hflip"] != dataset["use_flip"]:
                raise OptionsError(f"{path}: datasets.{phase}: use_flip and use_hflip disagree; keep use_hflip")
            dataset["use_hflip"] = dataset.pop("use_flip")
        for key in ("dataroot_gt", "dataroot_lq"):
            if dataset.get(key) is not None:
                dataset[key] = os.path.expanduser(str(dataset[key]))
    _expand_paths(opt)
    paths = opt["path"]
    if is_train:
        exp = root / "experiments" / str(opt["name"])
        paths.update(
            experiments_root=str(exp), models=str(exp / "models"), training_states=str(exp / "training_states"),
            log=str(exp), visualization=str(exp / "visualization"),
        )
    else:
        res = root / "results" / str(opt["name"])
        paths.update(results_root=str(res), log=str(res), visualization=str(res / "visualization"))
    return Options(opt, source=str(path), filled=filled, text=text)
