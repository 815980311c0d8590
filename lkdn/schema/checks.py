"""The checks of option values beyond their types, and of the sections whose keys are a registered class's arguments.

Each check returns or yields the problem's message (the key path and line are added by
:mod:`lkdn.schema.validation`); :class:`Check` attaches one to a declared key, with its JSON-schema bounds.
"""

from __future__ import annotations

import inspect
import math
import re
import string
import sys
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import (
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic_core import PydanticCustomError, core_schema

from lkdn.errors import LkdnError
from lkdn.utils import did_you_mean, unknown_keywords

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
