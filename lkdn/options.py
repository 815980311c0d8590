"""Option files: read once, declared once (pydantic models of every key), validated, derived and frozen.

The schema is BasicSR's (``name``, ``model_type``, ``scale``, ``num_gpu``, ``datasets``,
``network_g``, ``path``, ``train``, ``val``, ``logger``, ``dist_params``), plus this project's
additions, so configs of the official LKDN repository and of BasicSR run after changing data
paths only. What this module adds to ``basicsr.utils.options.parse_options``: no argparse or
distributed set-up inside (entry points do that), ``num_gpu: auto`` as the default,
``--force-yml`` overrides parsed safely (no ``exec``), errors that name the file, the key's line,
the key path (``train.optim_g.lr``) and the value (an unknown key also names the nearest valid
key), the top-level ``scale`` as the one source of the upscaling factor, and a read-only result:
every entry point reads a YAML through :func:`parse_options` (training, testing) or
:func:`load_options` (tools that need the network only), and nothing downstream validates again
or changes the options. Checks run before any work starts, after the overrides are applied, so
overrides are validated the same way. Sections whose keys depend on a registered class
(``network_g``, ``train.optim_g``, ``train.scheduler``, losses) are checked against that class's
signature.

In order below:

* **reading**: :func:`read_yaml`, :func:`parse_options`, :func:`load_options`, :class:`Options`;
* **checks**: the value checks (bounds, names, templates, learning rate, scheduler lists,
  signatures of registered classes) and the limits (:data:`MAX_WORKERS`...);
* **declarations**: one pydantic model per section;
* **validation**: :func:`validate_options` (messages with file, line, key path and value),
  :func:`fill_defaults` and :func:`without_filled`;
* **docs**: ``docs/options.md``'s key tables and ``docs/options.schema.json``
  (``python -m lkdn.options --write``).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import re
import string
import sys
import types
import typing
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, core_schema

from lkdn.archs.contract import contract
from lkdn.errors import LkdnError
from lkdn.training.optim import get_optimizer_class, get_scheduler_class, loss_class
from lkdn.utils import FrozenDict, did_you_mean, freeze, thaw, unknown_keywords


# ---------------------------------------------------------------------------------------------- reading
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
    """The registries :func:`lkdn.options.validate_options` checks ``type`` keys against.

    ``network`` (this project's architectures, :func:`lkdn.archs.contract.contract`) always; for training also ``optim``
    (:func:`lkdn.training.optim.get_optimizer_class`), ``scheduler``
    (:func:`lkdn.training.optim.get_scheduler_class`) and ``loss`` (:func:`lkdn.training.optim.loss_class`).
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
    (a plain dict, not yet derived), and the key paths of the defaults filled in (:func:`lkdn.options.fill_defaults`)."""
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

    Validation (:func:`lkdn.options.validate_options`) runs on the file with its ``--force_yml``
    overrides applied, before anything is derived or built: unknown keys (with the nearest valid
    one), wrong types and impossible values are a :class:`lkdn.options.SchemaError` naming the
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


SAVE_FORMATS = ("pth", "safetensors")
# scheduler arguments that are lists of iteration counts (basicsr's MultiStepRestartLR, CosineAnnealingRestartLR)
ITERATION_LISTS = ("milestones", "periods", "restarts")
NAME_HELP = "a single folder name: letters, digits, '.', '_', '-', '+' (no '/', not '.' or '..')"
SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")

MAX_WORKERS = 64
"""The most data loader workers per process (``num_worker_per_gpu``); each is a copy of the trainer."""
MAX_ENLARGE_RATIO = 10_000
"""The largest ``dataset_enlarge_ratio``: the sampler holds ``images x ratio`` indices every epoch."""
MAX_LR = 1.0
"""The largest learning rate (``train.optim_g.lr``): above it every optimizer of this project diverges."""
MAX_SCALE = 16
"""The largest upscaling factor (``scale``) an option file may ask for."""
MAX_SEED = 2**64 - 1
"""The largest ``manual_seed`` (what ``torch.manual_seed`` accepts)."""

#: dataset types that make LR images themselves and can hold images out (lkdn.data.multiscale_dataset)
HR_ONLY_DATASETS = ("MultiScaleImageDataset", "MultiScaleUpsampledImageDataset")
#: metrics of basicsr's registry that score two numpy images (``val.metrics.<name>.type``)
METRIC_TYPES = ("calculate_psnr", "calculate_ssim")
INTEGER_RANGES: dict[tuple[str, ...], tuple[int, int]] = {("scale",): (1, MAX_SCALE), ("manual_seed",): (0, MAX_SEED)}
"""Inclusive ranges of integer options beyond their type (named by :func:`long_integer_errors`)."""


class SchemaError(LkdnError, ValueError):
    """One or more invalid options; the message lists each with its location."""


# ---------------------------------------------------------------------------------------------- values


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML text to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = prefix + (str(key_node.value),)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    if root is not None:
        walk(root, ())
    return lines


_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def number_hint(value: Any) -> str:
    """A hint when ``value`` is a string that reads as a number (PyYAML keeps ``1e-3`` a string)."""
    if not isinstance(value, str) or not _FLOAT_TEXT.match(value.strip()):
        return ""
    if "e" in value.lower():
        return f" (YAML reads {value} as a string: write {float(value)!r} or !!float {value})"
    return " (a quoted number: remove the quotes)"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shown_value(value: Any) -> Any:
    """``value`` for a message; an integer too long to read is named by its length."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"an integer of {len(str(abs(value)))} digits"
    return value


def _range_text(path: tuple[str, ...]) -> str:
    low, high = INTEGER_RANGES.get(path, (None, None))
    return f"from {low} to {high}" if low is not None else "of at most 18 digits"


def long_integer_errors(root: yaml.Node | None, source: str) -> list[str]:
    """Errors for integers of a composed YAML document too long for Python to read (over
    ``sys.get_int_max_str_digits()`` digits), each with the key's path, line and valid range."""
    limit = sys.get_int_max_str_digits() or None
    errors: list[str] = []

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, path + (str(key_node.value)[:80],))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path[:-1] + (f"{path[-1]}[{index}]",) if path else (str(index),))
        elif (limit and isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"
              and sum(c.isdigit() for c in node.value) > limit):
            digits = sum(c.isdigit() for c in node.value)
            errors.append(f"{source}:{node.start_mark.line + 1}: {'.'.join(path)}: an integer of {digits} digits; "
                          f"expected an integer {_range_text(path)}")

    if root is not None:
        walk(root, ())
    return errors


