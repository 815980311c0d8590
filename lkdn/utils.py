"""Small helpers every layer uses; this module imports no torch, so commands parse their lines fast.

* **names**: :func:`did_you_mean`, :func:`unknown_name`, :func:`unknown_keywords`, the one "did you mean"
  behind every unknown-name error;
* **frozen options**: :class:`FrozenDict`, :func:`freeze`, :func:`thaw` (validated options are read-only);
* **files**: :func:`write_atomic` and its kin, the one place where a file that must never be half-written
  is written (a temporary file beside the target, fsynced, then renamed);
* **logging**: :func:`setup_logging` for the entry points (library modules only call ``logging.getLogger``);
* **command lines**: :func:`command_parser` and :func:`parse_command_line` (hyphenated options, the old
  underscore spellings accepted unseen), :func:`parse_train_args`, and :func:`run` / :func:`command`, the
  wrapper of every command's ``main``: a clear error (:class:`lkdn.errors.LkdnError`) is one
  ``error: <message>`` line and status 1, ``LKDN_TRACEBACK=1`` shows its traceback instead, a Ctrl-C is one
  line and status 130; argparse's usage errors keep status 2;
* **basicsr on current torchvision**: :func:`install_torchvision_alias` (``import lkdn`` calls it).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import importlib.abc
import importlib.machinery
import inspect
import json
import logging
import os
import signal
import sys
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import yaml

from lkdn.errors import LkdnError


# ---- names: the one nearest-name helper behind every unknown-name error ----
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


# ---- frozen options: validated options are read-only downstream ----
class FrozenDict(dict):
    """A ``dict`` that cannot be changed after construction (JSON- and YAML-dumpable as a mapping)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("options are read-only after validation; make a copy with lkdn.utils.thaw()")

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


# ---- files: atomic writes, the one way a file that must never be half-written is written ----
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


# ---- logging set-up for the entry points ----
_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (not when it was made),
    so redirections made later (tqdm, test harnesses) are followed and a closed stream is never used."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if "tqdm" not in sys.modules:
            super().emit(record)
            return
        from tqdm import tqdm  # already imported (checked above)

        # A progress bar on the terminal is cleared, then redrawn. Without tqdm's lock: it is shared with
        # forked processes (data workers, a forked trainer), and a fork taken while a thread of this
        # process held it would leave both processes waiting for each other at their next log line.
        with tqdm.external_write_mode(file=self.stream, nolock=True):
            super().emit(record)


def setup_logging(log_file: str | os.PathLike[str] | None = None, *, level: int = logging.INFO, rank: int = 0) -> logging.Logger:
    """Send the ``lkdn`` and ``basicsr`` loggers to stderr and, if given, ``log_file``.

    Only rank 0 logs at ``level``; other ranks log errors only. Returns the ``lkdn`` logger.
    Calling it again replaces the handlers (no duplicated lines).
    """
    level = level if rank == 0 else logging.ERROR
    handlers: list[logging.Handler] = [StderrHandler()]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    for name in ("lkdn", "basicsr"):
        log = logging.getLogger(name)
        for old in list(log.handlers):
            log.removeHandler(old)
            old.close()
        for handler in handlers:
            log.addHandler(handler)
        log.setLevel(level)
        log.propagate = False
    return logging.getLogger("lkdn")


# ---- command lines: one parser maker, one reader, one wrapper of every command's main ----
#: how each command was run before it had its own name (shown as the command in the helps)
SCRIPT_PATHS = {"lkdn-train": "lkdn/train.py", "lkdn-test": "lkdn/test.py"}


def command_parser(command: str, description: str | None, examples: Sequence[str],
                   **kwargs: object) -> argparse.ArgumentParser:
    """The parser of ``command``: the command's name in the usage line, ``examples`` (command lines) under the
    options, and ``python <script>`` in ``description`` written as the command it is."""
    for name, path in SCRIPT_PATHS.items():
        description = description and description.replace(f"python {path}", name)
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return argparse.ArgumentParser(prog=command, description=description, epilog=epilog, **kwargs)


