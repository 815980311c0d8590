"""Validation of an option file against the declarations, with messages that name the file, the key's
line, the key path and the value; the declared defaults filled in (and left out again to write a file back).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ValidationError,
)
from pydantic.fields import FieldInfo

from lkdn.schema.checks import Loc, SchemaError, key_lines, number_hint
from lkdn.schema.models import Dataset, OptionFile, Section, members, section_of
from lkdn.utils import did_you_mean

# --------------------------------------------------------------------------------------------- messages


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