# ------------------------------------------------------------------------------------------ field checks

Loc = tuple[Any, ...]
Problem = tuple[Loc, str]


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("lkdn", "{message}", {"message": message})


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes Annotated metadata
class Check:
    """A value check after the type check of a field: ``test`` returns an error message or None;
    ``bounds`` are its JSON-schema keywords (``minimum``, ``exclusiveMinimum``...)."""

    test: Callable[[Any], str | None]
    bounds: Mapping[str, Any] = field(default_factory=dict)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._run, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        result = handler(schema)
        result.update(self.bounds)
        return result

    def _run(self, value: Any) -> Any:
        message = self.test(value)
        if message:
            raise _problem(message)
        return value


def positive(*, strict: bool = True, whole: bool = False, floor: float | None = None) -> Check:
    """Above 0 (``strict``) or at least 0; ``whole``: a whole number of iterations; ``floor``: also allowed (-1)."""

    def test(value: Any) -> str | None:
        if floor is not None and value == floor:
            return None
        if value <= 0 if strict else value < 0:
            return f"must be {'positive' if strict else 'non-negative'}, got {value!r}"
        if whole and value != int(value):
            return f"must be a whole number of iterations, got {value!r}"
        return None

    low = {"exclusiveMinimum": 0} if strict else {"minimum": 0 if floor is None else floor}
    return Check(test, low | ({"multipleOf": 1} if whole else {}))


def between(low: int, high: int) -> Check:
    """An integer from ``low`` to ``high`` (both included)."""

    def test(value: Any) -> str | None:
        if isinstance(value, int) and not low <= value <= high:
            return f"must be an integer from {low} to {high}, got {shown_value(value)}"
        return None

    return Check(test, {"minimum": low, "maximum": high})


def below_one(value: Any) -> str | None:
    return f"must be below 1, got {value!r}" if value >= 1 else None


def safe_name(value: str) -> str | None:
    """Run and dataset names become folder names: one safe path component, never a path."""
    if not SAFE_NAME.fullmatch(value) or value in (".", ".."):
        return f"{value!r} is not a valid name: use {NAME_HELP}"
    return None


def filename_template(value: str) -> str | None:
    """``filename_tmpl`` makes an LR name from an HR name with ``str.format``: exactly one ``{}`` field."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as err:
        return f"{value!r} is not a valid template ({err}): write the LR name with one {{}} for the HR name, e.g. '{{}}x4'"
    if len(fields) != 1 or fields[0] not in ("", "0"):
        return f"{value!r} has {len(fields)} field(s) {fields}: expected exactly one {{}} (the HR name), e.g. '{{}}' or '{{}}x4'"
    return None


def metric_type(value: str) -> str | None:
    if value not in METRIC_TYPES:
        return f"unknown metric {value!r}{did_you_mean(value, list(METRIC_TYPES))} (known: {', '.join(METRIC_TYPES)})"
    return None


def worker_count(value: Any) -> str | None:
    if isinstance(value, str) and value != "auto":
        return f"expected auto or a count from 0 to {MAX_WORKERS}, got {value!r}"
    if isinstance(value, int) and not 0 <= value <= MAX_WORKERS:
        return f"must be an integer from 0 to {MAX_WORKERS}, got {shown_value(value)}"
    return None





# ------------------------------------------------------------------------- sections of registered classes


def registered(section: Any, path: Loc, lookup: Callable[[str], Any] | None,
                skip: tuple[str, ...]) -> Generator[Problem, None, Any]:
    """Problems of a section whose keys are a registered class's arguments; returns the class when found."""
    if not isinstance(section, Mapping):
        return None
    yield from free_form({k: v for k, v in section.items() if k != "type"}, path)
    if lookup is None:
        return None
    if "type" not in section:
        yield path, "missing key 'type'"
        return None
    if not isinstance(section["type"], str):
        yield path + ("type",), f"expected a registered name, got {section['type']!r}"
        return None
    try:
        factory = lookup(section["type"])
    except (KeyError, ValueError) as err:
        prefix = ".".join(map(str, path + ("type",))) + ": "
        yield path + ("type",), str(err).strip("'\"").removeprefix(prefix)  # lookups name the key themselves
        return None
    yield from signature(section, factory, path, skip)
    return factory


def signature(section: Mapping[Any, Any], factory: Callable[..., Any], path: Loc, skip: tuple[str, ...]) -> Iterator[Problem]:
    for key, message in unknown_keywords(factory, section, skip=("params", "optimizer", "last_epoch", "verbose"),
                                         also=skip):
        yield path + (key,), message


def free_form(value: Any, path: Loc) -> Iterator[Problem]:
    """Quoted numbers (YAML 1.1 reads ``1e-3`` as a string) and NaN or infinity anywhere under ``value``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from free_form(item, path + (key,))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from free_form(item, path + (index,))
    elif number_hint(value):
        yield path, f"{value!r} is a string{number_hint(value)}"
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, f"must be a finite number, got {value!r}"


def learning_rate(optim: Any) -> Iterator[Problem]:
    """``optim_g.lr``: a number above 0 and at most :data:`MAX_LR` (absent: the optimizer's default)."""
    if not isinstance(optim, Mapping) or "lr" not in optim:
        return
    lr, path = optim["lr"], ("optim_g", "lr")
    if number_hint(lr) or (isinstance(lr, float) and not math.isfinite(lr)):
        return  # reported as a quoted number / not finite
    if not is_number(lr):
        yield path, f"expected a learning rate: a number above 0 and at most {MAX_LR:g} (e.g. 2e-4), got {lr!r}"
    elif lr <= 0:
        yield path, f"must be positive, got {lr!r}"
    elif lr > MAX_LR:
        yield path, f"must be at most {MAX_LR:g} (a learning rate, e.g. 2e-4), got {lr!r}"


def scheduler_iterations(scheduler: Any, total: Any) -> Iterator[Problem]:
    """Iteration lists of whole numbers; the periods of a cosine restart schedule cover ``total_iter``."""
    if not isinstance(scheduler, Mapping):
        return
    for key in ITERATION_LISTS:
        value = scheduler.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(is_number(v) and math.isfinite(v) and v == int(v) and v >= 0 for v in value)):
            yield ("scheduler", key), f"expected a list of whole numbers of iterations, got {value!r}"
    periods = scheduler.get("periods")
    if (scheduler.get("type") == "CosineAnnealingRestartLR" and isinstance(periods, list)
            and all(is_number(v) for v in periods) and is_number(total) and sum(periods) < total):
        yield (("scheduler", "periods"), f"the periods add up to {sum(periods)} iterations, fewer than train.total_iter "
               f"{total}: CosineAnnealingRestartLR has no learning rate after its last period")


