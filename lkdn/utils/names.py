"""The one nearest-name helper ("did you mean ...?") behind every unknown-name error."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any


def nearest(word: object, candidates: Iterable[str], *, cutoff: float = 0.5) -> str | None:
    """The candidate closest to ``word`` (difflib's ratio of at least ``cutoff``), or None."""
    match = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(word: object, candidates: Iterable[str], *, cutoff: float = 0.5) -> str:
    """``"; did you mean 'X'?"`` for the nearest candidate, or ``""`` when none is close."""
    match = nearest(word, candidates, cutoff=cutoff)
    return f"; did you mean {match!r}?" if match else ""


def unknown_name(kind: str, name: object, known: Iterable[str], *, where: str) -> str:
    """``"<where>: unknown <kind> 'x'; did you mean 'y'? (known: a, b, c)"``."""
    names = sorted(known)
    return f"{where}: unknown {kind} {name!r}{did_you_mean(name, names)} (known: {', '.join(names)})"


def keyword_parameters(factory: Callable[..., Any], *, skip: Iterable[str] = ()) -> list[str] | None:
    """The names ``factory`` accepts as keyword arguments, or None when it takes ``**kwargs`` (anything)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    skipped = set(skip)
    return [k for k, p in params.items() if k not in skipped and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def unknown_keywords(
    factory: Callable[..., Any], keys: Iterable[str], *, skip: Iterable[str] = (), also: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``(key, "unknown key; did you mean ...? (valid for <factory>: ...)")`` for each of ``keys`` that ``factory`` does not take.

    ``skip`` are parameters that options never set (``params``, ``optimizer``); ``also`` are keys
    accepted besides the factory's own (``type``).
    """
    valid = keyword_parameters(factory, skip=skip)
    if valid is None:
        return []
    extra = list(also)
    name = getattr(factory, "__name__", str(factory))
    return [
        (key, f"unknown key{did_you_mean(key, valid + extra)} (valid for {name}: {', '.join(valid)})")
        for key in keys if key not in valid and key not in extra
    ]
