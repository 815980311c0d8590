"""The published checkpoints and benchmark sets: where they come from, where they are looked for, how they are fetched.

Reference files are looked for in one documented order (README "Data and weights"), by the
scripts and the tests alike (:func:`find_reference`):

1. ``$LKDN_SHARED``, when the variable is set: a folder laid out as ``pretrained/<Family>/<file>``
   and ``benchmarks/<Set>/x<scale>/{HR,LR}``;
2. this checkout's ``experiments/pretrained_models/<Family>/<file>`` (where
   ``lkdn-download`` and the first-use download put weights) and
   ``datasets/<Set>/x<scale>/{HR,LR}`` (or ``datasets/<Set>/{GTmod<s>,LRbicx<s>}``); installed from a
   wheel, ``~/.cache/lkdn/pretrained_models`` and ``./datasets`` instead (:func:`local_folders`);
3. ``../shared`` beside the checkout, laid out as in 1 (the project's development machines),
   unless ``LKDN_SHARED`` is set: ``LKDN_SHARED=/nonexistent`` hides every shared copy, as on a
   user's fresh clone.

A published checkpoint that is found nowhere is downloaded on first use into the folder of 2
(as BasicSR's ``load_file_from_url`` does), resumable and
verified by its SHA-256 and size. Without a network, one line says what to download and where
to put it. ``LKDN_OFFLINE=1`` turns the download off (the test suite sets it).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from lkdn.errors import LkdnError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SHARED_ENV = "LKDN_SHARED"
OFFLINE_ENV = "LKDN_OFFLINE"


def local_folders(root: Path = ROOT) -> tuple[Path, Path, Path | None]:
    """Where weights are kept, where benchmark sets are looked for, and the shared folder, for a package at ``root``.

    Run from a clone (``root`` holds ``setup.py``; the editable install of the README): the clone's
    ``experiments/pretrained_models`` and ``datasets``, and ``../shared`` beside it. Installed from a
    wheel (``root`` is ``site-packages``): the user's cache, ``$XDG_CACHE_HOME/lkdn/pretrained_models``
    (default ``~/.cache/lkdn/pretrained_models``), ``datasets`` under the current folder, and no shared
    folder, so nothing is ever written into the installation.
    """
    if (root / "setup.py").is_file():
        return root / "experiments" / "pretrained_models", root / "datasets", root.parent / "shared"
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    return cache_home / "lkdn" / "pretrained_models", Path("datasets").absolute(), None


CACHE, DATASETS, SHARED = local_folders()
CHUNK = 1 << 16
MIN_RATE = 1024
"""Bytes per second a download must average over each ``timeout`` seconds, else it stops (resumable)."""
MAX_TIMEOUT = 86400.0
REPLY_DEADLINE = 2
"""A reply's status line and headers (redirects included) must arrive within this many timeouts."""