def network_types(network: Mapping[Any, Any], factory: Callable[..., Any]) -> Iterator[Problem]:
    """``network_g`` arguments whose constructor default is a bool, an integer or a float must be one too."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    name = getattr(factory, "__name__", str(factory))
    for key, value in network.items():
        default = params[key].default if isinstance(key, str) and key in params else None
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = is_number(value), "a number"
        else:
            continue
        if not ok and not number_hint(value):  # a quoted number is reported by free_form
            yield ("network_g", key), f"expected {kind} ({name}'s default is {default!r}), got {value!r}"


Number = int | float
Name = Annotated[str, Check(safe_name, {"pattern": f"^{SAFE_NAME.pattern}$"})]
Suffix = Annotated[str, Check(lambda value: value and safe_name(value))]
Count = Annotated[int, positive()]
Iterations = Annotated[Number, positive(whole=True)]
FreeForm = dict[Any, Any]
"""A section whose keys are the arguments of a registered class (checked against its signature)."""


def opt(default: Any = None, title: str = "", description: str = "", *, shown: str | None = None,
        factory: Callable[[], Any] | None = None) -> Any:
    """A declared key: ``default`` (filled in when absent unless None), ``title`` (short, in error
    messages), ``description`` (docs/options.md) and ``shown``: the default as the docs write it."""
    extra = {"shown": shown} if shown is not None else None
    if factory is not None:
        return Field(default_factory=factory, title=title, description=description, json_schema_extra=extra)
    return Field(default, title=title, description=description, json_schema_extra=extra)


# ------------------------------------------------------------------------------------------------ models


class Section(BaseModel):
    """A mapping of declared keys: unknown keys, wrong types and impossible values are errors.

    ``problems`` adds the checks across keys (and of sections whose keys depend on a registered
    class); they run on the raw mapping even when a key of it has a wrong type, so every problem
    of a file is reported at once.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False,
                              protected_namespaces=())

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _validate(cls, data: Any, handler: Callable[[Any], Any], info: Any) -> Any:
        errors: list[dict[str, Any]] = []
        result = None
        try:
            result = handler(data)
        except ValidationError as err:
            errors = err.errors(include_url=False)
        if isinstance(data, Mapping):
            errors += [{"type": "lkdn", "loc": loc, "ctx": {"message": message}, "input": None}
                       for loc, message in cls.problems(data, info.context or {})]
        if errors:
            raise PydanticCustomError("lkdn_section", "invalid section", {"errors": errors})
        return result


class IoBackend(Section):
    type: Literal["disk", "lmdb"] = opt("disk", "disk or lmdb", "`disk` or `lmdb` (an LMDB folder ends in `.lmdb` and "
                                        "holds `data.mdb` and `meta_info.txt`); a training `PairedImageDataset` "
                                        "needs the `io_backend` section")
    db_paths: list[str] | str | None = opt(None, "LMDB folders, [lq, gt]", "LMDB folders (basicsr sets them)",
                                           shown="filled in")
    client_keys: list[str] | None = opt(None, "LMDB client keys, [lq, gt]", "LMDB client keys (basicsr sets them)",
                                        shown="filled in")


