"""Atomic file writes: the one place where this project writes a file that must never be half-written.

:func:`write_atomic` writes to a temporary file in the target's folder, flushes and fsyncs it,
gives it the usual permissions (``0666`` less the umask: ``mkstemp`` creates ``0600``), renames
it over the target and fsyncs the folder. A crash at any moment leaves either the old file or
the new one; a failure (disk full, read-only folder) removes the temporary file, leaves the old
file untouched and raises the ``OSError``. Checkpoints, training states, ONNX and other
exports, ``metrics.json``, option files and SR images all go through it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from lkdn.errors import LkdnError

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
"""Temporary files are ``.<name>.<random>.tmp`` beside the target (see :func:`partial_writes`)."""

Writer = Callable[[BinaryIO], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | Writer) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary handle) to ``path`` atomically."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", str(path))
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                logger.warning("could not remove the partial file %s", tmp)
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomic` of UTF-8 text."""
    return write_atomic(path, text.encode("utf-8"))


def replace_between_markers(path: str | os.PathLike[str], marker: str, text: str) -> Path:
    """Replace what stands between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in a text file, atomically.

    Raises:
        ValueError: the file lacks one of the two markers (the message names both and the file).
    """
    path = Path(path)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    content = path.read_text(encoding="utf-8")
    if start not in content or end not in content:
        raise ValueError(f"{path}: no {start} ... {end} block to replace")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    return write_text_atomic(path, f"{head}{start}\n{text.rstrip()}\n{end}{tail}")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """:func:`write_atomic` of strict JSON (indent 2): NaN and infinity are a ``ValueError``, not invalid JSON."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def partial_writes(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files :func:`write_atomic` left in ``folder`` when its process was killed mid-write."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file())


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """The first existing ancestor folder of ``path`` that is a file (so ``path`` can never be written), or None."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


PathArg = str | os.PathLike[str] | None
Labelled = Mapping[str, PathArg] | Iterable[tuple[str, PathArg]]


class OutputIsInputError(LkdnError, ValueError):
    """A file or folder to be written is one of the command's inputs; the message names both."""


def _identities(path: Path) -> list[tuple[int, int] | str]:
    """Keys that every name of one file shares: its resolved path, and (device, inode) when it exists."""
    keys: list[tuple[int, int] | str] = [str(path.absolute().resolve())]
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return keys
    return [*keys, (stat.st_dev, stat.st_ino)]


def refuse_overwriting_inputs(outputs: Labelled, inputs: Labelled) -> None:
    """Raise :class:`OutputIsInputError` when one of ``outputs`` is one of ``inputs``.

    Both are ``label -> path`` (a mapping or ``(label, path)`` pairs; ``None`` paths are skipped),
    the labels as the user gave them (``--output``, ``-opt``). The same file reached by another
    name (a relative path, a symbolic or hard link) counts as the same. Every script that writes
    a file it did not read calls this before any work.
    """
    pairs = inputs.items() if isinstance(inputs, Mapping) else inputs
    known = {key: (label, path) for label, path in pairs if path is not None for key in _identities(Path(path))}
    for label, path in outputs.items() if isinstance(outputs, Mapping) else outputs:
        if path is None:
            continue
        found = next((known[key] for key in _identities(Path(path)) if key in known), None)
        if found is not None:
            source_label, source = found
            same = "" if str(source) == str(path) else f" ({source})"
            raise OutputIsInputError(
                f"{label} {path} is the {source_label}{same}: writing it would overwrite an input file; choose another path"
            )