HOMES = {  # the public homes: a repository's raw-file prefix
    "LKDN": "https://github.com/stella-von/LKDN/raw/main/experiments/pretrained_models/LKDN/",
    "RFDN": "https://github.com/njulj/RFDN/raw/master/trained_model/",
    "BSRN": "https://github.com/xiaom233/BSRN/raw/main/experiments/pretrained_models/",
    "IMDN": "https://github.com/Zheng222/IMDN/raw/master/checkpoints/",
    "NTIRE2022": "https://github.com/ofsoundof/NTIRE2022_ESR/raw/main/model_zoo/",
    "NTIRE2025": "https://github.com/Amazingren/NTIRE2025_ESR/raw/main/model_zoo/",
    "NTIRE2026": "https://github.com/Amazingren/NTIRE2026_ESR/raw/main/model_zoo/",
}
# name, family (the folder under a weights root: <family>/<name>.pth), SHA-256, size in bytes, public home,
# and the file's name there ({} stands for the name)
_TABLE = """
LKDN_x2                LKDN     02b429e795ad0863fdf21c6924c79344e30a39d637c44442d13124193b012e6b  2579929  LKDN       {}.pth
LKDN_x3                LKDN     52835d49d402683ea2085c13e4afc3aca49f6b806ea29d6ed29b2238cd7874c5  2640473  LKDN       {}.pth
LKDN_x4                LKDN     f534422583c99dad994fd7df897f6f872637218430cfedf6c2d2a072ea86dbd7  2725465  LKDN       {}.pth
LKDN-S_x4              LKDN     39ff2c69cdeb40f842c9f93368caee3323a4309c350373edeb2dc9ef3cc05851  1494129  LKDN       {}.pth
LKDN-S_del_rep_x4      LKDN     b802a3945d7d4f22f836668a78448b37fe5da90d7b08afc564fbddfa594a8cf1   559105  LKDN       {}.pth
RFDN_AIM               RFDN     11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c  1754927  RFDN       {}.pth
BSRN_x2                BSRN     09bd1f85e017c7902e65a9c9770ee592efe3d013f6b5cf1fe7de8cabac4ba37d  1441677  BSRN       net_g_{}.pth
BSRN_x3                BSRN     6eb73a300aaec5029bc0de7f5ae85c02b8dcd8fdaf438c77f90272939fecca7e  1476301  BSRN       net_g_{}.pth
BSRN_x4                BSRN     47518e0f549f5696da0c84ca2d65bf50d789c7ac20e621909f5fd6c8c8d70bcb  1524813  BSRN       net_g_{}.pth
SPAN_NTIRE_ESR_c28_x4  SPAN     6c80f05048313289c6526e5fc9726688d7bb3dfdd6ae3c8b1e7dd09f601e5971   618658  NTIRE2026  team00_SPAN.pth
IMDN_x2                IMDN     740b39653592bd3f49955a21cd9e16f2d37f2c413368cc09327601b8fbe42ce1  2796052  IMDN       {}.pth
IMDN_x3                IMDN     11b1716a19bc16e5e353e1db798d476169338e631eb170c82d765559888cb028  2830672  IMDN       {}.pth
IMDN_x4                IMDN     e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714  2879112  IMDN       {}.pth
IMDN_NTIRE2022         IMDN     115b4cc557eba9daaf1a6543c4858014c7e2a410655aafef7c8348ae54acc203  3589744  NTIRE2022  imdn_baseline.pth
RLFN_NTIRE2022         RLFN     ca81b7757708ce749ac3766589690db6c2729961d026c0137e7659924ec36622  1292283  NTIRE2022  team04_rlfn.pth
EFDN_NTIRE2025         EFDN     71069f10ef234cd123f45ac8e69099f0a1fdc0c16afcfe2189e50071d47ce477  1153119  NTIRE2025  team00_EFDN.pth
DSCLoRA_NTIRE2025      DSCLoRA  239e76bc4e4e738491c3963805c0a79f524400acf5fbde34b2cb1a855dd62cb1   535137  NTIRE2025  team23_DSCF.pth
SPANF_NTIRE2025        SPANF    1508c566008654646bea1edff537c83dd7a6fe8f6ffda3f25f9eb7ba09cbbcd3   606629  NTIRE2025  team24_spanf.pth
SPANV2_NTIRE2026       SPANV2   fca2743272b8a7fb32931ed3287454173c7d209f204cb2f58084ee868414d371   565288  NTIRE2026  team22_spanv2_c2.pth
PDS_NTIRE2026          PDS      6196a5e03e7d3fb58e3c35427bdd00290e693c8b530f5f8573108e517b9ade46   577848  NTIRE2026  team01_PDS.pth
PKDSR_NTIRE2026        PKDSR    737fb4bb122c8dcdc0e3b6864d420819206ef7260e90b4a3e984c40c64e56d24  1176443  NTIRE2026  team16_PKDSR.pth
DISP_NTIRE2026         DISP     b53944ab3a6ab63d5004f5dd0fae3d76cc7d308f2145942d0e41211aaf9225bf   666790  NTIRE2026  team18_DISP.pth
DSCF_Fused_NTIRE2026   DSCF     2d6157faa97494dc4970016720b75b06db584e1386c54bcaa2e45feb41e9a189   519116  NTIRE2026  team15_DSCF_Fused.pth
"""


@dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint: where it is kept (relative to a weights root), its public URL, SHA-256 and size."""

    path: str
    url: str
    sha256: str
    size: int


CHECKPOINTS: dict[str, Checkpoint] = {
    name: Checkpoint(f"{family}/{name}.pth", HOMES[home] + remote.format(name), sha256, int(size))
    for name, family, sha256, size, home, remote in (line.split() for line in _TABLE.strip().splitlines())
}


class DownloadError(LkdnError, RuntimeError):
    """A download failed or its file does not match the published hash or size; the message says which."""


# ---------------------------------------------------------------------------------------------
# the lookup order


def reference_roots() -> list[Path]:
    """The folders laid out as ``pretrained/...`` and ``benchmarks/...``, and the local ones, in lookup order.

    Each entry maps the two kinds of reference file to a folder: ``(pretrained root, benchmarks root)``.
    """
    env = os.environ.get(SHARED_ENV)
    local = (CACHE, DATASETS)
    if env:
        return [(Path(env) / "pretrained", Path(env) / "benchmarks"), local]
    return [local] + ([(SHARED / "pretrained", SHARED / "benchmarks")] if SHARED is not None else [])


def find_reference(kind: str, *parts: str) -> Path | None:
    """The first ``<root of kind>/<parts...>`` that exists in the lookup order; ``kind``: pretrained or benchmarks.

    A benchmark set found in the local ``datasets/<Set>/{GTmod<s>,LRbicx<s>}`` layout answers
    ``("benchmarks", "<Set>", "x<s>", "HR"|"LR", ...)`` too.
    """
    if kind not in ("pretrained", "benchmarks"):
        raise ValueError(f"kind must be pretrained or benchmarks, got {kind!r}")
    for pretrained, benchmarks in reference_roots():
        root = pretrained if kind == "pretrained" else benchmarks
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
        if kind == "benchmarks" and root == DATASETS and len(parts) >= 3 and parts[1].startswith("x"):
            name, scale, side, rest = parts[0], parts[1][1:], parts[2], parts[3:]
            folder = root / name / (f"GTmod{scale}" if side == "HR" else f"LRbicx{scale}" if side == "LR" else side)
            if folder.joinpath(*rest).exists():
                return folder.joinpath(*rest)
    return None


def find_checkpoint(name: str) -> Path | None:
    """The first copy of published checkpoint ``name`` in the lookup order, or None."""
    return find_reference("pretrained", *Path(CHECKPOINTS[name].path).parts)


def checkpoint_for_path(path: str | os.PathLike[str]) -> str | None:
    """The name of the published checkpoint a weights path refers to (``.../LKDN/LKDN_x4.pth``), or None."""
    parts = Path(path).parts[-2:]
    for name, checkpoint in CHECKPOINTS.items():
        if tuple(Path(checkpoint.path).parts) == parts:
            return name
    return None


def find_benchmark(name: str, scale: int) -> tuple[Path, Path] | None:
    """``(HR folder, LR folder)`` of benchmark set ``name`` at ``scale`` in the lookup order, or None."""
    hr, lr = find_reference("benchmarks", name, f"x{scale}", "HR"), find_reference("benchmarks", name, f"x{scale}", "LR")
    if hr is None or lr is None:
        return None
    return hr, lr


# ---------------------------------------------------------------------------------------------
# downloads


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def url_for(name: str, base_url: str | None = None) -> str:
    """The public URL of ``name``, or ``<base_url>/<path>`` for a mirror."""
    checkpoint = CHECKPOINTS[name]
    return f"{base_url.rstrip('/')}/{checkpoint.path}" if base_url else checkpoint.url


def check_timeout(timeout: float, *, what: str = "timeout") -> None:
    """A :class:`DownloadError` unless ``timeout`` is a finite number of seconds in (0, :data:`MAX_TIMEOUT`]."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise DownloadError(f"{what} must be a positive number of seconds, got {timeout}")
    if timeout > MAX_TIMEOUT:
        raise DownloadError(f"{what} must be at most {MAX_TIMEOUT:g} seconds (a day), got {timeout:g}")


def check_base_url(base_url: str | None, *, what: str = "base URL") -> None:
    """A :class:`DownloadError` unless ``base_url`` is None or an ``http(s)://host/...`` or ``file:///...`` URL."""
    if base_url is None:
        return
    usage = "give http://host/folder, https://host/folder or file:///folder"
    try:
        parts = urllib.parse.urlsplit(base_url)
        parts.port  # noqa: B018 (parsing the port raises on a bad one)
    except ValueError as error:
        raise DownloadError(f"{what} {base_url!r} is not a URL ({error}); {usage}") from None
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.hostname):
        raise DownloadError(f"{what} {base_url!r} is not a URL; {usage}")


def manual_instructions(name: str, dest: Path = CACHE) -> str:
    """One line: what to download by hand and where to put it."""
    checkpoint = CHECKPOINTS[name]
    return f"download {checkpoint.url} (SHA-256 {checkpoint.sha256}) and save it as {dest / checkpoint.path}"