class Dataset(Section):
    """``datasets.<phase>``: section names ``train``; ``val``, ``val_1``... (validation during training);
    ``test_1``, ``test_2``... (``lkdn/test.py``). The phase is the part before ``_``."""

    name: Name = opt(None, "dataset name used in logs and results", "dataset name in logs, `metrics.json` and "
                     "`metrics.jsonl`; a single folder name (it names `visualization/<name>/`)", shown="required")
    type: str = opt(None, "registered dataset class, e.g. PairedImageDataset", "registered dataset class: "
                    "`PairedImageDataset` (basicsr), `MultiScaleImageDataset`, `MultiScaleUpsampledImageDataset` (VDSR)",
                    shown="required")
    phase: str = opt(None, "filled in from the section name", "from the section name", shown="filled in")
    scale: int = opt(None, "filled in from the top-level scale", "the top-level `scale`", shown="filled in")
    dataroot_gt: str = opt(None, "folder (or LMDB) of ground-truth HR images", "HR folder (or LMDB folder); `~` is "
                           "expanded", shown="required")
    dataroot_lq: str = opt(None, "folder (or LMDB) of low-quality LR images", "LR folder (or LMDB folder); the "
                           "multi-scale datasets make LR images themselves", shown="required for paired datasets")
    meta_info_file: str | None = opt(None, "text file listing the images to use", "text file listing the images to "
                                     "use (disk backend)", shown="`~`")
    filename_tmpl: Annotated[str, Check(filename_template)] = opt(
        "{}", "LR name template for an HR stem, e.g. '{}x4'", "LR file stem from the HR stem, e.g. `{}x4`: exactly "
        "one `{}`")
    io_backend: IoBackend | None = opt(None, "how images are read", "how images are read", shown="see `io_backend.*`")
    gt_size: Count = opt(None, "HR patch size (training)", "HR patch size, a multiple of the scale; the LR patch is "
                         "`gt_size / scale`", shown="training: required")
    use_hflip: bool = opt(None, "random horizontal flips", "random horizontal flips",
                          shown="training: required by `PairedImageDataset`; `false` for the multi-scale datasets")
    use_flip: bool = opt(None, "older BasicSR configs' name of use_hflip (read as use_hflip)",
                         "older BasicSR configs' name of `use_hflip` (read as `use_hflip`)", shown="")
    use_rot: bool = opt(None, "random rotations / transposes", "random rotations/transposes",
                        shown="training: required by `PairedImageDataset`; `false` for the multi-scale datasets")
    use_shuffle: bool = opt(None, "shuffle every epoch", "accepted (a BasicSR key); the training sampler shuffles "
                            "every epoch", shown="")
    num_worker_per_gpu: Annotated[int | str, Check(worker_count, {"minimum": 0, "maximum": MAX_WORKERS})] = opt(
        None, f"data loader workers per process (0 to {MAX_WORKERS}), or auto: min(4, CPUs)",
        f"data-loader worker processes per process (0 to {MAX_WORKERS}), or `auto`: min(4, the CPUs the process may "
        "use)", shown="training: required")
    batch_size_per_gpu: Count = opt(None, "batch size per process", "batch per process (total = this x processes)",
                                    shown="training: required")
    dataset_enlarge_ratio: Annotated[int, between(1, MAX_ENLARGE_RATIO)] = opt(
        1, f"repeat the dataset within one epoch (1 to {MAX_ENLARGE_RATIO})",
        f"repeat the dataset within an epoch (fewer epoch boundaries; 1 to {MAX_ENLARGE_RATIO})")
    prefetch_mode: Literal["cpu", "cuda"] | None = opt(
        None, "cpu, cuda or ~", "`cpu` (basicsr's CPUPrefetcher), `cuda` (CUDAPrefetcher; needs `pin_memory: true`; "
        "falls back on the CPU), `~` (plain loader)")
    num_prefetch_queue: Count = opt(1, "batches queued by prefetch_mode: cpu", "queue length of the CPU prefetcher")
    pin_memory: bool = opt(False, "pin host memory (cuda prefetch)", "pinned host memory (forced off on the CPU)")
    persistent_workers: bool = opt(False, "keep workers between epochs", "keep loader workers between epochs")
    optional: bool = opt(False, "skip with a warning when the folders are absent (test)",
                         "test sets: skip with a warning when the folders are absent, instead of an error")
    skip_bad_images: bool = opt(False, "skip unreadable training images with a warning",
                                "training: replace unreadable images by the next readable one, with a warning "
                                "(counted in the log) instead of stopping")
    color: str | None = opt(None, "'y' to work on the Y channel", "`y` for Y-channel data")
    mean: list[Number] | None = opt(None, "per-channel mean for normalization", "per-channel mean (basicsr's "
                                    "normalization)")
    std: list[Number] | None = opt(None, "per-channel std for normalization", "per-channel std (basicsr's "
                                   "normalization)")
    scales: list[int] | None = opt(None, "scales mixed in multi-scale training", "multi-scale datasets: the scales "
                                   "mixed in one run, e.g. `[2, 3, 4]`; validation takes exactly one", shown="")
    holdout: Annotated[int, positive(strict=False)] = opt(
        None, "MultiScaleImageDataset: images held out for validation (by name hash)",
        "multi-scale datasets: this many images of the folder held out for validation, chosen by a hash of their "
        "names", shown="0")
    subset: Literal["train", "holdout"] = opt(
        None, "MultiScaleImageDataset: train (default) or holdout", "multi-scale datasets: `train` (the images not "
        "held out) or `holdout` (the held-out ones)", shown="`train`")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        phase = str(context.get("section", "")).split("_")[0]
        if phase == "train" and "gt_size" not in data:
            yield (), "missing key 'gt_size' (the HR patch size of training, a multiple of the scale, e.g. 192 at x4)"
        for key in ("holdout", "subset"):
            if key in data and data.get("type") not in HR_ONLY_DATASETS:
                yield (key,), f"only {' and '.join(HR_ONLY_DATASETS)} hold images out"
        if data.get("prefetch_mode") == "cuda" and data.get("pin_memory") is not True:
            yield ("pin_memory",), "must be true with prefetch_mode: cuda (as in basicsr)"
        scale, gt_size = context.get("scale"), data.get("gt_size")
        if isinstance(scale, int) and scale > 0 and type(gt_size) is int and gt_size > 0 and gt_size % scale:
            yield ("gt_size",), f"{gt_size} is not divisible by scale {scale}"


class PathOptions(Section):
    pretrain_network_g: str | None = opt(
        None, "weights to start from / to test", "weights to test, or to start training from (`.pth` or "
        "`.safetensors`); `~` is expanded; a published checkpoint missing at this path is taken from the reference "
        "lookup order or downloaded on first use ([testing.md](testing.md#weights))", shown="`~`")
    param_key_g: str | None = opt(None, "key inside the checkpoint (params_ema, params)", "key inside a BasicSR "
                                  "checkpoint; a missing key falls back to the other with a warning; bare state "
                                  "dicts load as they are", shown="`params_ema`, then `params`")
    strict_load_g: bool | None = opt(None, "require every key to match (default true; only false loads non-strictly)",
                                     "require every key and shape to match (the error lists the differences); only "
                                     "`false` loads non-strictly (`~` is strict)", shown="`true`")
    resume_state: str | None = opt(None, "training state to resume from", "training state to resume from "
                                   "(`--auto-resume` picks the latest); `~` is expanded", shown="`~`")
    experiments_root: str = opt(None, "filled in", "training: `<root>/experiments/<name>`", shown="filled in")
    models: str = opt(None, "filled in", "training: `<experiments_root>/models`", shown="filled in")
    training_states: str = opt(None, "filled in", "training: `<experiments_root>/training_states`", shown="filled in")
    log: str = opt(None, "filled in", "the run folder (`experiments_root` or `results_root`)", shown="filled in")
    visualization: str = opt(None, "filled in", "`<run folder>/visualization`", shown="filled in")
    results_root: str = opt(None, "filled in", "test: `<root>/results/<name>`", shown="filled in")
    root: str = opt(None, "root folder of experiments and results", "accepted; not used (the root folder is "
                    "`--root-path` of `lkdn-train` and `lkdn-test`)", shown="")


class Metric(Section):
    type: Annotated[str, Check(metric_type, {"enum": list(METRIC_TYPES)})] = opt(
        None, "calculate_psnr or calculate_ssim", "`calculate_psnr` or `calculate_ssim` (basicsr's)", shown="required")
    crop_border: Annotated[int, positive(strict=False)] = opt(
        None, "pixels removed at each border (the scale)", "pixels removed at each border before scoring (= scale "
        "for the published protocol)", shown="required")
    test_y_channel: bool = opt(False, "compute on the Y channel (BT.601)", "score the Y channel (BT.601), as the "
                               "published tables")
    better: Literal["higher", "lower"] = opt("higher", "higher or lower", "which way is better (the best result of "
                                             "training)")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        if "crop_border" not in data:
            yield (), ("missing key 'crop_border' (pixels removed at each border before scoring; basicsr requires it, "
                       "the benchmark tables use the scale)")


