"""Download the official checkpoints, verified by SHA-256, resumable.

    lkdn-download --names LKDN_x4 LKDN-S_x4      # into experiments/pretrained_models
    lkdn-download --all
    lkdn-download --all --base-url https://my.mirror/pretrained   # same layout as --dest

    lkdn-download --list                        # names, sources, local copies

Files land at ``<dest>/LKDN/<name>.pth``, ``<dest>/RFDN/RFDN_AIM.pth``,
``<dest>/BSRN/BSRN_x{2,3,4}.pth`` and ``<dest>/SPAN/SPAN_NTIRE_ESR_c28_x4.pth`` (the paths the
option files use). A download goes to ``<file>.part`` first and continues from there when
interrupted (HTTP ``Range``); a transfer that stops short keeps the part file, one that grows
past the published size is stopped, and the finished file must match its published size and
SHA-256, else it is deleted and the script fails. A reply that is a web page (a captive portal's
login page: HTML content type, or a body starting with ``<``) or announces another size is
reported and nothing of it is kept. A transfer stops (resumable) when no data comes for
``--timeout`` seconds, when the reply's headers are not complete after twice ``--timeout``, or
when it averages less than 1 KiB/s over ``--timeout`` seconds. The part
file is never written through a symbolic link. A file already in place with the right hash is
not downloaded again. ``--base-url`` replaces the public homes with a mirror that serves
``<base-url>/<Family>/<file>``. Without a network, copy the file by hand to the
path the error names (``--list`` shows the sources). The table of names, sources and hashes is
:data:`lkdn.zoo.CHECKPOINTS`.
Exit status: 0 all verified, 1 a download or verification failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lkdn.utils import command, command_parser, parse_command_line
from lkdn.zoo import (
    CACHE,
    CHECKPOINTS,
    DownloadError,
    check_base_url,
    check_timeout,
    download,
    find_checkpoint,
    manual_instructions,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-download", __doc__.splitlines()[0],
        ["lkdn-download --names LKDN_x4 LKDN-S_x4",
         "lkdn-download --list"])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--names", nargs="+", metavar="NAME", help=f"checkpoints to fetch: {', '.join(CHECKPOINTS)}")
    which.add_argument("--all", action="store_true", help="every checkpoint")
    which.add_argument("--list", action="store_true", help="list the checkpoints, their sources and local copies")
    parser.add_argument("--dest", default=str(CACHE),
                        help="destination folder (default: experiments/pretrained_models of this checkout)")
    parser.add_argument("--base-url", default=None, help="mirror serving <base-url>/<Family>/<file>")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without data before giving up; also the window over which a transfer must "
                             "average 1 KiB/s (default 60)")
    return parse_command_line(parser, argv)


def list_checkpoints(dest: Path = CACHE) -> None:
    """Each checkpoint, its source, and its local copy or where a download puts it."""
    for name, checkpoint in CHECKPOINTS.items():
        local = find_checkpoint(name)
        where = f"here: {local}" if local else f"not here; --names {name} downloads it to {dest / checkpoint.path}"
        print(f"{name:22s} {checkpoint.size:>9,d} B  {checkpoint.url}\n{'':22s} {where}")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-download``: 0 when every checkpoint is verified, 1 when one failed, 2 for bad arguments."""
    args = parse_args(argv)
    if args.list:
        list_checkpoints(Path(args.dest))
        return 0
    try:
        check_timeout(args.timeout, what="--timeout")
        check_base_url(args.base_url, what="--base-url")
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        print(f"error: --dest {dest} is a file; give a folder", file=sys.stderr)
        return 2
    names = list(CHECKPOINTS) if args.all else args.names
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        print(f"error: unknown checkpoint name(s) {', '.join(unknown)}; known: {', '.join(CHECKPOINTS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        try:
            download(name, dest, base_url=args.base_url, timeout=args.timeout)
        except DownloadError as error:
            print(f"error: {error}\n  by hand: {manual_instructions(name, dest)}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
