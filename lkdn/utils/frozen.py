"""Read-only option trees: validated options are frozen so that nothing downstream can change them.

:func:`freeze` turns mappings into :class:`FrozenDict` (a ``dict`` whose mutating methods raise)
and lists into tuples; :func:`thaw` gives back plain, mutable ``dict``/``list`` copies for code
that needs its own (basicsr's dataset constructors write into their options).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NoReturn

import yaml


class FrozenDict(dict):
    """A ``dict`` that cannot be changed after construction (JSON- and YAML-dumpable as a mapping)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("options are read-only after validation; make a copy with lkdn.utils.frozen.thaw()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return FrozenDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def __copy__(self) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


yaml.SafeDumper.add_multi_representer(FrozenDict, yaml.SafeDumper.represent_dict)


def freeze(value: Any) -> Any:
    """A read-only copy of ``value``: mappings become :class:`FrozenDict`, lists and tuples tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A mutable deep copy of ``value``: mappings become ``dict``, tuples and lists ``list``."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return copy.deepcopy(value)