class Tile(Section):
    size: Annotated[int, positive()] = opt(None, "tile size in LR pixels", "test: LR tile size", shown="`~` (whole "
                                           "images)")
    pad: Annotated[int, positive(strict=False)] | None = opt(
        None, "context in LR pixels (default: the receptive radius)", "test: context around each tile in LR pixels "
        "(exact tiles for translation-local networks; 32 and approximate otherwise)",
        shown="the network's receptive radius")


class Val(Section):
    val_freq: Iterations | None = opt(None, "validate every this many iterations", "training: validate every this "
                                      "many iterations", shown="`~` (at the end only)")
    save_img: bool = opt(False, "write SR images", "write SR images (`visualization/<dataset>/<image>_<suffix>.png`)")
    suffix: Suffix | None = opt(None, "suffix of written SR image names", "suffix of the written image names: one safe "
                              "name, as `name` (no `/`, not `..`)", shown="`~` (the `name`)")
    pbar: bool = opt(False, "progress bar during validation", "progress bar during validation in training "
                     "(`lkdn/test.py` always shows one)")
    metrics: dict[Any, Metric] = opt(None, "metrics by name", "metrics by name (`psnr`, `ssim`), each with the keys "
                                     "of `val.metrics.<name>`", shown="")
    self_ensemble: bool = opt(False, "x8 geometric self-ensemble", "test: x8 geometric self-ensemble")
    optimize: bool = opt(True, "test: lkdn.Upscaler's exact speed rewrites (default true)",
                         "test and `lkdn-infer`: run through `lkdn.Upscaler(optimize=True)` "
                         "(re-parameterization, channels_last; output within about 1e-4)")
    tile: Tile | None = opt(None, "tiled inference", "test: tiled inference", shown="`~` (whole images)")


class Wandb(Section):
    project: str | None = opt(None, "W&B project; ~ turns W&B off (needs the wandb package)",
                              "Weights & Biases project: the training scalars and metrics, the options as config "
                              "(needs the `wandb` package); `~` turns W&B off")
    entity: str | None = opt(None, "W&B team or user (default: yours)", "W&B team or user", shown="`~` (yours)")
    resume_id: str | None = opt(None, "continue this W&B run (default: the run folder's wandb_id.txt)",
                                "continue this W&B run (default: the id in `experiments/<name>/wandb_id.txt`)")
    mode: Literal["online", "offline", "disabled"] = opt("online", "online (default), offline or disabled",
                                                         "`online`, `offline` or `disabled`")


class Logger(Section):
    print_freq: Iterations = opt(100, "log training lines every this many iterations", "log line (iteration, epoch, "
                                 "lr, losses, time, data time, ETA) and `train_log.jsonl` record every this many "
                                 "iterations")
    save_checkpoint_freq: Iterations = opt(5000, "save network and state every this many iterations",
                                           "save `models/net_g_<iter>` and `training_states/<iter>.state` every this "
                                           "many iterations")
    use_tb_logger: bool = opt(False, "write TensorBoard scalars", "TensorBoard scalars under `tb_logger/<name>/`")
    wandb: Wandb | None = opt(None, "Weights & Biases: the training scalars and metrics, the options as config",
                              "Weights & Biases (see `logger.wandb.*`)", shown="`~` (off)")
    save_format: Literal["pth", "safetensors"] = opt("pth", "pth (default) or safetensors",
                                                     "`pth` (BasicSR dict) or `safetensors` (self-describing network "
                                                     "weights)")


AMP = Literal["bf16", "fp16", "fp32", "none", False]


class Train(Section):
    total_iter: Iterations = opt(None, "training iterations", "training iterations (a positive whole number)",
                                 shown="required")
    optim_g: FreeForm = opt(None, "optimizer: type and its arguments", "`type`: any `torch.optim` optimizer, or `Adan` "
                            "(the paper's algorithm and betas, e.g. `[0.98, 0.92, 0.99]`; `timm.optim.Adan`); the other "
                            "keys are its arguments (`lr`: above 0, at most 1; `betas`, `eps`, `weight_decay`, "
                            "`no_prox`, `foreach`, ...), checked against its signature", shown="required")
    scheduler: FreeForm | None = opt(
        None, "learning-rate scheduler: type and its arguments (~: a constant rate)",
        "`type`: `MultiStepLR` / `MultiStepRestartLR` (`milestones`, `gamma`, `restarts`, `restart_weights`), "
        "`CosineAnnealingRestartLR` (`periods`, `restart_weights`, `eta_min`; the periods must cover `total_iter`), "
        "`CosineAnnealingLR` (`T_max`, `eta_min`) and the other `torch.optim.lr_scheduler` classes with plain "
        "arguments", shown="`~` (a constant learning rate)")
    warmup_iter: Annotated[Number, positive(strict=False, whole=True, floor=-1)] = opt(
        -1, "linear warm-up iterations (-1 for none)", "linear warm-up iterations (-1: none)")
    pixel_opt: FreeForm | None = opt(
        None, "pixel loss: type (L1Loss, MSELoss, CharbonnierLoss) and arguments",
        "pixel loss: `type` `L1Loss`, `MSELoss`, `CharbonnierLoss` or `WeightedTVLoss` (basicsr), `loss_weight`, "
        "`reduction`; this or `perceptual_opt` is required")
    perceptual_opt: FreeForm | None = opt(
        None, "perceptual loss: type PerceptualLoss and arguments",
        "`type: PerceptualLoss`: `layer_weights` (required), `vgg_type` (`vgg19`), `use_input_norm` (`true`), "
        "`range_norm` (`false`), `perceptual_weight` (1.0), `style_weight` (0), `criterion` (`l1`; `l2`, `fro`), "
        "`vgg_weights` (default `experiments/pretrained_models/<torchvision file>`, e.g. `vgg19-dcbb9e9d.pth`)")
    ema_decay: Annotated[Number, positive(strict=False), Check(below_one, {"exclusiveMaximum": 1})] = opt(
        0, "EMA decay of the network weights (0 disables)", "EMA of the weights (BasicSR's `net_g_ema`, saved as "
        "`params_ema`); 0 disables; below 1")
    grad_clip: Annotated[Number, positive(strict=False)] | None = opt(None, "max gradient norm (VDSR)",
                                                                       "max gradient norm (VDSR)")
    bn_population_after: int | None = opt(None, "iteration after which BatchNorm uses population statistics",
                                          "from this iteration on, BatchNorm uses population statistics (RepSR)")
    max_bad_steps: Annotated[int, positive(whole=True)] = opt(
        10, "stop after this many consecutive non-finite losses", "a non-finite loss skips the step; this many in a "
        "row stop training, keeping the last good state")
    amp: AMP | None = opt(None, "bf16, fp16 or false", "`bf16` or `fp16` autocast (GradScaler only for fp16; fp16 "
                          "needs CUDA); `false`, `~`, `none`, `fp32`: off")
    channels_last: bool = opt(False, "channels-last memory format", "channels-last memory format for the network and "
                              "batches")
    compile: bool | FreeForm = opt(False, "torch.compile the network: true, or a mapping of torch.compile arguments",
                                   "`torch.compile` the network (`true`, or a mapping of `torch.compile` arguments, "
                                   "checked against its signature)")
    deterministic: bool = opt(False, "deterministic kernels (cudnn.benchmark off): runs and resumes repeat bit for bit "
                              "on GPUs", "deterministic kernels, `cudnn.benchmark` off: runs and resumes repeat bit "
                              "for bit on GPUs too")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        lookups = context.get("lookups") or {}
        for kind, key in (("optim", "optim_g"), ("scheduler", "scheduler"), ("loss", "pixel_opt"),
                          ("loss", "perceptual_opt")):
            yield from registered(data.get(key), (key,), lookups.get(kind), ("type",))
        yield from learning_rate(data.get("optim_g"))
        yield from scheduler_iterations(data.get("scheduler"), data.get("total_iter"))
        compile_opt = data.get("compile")
        if isinstance(compile_opt, Mapping):
            import torch  # only for its signature, when the options ask for it

            yield from signature(compile_opt, torch.compile, ("compile",), ())