def _open_part(part: Path, *, append: bool) -> BinaryIO:
    """``part`` opened to write (appended to, or emptied), never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DownloadError(f"{part} is a symbolic link; a download never writes through one: remove it") from None
        raise DownloadError(f"cannot write {part}: {error.strerror or error}") from error
    return os.fdopen(fd, "ab" if append else "wb")


def _looks_like_a_web_page(head: bytes) -> bool:
    """Text starting with ``<``: a checkpoint (zip, pickle, safetensors' length header) never does."""
    return head.lstrip()[:1] == b"<" and b"\0" not in head[:256]


def _not_the_file(url: str, content_type: str, first: bytes, *, at_start: bool) -> DownloadError | None:
    """An error saying what arrived when it is a web page (a captive portal, a login page) rather than a checkpoint."""
    html = content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")
    if not html and not (at_start and _looks_like_a_web_page(first)):
        return None
    kind = f"Content-Type {content_type}" if content_type else "no Content-Type"
    return DownloadError(
        f"{url}: received a web page ({kind}, starting {first[:80]!r}) instead of the checkpoint: a captive portal "
        "or login page? Nothing of it was kept; check the network or the URL and run again"
    )


class _Watched:
    """An urllib handler that keeps the connections it opens, so that a watchdog can close them."""

    def __init__(self, connections: list[http.client.HTTPConnection], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = connections

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> http.client.HTTPResponse:
        def connection(host: str, **options: Any) -> http.client.HTTPConnection:
            opened = http_class(host, **options)
            self.connections.append(opened)
            return opened

        return super().do_open(connection, req, **kwargs)


class _WatchedHTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


def _open_within(request: urllib.request.Request, *, timeout: float, deadline: float) -> Any:
    """``urlopen(request)``, its connection closed when the reply (status and headers, redirects
    included) has not arrived after ``deadline`` seconds: a server that trickles its headers."""
    connections: list[http.client.HTTPConnection] = []
    expired = threading.Event()

    def close() -> None:
        expired.set()
        for opened in connections:
            try:
                if opened.sock is not None:
                    opened.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    opener = urllib.request.build_opener(_WatchedHTTP(connections), _WatchedHTTPS(connections))
    watchdog = threading.Timer(deadline, close)
    watchdog.daemon = True
    watchdog.start()
    too_slow = f"{request.full_url}: no complete reply within {deadline:g} s; the server is too slow or not answering HTTP"
    try:
        response = opener.open(request, timeout=timeout)
    except (OSError, ValueError, http.client.HTTPException) as error:
        if expired.is_set():
            raise DownloadError(too_slow) from error
        raise
    finally:
        watchdog.cancel()
    if expired.is_set():  # the headers were cut short by the watchdog
        response.close()
        raise DownloadError(too_slow)
    return response


def _fetch(url: str, part: Path, *, timeout: float, desc: str, size: int) -> None:
    """Download ``url`` into ``part``, continuing after the bytes already there when the server allows.

    Nothing is written before the reply is known to be the file: a web page (HTML content type,
    or a body starting with ``<``) or a length other than the published ``size`` is a
    :class:`DownloadError` that leaves ``part`` as it was. The transfer stops with a
    :class:`DownloadError` as soon as more than ``size`` bytes arrive, when no data comes for
    ``timeout`` seconds, or when less than :data:`MIN_RATE` bytes a second arrive over
    ``timeout`` seconds; a transfer that stops short keeps the part file and says to run again.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lkdn-download/1"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = _open_within(request, timeout=timeout, deadline=REPLY_DEADLINE * timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already complete (or longer than the file)
            return
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from error
    except (ValueError, http.client.HTTPException) as error:  # a bad URL or a reply that is not HTTP
        raise DownloadError(f"{url}: {type(error).__name__}: {error}") from error
    with response:
        append = False
        if have and response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            append = bool(match) and int(match.group(1)) == have
        start = have if append else 0  # the server ignored the range: start again
        length = response.headers.get("Content-Length")
        declared = start + int(length) if length and length.isdigit() else None
        if declared is not None and declared != size:
            raise DownloadError(f"{url}: the server announces {declared} bytes, the published file has {size}; "
                                "not this file, nothing was kept")
        read = getattr(response, "read1", response.read)  # what has arrived, without waiting for a whole chunk
        received = start
        try:
            first = read(CHUNK)
            wrong = _not_the_file(url, response.headers.get("Content-Type", ""), first, at_start=start == 0)
            if wrong is not None:
                raise wrong
            with _open_part(part, append=append) as handle, tqdm(
                total=size, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, dynamic_ncols=True,
            ) as bar:
                window, window_bytes = time.monotonic(), 0
                block = first
                while block:
                    received += len(block)
                    if received > size:
                        raise DownloadError(f"{url}: more than the published {size} bytes arrived; not this file")
                    handle.write(block)
                    bar.update(len(block))
                    window_bytes += len(block)
                    elapsed = time.monotonic() - window
                    if elapsed >= timeout:
                        if window_bytes < MIN_RATE * elapsed:
                            raise DownloadError(
                                f"{url}: {window_bytes} bytes in {elapsed:.1f} s, slower than {MIN_RATE} bytes/s; "
                                f"stopped after {received} of {size} bytes, run again to resume"
                            )
                        window, window_bytes = time.monotonic(), 0
                    block = read(CHUNK)
        except (OSError, http.client.HTTPException) as error:  # connection dropped: keep the part file for the next run
            kept = part.stat().st_size if part.exists() and not part.is_symlink() else 0
            raise DownloadError(f"{url}: interrupted after {kept} bytes ({error}); run again to resume") from error
    if declared is not None and received < declared:
        raise DownloadError(f"{url}: the connection closed after {received} of {declared} bytes; run again to resume")


def download(name: str, dest: Path = CACHE, *, base_url: str | None = None, timeout: float = 60.0,
             quiet: bool = False) -> Path:
    """Download checkpoint ``name`` into ``dest`` and verify it; return its path.

    Raises:
        DownloadError: a bad ``timeout`` or ``base_url`` (before anything else), the transfer
            failed or stopped short (the ``.part`` file is kept to resume), or the finished file's
            size or SHA-256 differs (the download is deleted).
    """
    check_timeout(timeout)
    check_base_url(base_url)
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"destination {dest} is a file, not a folder")
    checkpoint = CHECKPOINTS[name]
    target = dest / checkpoint.path
    say = logger.info if quiet else print
    if target.exists():
        if sha256_of(target) == checkpoint.sha256:
            say(f"{name}: already present and verified: {target}")
            return target
        say(f"{name}: {target} exists but its SHA-256 differs from the published one; downloading again")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {target.parent}: {error.strerror or error}") from error
    part = target.with_name(target.name + ".part")
    url = url_for(name, base_url)
    if part.is_symlink():
        raise DownloadError(f"{part} is a symbolic link; a download never writes through one: remove it")
    if part.exists():
        with part.open("rb") as handle:
            web_page = _looks_like_a_web_page(handle.read(256))
        if web_page:
            say(f"{name}: {part} holds a web page, not the checkpoint: starting again")
        if part.stat().st_size > checkpoint.size or web_page:
            part.unlink()
        else:
            say(f"{name}: resuming {part} ({part.stat().st_size} bytes)")
    _fetch(url, part, timeout=timeout, desc=name, size=checkpoint.size)
    received = part.stat().st_size
    if received < checkpoint.size:
        raise DownloadError(f"{name}: {received} of {checkpoint.size} bytes from {url}; run again to resume")
    digest = sha256_of(part)
    if digest != checkpoint.sha256:
        part.unlink()
        raise DownloadError(
            f"{name}: SHA-256 mismatch for {url}: expected {checkpoint.sha256}, got {digest}; the download was deleted"
        )
    os.replace(part, target)
    say(f"{name}: verified {target}")
    return target


def resolve_weights(path: str | os.PathLike[str]) -> Path:
    """The file to load for a weights path: the path itself when it exists, else, for a published
    checkpoint, its copy in the lookup order, else the first-use download into the cache.

    A path that is neither comes back unchanged (the loader then says it is missing).
    """
    path = Path(os.path.expanduser(str(path)))
    if path.exists():
        return path
    name = checkpoint_for_path(path)
    if name is None:
        return path
    found = find_checkpoint(name)
    if found is not None:
        logger.info("%s not found; using the copy of %s at %s", path, name, found)
        return found
    if os.environ.get(OFFLINE_ENV):
        raise DownloadError(f"{path} is missing and downloads are off ({OFFLINE_ENV}): {manual_instructions(name)}")
    logger.warning("%s is missing: downloading the published %s (first use)", path, name)
    try:
        return download(name, CACHE, timeout=20.0, quiet=True)
    except DownloadError as error:
        raise DownloadError(f"{path} is missing and the download failed ({error}); {manual_instructions(name)}") from error
