"""Download the official checkpoints, verified by SHA-256, resumable.

    python scripts/download.py --names LKDN_x4 LKDN-S_x4      # into experiments/pretrained_models
    python scripts/download.py --all
    python scripts/download.py --all --base-url https://my.mirror/pretrained   # same layout as --dest

Files land at ``<dest>/LKDN/<name>.pth``, ``<dest>/RFDN/RFDN_AIM.pth`` and
``<dest>/BSRN/BSRN_x{2,3,4}.pth`` (the paths the option files use). A download goes to
``<file>.part`` first and continues from there when interrupted (HTTP ``Range``); the finished
file must match its published SHA-256, else it is deleted and the script fails. A file already
in place with the right hash is not downloaded again. ``--base-url`` replaces the public homes
with a mirror that serves ``<base-url>/<LKDN|RFDN|BSRN>/<file>``.
Exit status: 0 all verified, 1 a download or verification failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 16
LKDN_URL = "https://github.com/stella-von/LKDN/raw/main/experiments/pretrained_models/LKDN/{}.pth"
RFDN_URL = "https://github.com/njulj/RFDN/raw/master/trained_model/{}.pth"
BSRN_URL = "https://github.com/xiaom233/BSRN/raw/main/experiments/pretrained_models/net_g_{}.pth"


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint: where it is saved (relative to --dest), its public URL, its SHA-256."""

    path: str
    url: str
    sha256: str


CHECKPOINTS: dict[str, Checkpoint] = {
    "LKDN_x2": Checkpoint(
        "LKDN/LKDN_x2.pth", LKDN_URL.format("LKDN_x2"),
        "02b429e795ad0863fdf21c6924c79344e30a39d637c44442d13124193b012e6b",
    ),
    "LKDN_x3": Checkpoint(
        "LKDN/LKDN_x3.pth", LKDN_URL.format("LKDN_x3"),
        "52835d49d402683ea2085c13e4afc3aca49f6b806ea29d6ed29b2238cd7874c5",
    ),
    "LKDN_x4": Checkpoint(
        "LKDN/LKDN_x4.pth", LKDN_URL.format("LKDN_x4"),
        "f534422583c99dad994fd7df897f6f872637218430cfedf6c2d2a072ea86dbd7",
    ),
    "LKDN-S_x4": Checkpoint(
        "LKDN/LKDN-S_x4.pth", LKDN_URL.format("LKDN-S_x4"),
        "39ff2c69cdeb40f842c9f93368caee3323a4309c350373edeb2dc9ef3cc05851",
    ),
    "LKDN-S_del_rep_x4": Checkpoint(
        "LKDN/LKDN-S_del_rep_x4.pth", LKDN_URL.format("LKDN-S_del_rep_x4"),
        "b802a3945d7d4f22f836668a78448b37fe5da90d7b08afc564fbddfa594a8cf1",
    ),
    "RFDN_AIM": Checkpoint(
        "RFDN/RFDN_AIM.pth", RFDN_URL.format("RFDN_AIM"),
        "11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c",
    ),
    "BSRN_x2": Checkpoint(
        "BSRN/BSRN_x2.pth", BSRN_URL.format("BSRN_x2"),
        "09bd1f85e017c7902e65a9c9770ee592efe3d013f6b5cf1fe7de8cabac4ba37d",
    ),
    "BSRN_x3": Checkpoint(
        "BSRN/BSRN_x3.pth", BSRN_URL.format("BSRN_x3"),
        "6eb73a300aaec5029bc0de7f5ae85c02b8dcd8fdaf438c77f90272939fecca7e",
    ),
    "BSRN_x4": Checkpoint(
        "BSRN/BSRN_x4.pth", BSRN_URL.format("BSRN_x4"),
        "47518e0f549f5696da0c84ca2d65bf50d789c7ac20e621909f5fd6c8c8d70bcb",
    ),
}


class DownloadError(RuntimeError):
    """A download failed or its file does not match the published hash; the message says which."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def url_for(name: str, base_url: str | None) -> str:
    """The public URL of ``name``, or ``<base_url>/<path>`` for a mirror."""
    checkpoint = CHECKPOINTS[name]
    return f"{base_url.rstrip('/')}/{checkpoint.path}" if base_url else checkpoint.url


def _fetch(url: str, part: Path, *, timeout: float, desc: str) -> None:
    """Download ``url`` into ``part``, continuing after the bytes already there when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lkdn-download/1"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already complete (or longer than the file)
            return
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from error
    with response:
        mode = "wb"
        if have and response.status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == have:
                mode = "ab"
        if mode == "wb":
            have = 0  # the server ignored the range: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with part.open(mode) as handle, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, dynamic_ncols=True,
        ) as bar:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    bar.update(len(block))
            except OSError as error:  # connection dropped: keep the part file for the next run
                raise DownloadError(f"{url}: interrupted after {part.stat().st_size} bytes ({error}); run again to resume") from error


def download(name: str, dest: Path, *, base_url: str | None = None, timeout: float = 60.0) -> Path:
    """Download checkpoint ``name`` into ``dest`` and verify it; return its path.

    Raises:
        DownloadError: the transfer failed (the ``.part`` file is kept to resume) or the hash
            differs (the downloaded file is deleted).
    """
    checkpoint = CHECKPOINTS[name]
    target = dest / checkpoint.path
    if target.exists():
        if sha256_of(target) == checkpoint.sha256:
            print(f"{name}: already present and verified: {target}")
            return target
        print(f"{name}: {target} exists but its SHA-256 differs from the published one; downloading again")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    url = url_for(name, base_url)
    if part.exists():
        print(f"{name}: resuming {part} ({part.stat().st_size} bytes)")
    _fetch(url, part, timeout=timeout, desc=name)
    digest = sha256_of(part)
    if digest != checkpoint.sha256:
        part.unlink()
        raise DownloadError(
            f"{name}: SHA-256 mismatch for {url}: expected {checkpoint.sha256}, got {digest}; the download was deleted"
        )
    os.replace(part, target)
    print(f"{name}: verified {target}")
    return target


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--names", nargs="+", metavar="NAME", help=f"checkpoints to fetch: {', '.join(CHECKPOINTS)}")
    which.add_argument("--all", action="store_true", help="every checkpoint")
    parser.add_argument(
        "--dest", default=str(ROOT / "experiments" / "pretrained_models"),
        help="destination folder (default: experiments/pretrained_models of this checkout)",
    )
    parser.add_argument("--base-url", default=None, help="mirror serving <base-url>/<LKDN|RFDN|BSRN>/<file>")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(CHECKPOINTS) if args.all else args.names
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        print(f"error: unknown checkpoint name(s) {', '.join(unknown)}; known: {', '.join(CHECKPOINTS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        try:
            download(name, Path(args.dest), base_url=args.base_url, timeout=args.timeout)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