class DistParams(Section):
    backend: str | None = opt(None, "nccl or gloo", "`nccl` is replaced by `gloo` when training on the CPU",
                              shown="`nccl` on CUDA, `gloo` on the CPU")
    port: int = opt(29500, "rendezvous port", "rendezvous port (slurm launcher, when `MASTER_PORT` is unset)")


class OptionFile(Section):
    """An option file of training (``lkdn-train``) or testing (``lkdn-test``): the same keys."""

    name: Name = opt(None, "experiment name (folders under experiments/ or results/)",
                     "experiment name: `experiments/<name>/` (train) or `results/<name>/` (test); a single folder name "
                     "(letters, digits, `.`, `_`, `-`, `+`; no `/`, not `.` or `..`); `--debug` prefixes `debug_`",
                     shown="required")
    model_type: str = opt("SRModel", "model class, SRModel", "the training model class (registered in "
                          "`lkdn.models`)")
    scale: Annotated[int, between(1, MAX_SCALE)] = opt(
        None, "upscaling factor; must equal network_g.upscale", "upscaling factor (1 to 16), the one source: copied "
        "into every dataset and into `network_g.upscale` when that is absent; must equal `network_g.upscale`",
        shown="`network_g.upscale`, else the network's default")
    num_gpu: int | Literal["auto"] = opt("auto", "auto (default), 0 for CPU, or a count",
                                         "`auto`: all visible CUDA devices (one per process), the CPU when there are "
                                         "none; `0` forces the CPU; a count above the visible devices is an error")
    manual_seed: Annotated[int, between(0, MAX_SEED)] = opt(
        None, "random seed", "seed of every random generator (the saved one on resume); 0 to 2**64-1",
        shown="random 1–10000")
    is_train: bool = opt(None, "filled in", "set by the entry points", shown="filled in")
    root_path: str = opt(None, "filled in by the trainer: folder of experiments/ and tb_logger/",
                         "set by the entry points: the folder of `experiments/`, `results/` and `tb_logger/`",
                         shown="filled in")
    dist: bool = opt(None, "filled in", "accepted (BasicSR writes it); the distributed set-up comes from the launcher",
                     shown="")
    rank: int = opt(None, "filled in", "accepted (BasicSR writes it); not used", shown="")
    world_size: int = opt(None, "filled in", "accepted (BasicSR writes it); not used", shown="")
    auto_resume: bool = opt(None, "filled in", "accepted (BasicSR writes it); `--auto-resume` of `lkdn-train` sets it",
                            shown="")
    find_unused_parameters: bool = opt(False, "DDP option", "DDP option")
    use_static_graph: bool = opt(None, "DDP option", "accepted (a BasicSR DDP key); not used", shown="")
    datasets: dict[Any, Dataset] = opt(None, "datasets by section name", "the `datasets.<phase>` sections", shown="")
    network_g: FreeForm = opt(None, "network: type and its arguments", "the network: `type` and its constructor's "
                              "arguments", shown="required")
    path: PathOptions | None = opt(None, "weights and folders", "the `path` section", factory=dict)
    train: Train | None = opt(None, "training settings", "the `train` section (training)", shown="")
    val: Val | None = opt(None, "validation / test settings", "the `val` section", shown="")
    logger: Logger | None = opt(None, "logging settings", "the `logger` section", factory=dict)
    dist_params: DistParams | None = opt(None, "distributed settings", "the `dist_params` section", factory=dict)

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        network = data.get("network_g")
        lookup = (context.get("lookups") or {}).get("network")
        factory = yield from registered(network, ("network_g",), lookup, ("type", "reparameterized"))
        if isinstance(network, Mapping):
            if factory is not None:
                yield from network_types(network, factory)
            for key, value in network.items():
                if (str(key).startswith("num_") or str(key).endswith("channels")) and is_number(value) and value < 1:
                    yield ("network_g", key), f"must be positive (a count of channels or blocks), got {value!r}"
            scale = data.get("scale")
            if type(scale) is int and network.get("upscale", scale) != scale:
                yield ("network_g", "upscale"), f"{network['upscale']} differs from the top-level scale {scale}"


TOP = tuple(OptionFile.model_fields)
"""The top-level keys."""