def old_spellings(parser: argparse.ArgumentParser, argv: Sequence[str],
                  aliases: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` with the old spellings of ``parser``'s options written the current way: ``--snake_case``
    (and ``--snake_case=value``) as ``--snake-case``, and each ``aliases`` key as its value (``--root`` as
    ``--root-path``). An old spelling is accepted on the command line and not shown in ``--help``."""
    known = parser._option_string_actions  # noqa: SLF001 (argparse has no public list of option strings)
    rewritten = []
    for position, token in enumerate(argv):
        if token == "--":  # the rest are positional arguments
            return [*rewritten, *argv[position:]]
        name, equals, value = token.partition("=")
        if name.startswith("--") and name not in known:
            new = (aliases or {}).get(name, name.replace("_", "-"))
            if new in known:
                token = f"{new}{equals}{value}"
        rewritten.append(token)
    return rewritten


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
                       aliases: Mapping[str, str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` of ``argv`` (default: the command line) with the old spellings accepted
    (:func:`old_spellings`)."""
    return parser.parse_args(old_spellings(parser, sys.argv[1:] if argv is None else list(argv), aliases))


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``lkdn-train`` (BasicSR's, hyphenated, plus ``--root-path``; BasicSR's underscore
    spellings such as ``--auto_resume`` are accepted too)."""
    parser = command_parser(
        "lkdn-train", "Train a super-resolution network from a BasicSR-style YAML file.",
        ["lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml --auto-resume",
         "lkdn-train -opt options/train/LKDN/train_LKDN_x4.yml --force-yml train:total_iter=1000 --root-path runs",
         "torchrun --nproc-per-node=2 lkdn/train.py -opt options/train/LKDN/train_LKDN_x4.yml --launcher pytorch"])
    parser.add_argument("-opt", required=True, help="path to the option YAML file")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                        help="none: one process; pytorch: under torchrun; slurm: under srun")
    parser.add_argument("--auto-resume", action="store_true", help="resume from the latest state of the experiment")
    parser.add_argument("--debug", action="store_true", help="debug_ name prefix, log every iteration, save every 8")
    parser.add_argument("--local-rank", type=int, default=0, help="ignored (torch.distributed.launch)")
    parser.add_argument("--force-yml", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. train:total_iter=1000 datasets:train:batch_size_per_gpu=16")
    parser.add_argument("--root-path", default=None, help="folder of experiments/ and tb_logger/ (default: cwd)")
    return parse_command_line(parser, argv)


INTERRUPTED = "interrupted: stopped by Ctrl-C"


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None, *,
        interrupted: str = INTERRUPTED, clear: tuple[type[BaseException], ...] = ()) -> int:
    """``main(argv)`` as a command: its status (``None`` or a result that is not an int: 0), or 1 after one
    ``error: <message>`` line for a :class:`~lkdn.errors.LkdnError` or one of ``clear`` (builtin errors whose
    messages the command words itself, such as an ``OSError`` naming the file; nothing printed when the error
    was logged already, ``lkdn_logged``), or 130 after the line ``interrupted`` for a Ctrl-C.
    ``LKDN_TRACEBACK=1`` re-raises both, to show the traceback."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        print(interrupted, file=sys.stderr)  # noqa: T201 (a command's output)
        return 128 + signal.SIGINT
    except (LkdnError, *clear) as err:
        if os.environ.get("LKDN_TRACEBACK"):
            raise
        if not getattr(err, "lkdn_logged", False):
            print(f"error: {err}", file=sys.stderr)  # noqa: T201 (a command's output)
        return 1
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def command(function: Callable[[Sequence[str] | None], Any] | None = None, *,
            interrupted: str = INTERRUPTED, clear: tuple[type[BaseException], ...] = ()) -> Any:
    """Decorate a command's ``main`` with :func:`run`: ``@command`` or ``@command(clear=(OSError,))``."""
    def decorate(function: Callable[[Sequence[str] | None], Any]) -> Callable[[Sequence[str] | None], int]:
        @functools.wraps(function)
        def main(argv: Sequence[str] | None = None) -> int:
            return run(function, argv, interrupted=interrupted, clear=clear)

        return main

    return decorate if function is None else decorate(function)


# ---- basicsr 1.4.2 on torchvision >= 0.17 ----
# basicsr imports ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17) for
# ``rgb_to_grayscale``, which lives in ``torchvision.transforms.functional``. The finder below sits last on
# ``sys.meta_path`` and answers for the old name only when no other finder does; installing it imports
# nothing, and torchvision is imported when basicsr asks. basicsr's own code is never patched.
_OLD_NAME = "torchvision.transforms.functional_tensor"


class _AliasLoader(importlib.abc.Loader):
    """Makes the alias module: ``rgb_to_grayscale`` of ``torchvision.transforms.functional``."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        from torchvision.transforms import functional  # only when basicsr asks for the old name

        module.__doc__ = "Alias created by lkdn.utils for basicsr 1.4.2 on torchvision >= 0.17."
        module.rgb_to_grayscale = functional.rgb_to_grayscale


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: finds the old name when torchvision no longer has it."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _OLD_NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader())


def install_torchvision_alias() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable (the real one wins where it exists)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