def members(annotation: Any) -> list[Any]:
    """The types a field accepts (``Annotated`` and unions unwrapped)."""
    if typing.get_origin(annotation) is Annotated:
        return members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in members(arg)]
    return [annotation]


def section_of(annotation: Any) -> tuple[type[Section] | None, bool]:
    """The section model a field holds, and whether it is a mapping of names to such sections."""
    for member in members(annotation):
        if isinstance(member, type) and issubclass(member, Section):
            return member, False
        if typing.get_origin(member) is dict:
            value = typing.get_args(member)[1]
            if isinstance(value, type) and issubclass(value, Section):
                return value, True
    return None, False


def _plain(value: Any) -> Any:
    """Plain dicts and lists (read-only options and tuples come back as YAML gives them)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _flatten(errors: list[dict[str, Any]], prefix: Loc = ()) -> Iterator[dict[str, Any]]:
    for error in errors:
        loc = prefix + tuple(error["loc"])
        if error["type"] == "lkdn_section":
            yield from _flatten(error["ctx"]["errors"], loc)
        else:
            yield {**error, "loc": loc}


@dataclass
class _Place:
    """Where an error is: the key path as messages write it, the declared field and its section."""

    path: tuple[str, ...]
    section: type[Section] | None
    field: FieldInfo | None = None
    unknown: bool = False
    item: bool = False  # an item of the field's list


def _place(loc: Loc, kind: str) -> _Place:
    """The place of an error at ``loc``: past a declared leaf, list items are named (``mean[0]``), the
    keys of a section of a registered class too (``network_g.num_feat``), union members are not."""
    model: type[Section] | None = OptionFile
    place = _Place((), OptionFile)
    index = 0
    while index < len(loc) and model is not None:
        key = loc[index]
        index += 1
        place = _Place(place.path + (str(key),), model)
        if not isinstance(key, str) or key not in model.model_fields:
            place.unknown = True
            return place
        place.field = model.model_fields[key]
        model, keyed = section_of(place.field.annotation)
        if model is not None and keyed and index < len(loc):
            place = _Place(place.path + (str(loc[index]),), model)
            index += 1
    for key in loc[index:]:
        if isinstance(key, int):
            place.path = place.path[:-1] + (f"{place.path[-1]}[{key}]",)
            place.item = True
        elif kind == "lkdn":
            place.path += (str(key),)
        else:
            break  # a member of a union
    return place


def _type_name(member: Any) -> str:
    if member is type(None):
        return "null"
    if typing.get_origin(member) is Literal:
        return " or ".join(map(str, typing.get_args(member)))
    origin = typing.get_origin(member) or member
    return getattr(origin, "__name__", str(origin))


def _choices(annotation: Any) -> str:
    names = [("~" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
             for m in members(annotation) for v in (typing.get_args(m) if typing.get_origin(m) is Literal
                                                     else (None,) if m is type(None) else ())]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _message(place: _Place, errors: list[dict[str, Any]]) -> list[str]:
    """The messages of the errors at one place (several for the members of a union: one message)."""
    kinds = {e["type"] for e in errors}
    value = errors[0].get("input")
    messages = [e["ctx"]["message"] for e in errors if e["type"] == "lkdn"]
    if place.unknown:
        valid = list(place.section.model_fields) if place.section else []
        key = place.path[-1]
        messages.append(f"unknown key{did_you_mean(key, valid, cutoff=0.6)} (valid: {', '.join(sorted(valid))})")
    elif "finite_number" in kinds:
        messages.append(f"must be a finite number, got {value!r}")
    elif "literal_error" in kinds and place.field is not None and all(
            typing.get_origin(m) is Literal or m is type(None) for m in members(place.field.annotation)):
        messages.append(f"expected {_choices(place.field.annotation)}, got {value!r}")
    elif kinds & {"model_type", "dict_type", "model_attributes_type"} and (
            place.field is None or section_of(place.field.annotation)[0] is not None):
        messages.append(f"expected a mapping, got {type(value).__name__}")
    elif place.field is not None and kinds - {"lkdn"}:
        accepted = members(place.field.annotation)
        if place.item:  # the item types of the list
            accepted = [m for lists in accepted if typing.get_origin(lists) is list
                        for m in members(typing.get_args(lists)[0])]
        names = " or ".join(dict.fromkeys(_type_name(m) for m in accepted))
        messages.append(f"expected {names} ({place.field.title}), got {value!r}{number_hint(value)}")
    elif kinds - {"lkdn"}:
        messages.append(f"{errors[0]['msg']}, got {value!r}")
    return list(dict.fromkeys(messages))


def _messages(errors: list[dict[str, Any]], source: str, lines: Mapping[tuple[str, ...], int]) -> list[str]:
    """``<file>:<line>: <key path>: <problem>`` for each error, in the order of the file's keys."""
    places: dict[tuple[str, ...], tuple[_Place, list[dict[str, Any]]]] = {}
    for error in _flatten(errors):
        place = _place(error["loc"], error["type"])
        places.setdefault(place.path, (place, []))[1].append(error)
    located = [(lines.get(tuple(p.split("[")[0] for p in path)), path, place, group)
               for path, (place, group) in places.items()]
    return [f"{source}:{line}: {'.'.join(path)}: {message}" if line else f"{source}: {'.'.join(path)}: {message}"
            for line, path, place, group in sorted(located, key=lambda item: item[0] or 0)
            for message in _message(place, group)]


# ------------------------------------------------------------------------------------------ validation


def _context(opt: Mapping[str, Any], lookups: Mapping[str, Callable[[str], Any]] | None) -> dict[str, Any]:
    scale = opt.get("scale")
    return {"lookups": lookups or {}, "scale": scale if type(scale) is int else None}


def _errors(opt: Mapping[str, Any], context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The errors of the models, each dataset validated with its section name (its phase) known."""
    data = _plain(opt)
    datasets = data.pop("datasets", None) if isinstance(data.get("datasets"), Mapping) else None
    errors = _validation_errors(OptionFile, data, context)
    for name, dataset in (datasets or {}).items():
        for error in _validation_errors(Dataset, dataset, {**context, "section": name}):
            errors.append({**error, "loc": ("datasets", name) + tuple(error["loc"])})
    return errors


def _validation_errors(model: type[Section], data: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        model.model_validate(data, context=dict(context))
    except ValidationError as err:
        return err.errors(include_url=False)
    return []


def validate_options(
    opt: Mapping[str, Any], *, source: str | Path = "<options>", text: str | None = None,
    lookups: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """Raise :class:`SchemaError` listing every invalid option of ``opt``.

    Args:
        opt: the parsed options.
        source: the file name, used in messages.
        text: the YAML text, to report line numbers.
        lookups: functions mapping a ``type`` name to its class for ``network_g``, ``optim_g``,
            ``scheduler`` and ``loss`` (each optional); they are checked against its signature.
    """
    errors = _errors(opt, _context(opt, lookups))
    messages = _messages(errors, str(source), key_lines(text) if text else {})
    if messages:
        raise SchemaError("invalid options:\n  " + "\n  ".join(messages))


def fill_defaults(opt: dict[str, Any], model: type[Section] = OptionFile,
                  prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Fill in every declared default that ``opt`` (validated) lacks, in place; returns the key paths filled.

    Keys declared without a default (``None``: absent and ``~`` mean the same) stay absent;
    sections declared with a default (``path``, ``logger``, ``dist_params``) are created.
    """
    filled: list[tuple[Any, ...]] = []
    for key, info in model.model_fields.items():
        section, keyed = section_of(info.annotation)
        if opt.get(key) is None and info.default_factory is not None:
            opt[key] = info.default_factory()
            filled.append(prefix + (key,))
        elif key not in opt and info.default is not None:
            opt[key] = copy.deepcopy(info.default)
            filled.append(prefix + (key,))
        value = opt.get(key)
        if section is not None and isinstance(value, dict):
            items = value.items() if keyed else [(None, value)]
            for name, item in items:
                if isinstance(item, dict):
                    filled += fill_defaults(item, section, prefix + ((key, name) if keyed else (key,)))
    return filled


def with_defaults(section: Mapping[str, Any] | None, model: type[Section]) -> dict[str, Any]:
    """A plain copy of ``section`` (absent: empty) with the declared defaults of ``model`` filled in.

    For a section validation did not fill: absent from the file (``val`` is optional), or from a
    plain mapping passed to the Python API.
    """
    data = _plain(section or {})
    fill_defaults(data, model)
    return data


def without_filled(opt: Mapping[str, Any], filled: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A copy of ``opt`` without the ``filled`` defaults (:func:`fill_defaults`): what a file gave, to write back.

    A filled section stays when something else was written into it (``path.experiments_root``).
    """
    data = _plain(opt)
    for path in sorted(filled, key=len, reverse=True):  # a section's keys before the section
        parent: Any = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and (not isinstance(value, dict) or not value):
            del parent[path[-1]]
    return data


# ------------------------------------------------------------------------------------------------ docs
DOCS = Path(__file__).resolve().parents[1] / "docs"
MARK = "<!-- generated by python -m lkdn.options --write: {name} -->"
END = "<!-- end of generated table -->"


def _shown_default(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown" in extra:
        return str(extra["shown"])
    value = {} if info.default_factory is not None else info.default
    if value is None or value == {}:
        return "`~`" if value is None else ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return str(value) if isinstance(value, int | float) else f"`{value}`"


TABLES: dict[str, type[Section]] = {"top level": OptionFile, "datasets.<phase>": Dataset, "path": PathOptions,
                                     "train": Train, "val": Val, "logger": Logger}
"""The key tables of docs/options.md; a section without its own table is in its parent's (``val.tile.size``)."""


def _rows(model: type[Section], prefix: str = "") -> Iterator[str]:
    for key, info in model.model_fields.items():
        section, keyed = section_of(info.annotation)
        if section is None or section in TABLES.values():
            yield f"| `{prefix}{key}` | {_shown_default(info)} | {info.description} |"
        else:
            yield from _rows(section, f"{prefix}{key}.<name>." if keyed else f"{prefix}{key}.")


def table(name: str) -> str:
    """The Markdown table of the keys of section ``name`` (a key of :data:`TABLES`)."""
    return "\n".join(["| key | default | meaning |", "| --- | --- | --- |", *_rows(TABLES[name])])


def render_markdown(text: str) -> str:
    """``text`` (docs/options.md) with each generated table replaced by the models' current one."""
    for name in TABLES:
        mark = MARK.format(name=name)
        start = text.find(mark)
        end = text.find(END, start)
        if start < 0 or end < 0:
            raise ValueError(f"docs/options.md: {mark!r} ... {END!r} not found")
        text = f"{text[:start]}{mark}\n{table(name)}\n{text[end:]}"
    return text


def _standard_bounds(node: Any) -> Any:
    """JSON schema's names of pydantic's union bounds (``gt`` -> ``exclusiveMinimum``...), without the docs'
    ``shown`` defaults and the ``null`` defaults (an absent key)."""
    names = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}
    if isinstance(node, dict):
        return {names.get(k, k): _standard_bounds(v) for k, v in node.items()
                if k != "shown" and not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_standard_bounds(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """The JSON schema of an option file (train and test), for editors' YAML completion."""
    schema = _standard_bounds(OptionFile.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "lkdn option file (train and test)"
    return schema


def render_json() -> str:
    return json.dumps(json_schema(), indent=1, ensure_ascii=False) + "\n"


def outdated(docs: Path = DOCS) -> list[Path]:
    """The generated files under ``docs`` that differ from what the models give now."""
    markdown, schema = docs / "options.md", docs / "options.schema.json"
    stale = []
    if render_markdown(markdown.read_text(encoding="utf-8")) != markdown.read_text(encoding="utf-8"):
        stale.append(markdown)
    if not schema.is_file() or schema.read_text(encoding="utf-8") != render_json():
        stale.append(schema)
    return stale


def write(docs: Path = DOCS) -> None:
    """Regenerate docs/options.md's key tables and docs/options.schema.json from the models."""
    markdown = docs / "options.md"
    markdown.write_text(render_markdown(markdown.read_text(encoding="utf-8")), encoding="utf-8")
    (docs / "options.schema.json").write_text(render_json(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m lkdn.options --write`` regenerates the docs; ``--check`` lists the outdated ones."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        write()
        return 0
    if args == ["--check"]:
        stale = outdated()
        for path in stale:
            sys.stdout.write(f"{path}: out of date; run python -m lkdn.options --write\n")
        return 1 if stale else 0
    sys.stderr.write("usage: python -m lkdn.options --write | --check\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
