"""The efficient-SR leaderboard in one command: every x4 network of the zoo, one machine, one protocol.

    lkdn-leaderboard [--output results/leaderboard] [--lr-size 320x180] [--runs 10] \\
        [--baseline options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml] [--year 2026] [--device cpu|cuda] \\
        [-opt FILE ...] [--benchmark-root DIR] [--force] [--readme README.md] [--zoo docs/model_zoo.md]

For each network (the zoo of :data:`lkdn.leaderboard.ZOO`, or the ``-opt`` files): parameters,
FLOPs, activations and convolutions as the NTIRE harness counts them, peak memory and runtime of
``lkdn.Upscaler(optimize=True)`` at one LR size (median and spread), PSNR/SSIM by ``lkdn/test.py``
on every benchmark set found (Set5 required; Set14, B100, Urban100, Manga109 where present; in
the reference lookup order, or under ``--benchmark-root`` as ``<Set>/x<s>/{HR,LR}``), and the NTIRE
score against ``--baseline`` (:mod:`lkdn.leaderboard`).

Writes under ``--output``: ``results.md``, ``results.json``, ``psnr_vs_cost.png`` (Set5 PSNR against
parameters, FLOPs and runtime, one labelled point per network) and ``entries/<name>.json``, one
cache file per network keyed by the hashes of its option file, its weights and the settings: a
second run measures only what changed (an interrupted run continues); ``--force`` measures all
again. ``--readme`` / ``--zoo`` put the table between ``<!-- leaderboard:start -->`` and
``<!-- leaderboard:end -->`` of those files. Networks whose option file or weights are missing are
listed as not measured, with the reason. Exit status: 0, or 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lkdn.commands import NTIRE_YEARS
from lkdn.utils import (
    command,
    command_parser,
    parse_command_line,
    replace_between_markers,
    write_json_atomic,
    write_text_atomic,
)

if TYPE_CHECKING:
    from lkdn.leaderboard import Entry

#: the NTIRE score's baseline, as :data:`lkdn.leaderboard.DEFAULT_BASELINE` (a test checks they agree)
DEFAULT_BASELINE = Path("options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml")
FIGURE = "psnr_vs_cost.png"
MARKER = "leaderboard"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-leaderboard", __doc__,
        ["lkdn-leaderboard --output results/leaderboard --lr-size 320x180 --runs 10",
         "lkdn-leaderboard -opt options/test/LKDN/test_LKDN_x4.yml --device cpu --readme README.md"])
    parser.add_argument("-opt", action="append", default=[], type=Path,
                        help="a network's test option file (repeat); default: the x4 zoo")
    parser.add_argument("--output", type=Path, default=Path("results") / "leaderboard", help="folder for the results")
    parser.add_argument("--lr-size", default="320x180", help="LR input WIDTHxHEIGHT for runtime and memory")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per network (median and spread)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="the NTIRE score's baseline option file")
    parser.add_argument("--year", type=int, default=2026, choices=NTIRE_YEARS, help="NTIRE scoring rule")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--benchmark-root", type=Path, help="benchmark sets in <root>/<Set>/x<s>/{HR,LR}")
    parser.add_argument("--force", action="store_true", help="measure every network again (ignore the cache)")
    parser.add_argument("--readme", type=Path, help="replace the leaderboard block of this file (README.md)")
    parser.add_argument("--zoo", type=Path, help="replace the leaderboard block of this file (docs/model_zoo.md)")
    return parse_command_line(parser, argv)


def entries_of(paths: Sequence[Path], baseline: Path) -> list[Entry]:
    """The ``-opt`` files as entries (a zoo file as in the zoo, others labelled by their ``name``), or the zoo;
    the baseline is always one of them."""
    from lkdn.leaderboard import ZOO, Entry
    from lkdn.options import OptionsError, load_options

    if not paths:
        entries = list(ZOO)
    else:
        entries = []
        zoo = {os.path.normpath(e.options): e for e in ZOO}
        for path in paths:
            if os.path.normpath(path) in zoo:
                entries.append(zoo[os.path.normpath(path)])
                continue
            try:
                label = str(load_options(path).get("name", path.stem)) if path.is_file() else path.stem
            except (OptionsError, ValueError):
                label = path.stem  # measure_entry reports what is wrong with it
            entries.append(Entry(label, path))
    if all(os.path.normpath(e.options) != os.path.normpath(baseline) for e in entries):
        known = [e for e in ZOO if os.path.normpath(e.options) == os.path.normpath(baseline)]
        entries.insert(0, known[0] if known else Entry(baseline.stem, baseline, "baseline"))
    return entries


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-leaderboard``: 0, or 2 after one ``error: ...`` line for bad arguments or an unwritable --output."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    import torch
    from tqdm import tqdm

    from lkdn.leaderboard import Settings, add_scores, markdown, plot, run_leaderboard
    from lkdn.profiling import parse_size
    from lkdn.upscaler import resolve_device

    try:
        lr_size = parse_size(args.lr_size)
        if args.runs < 1 or args.warmup < 0:
            raise ValueError(f"--runs must be at least 1 and --warmup at least 0, got {args.runs} and {args.warmup}")
        device = resolve_device(args.device)
        for path, flag in ((args.readme, "--readme"), (args.zoo, "--zoo")):
            if path is not None and f"<!-- {MARKER}:start -->" not in (path.read_text(encoding="utf-8")
                                                                      if path.is_file() else ""):
                raise ValueError(f"{flag} {path}: no <!-- {MARKER}:start --> ... <!-- {MARKER}:end --> block to replace")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = Settings(lr_size=lr_size, runs=args.runs, warmup=args.warmup, device=str(device),
                        benchmark_root=args.benchmark_root)
    entries = entries_of(args.opt, args.baseline)
    rows, skipped = run_leaderboard(
        entries, settings=settings, output=args.output, force=args.force,
        progress=lambda items: tqdm(items, desc="leaderboard", unit="network", dynamic_ncols=True),
    )
    baseline = add_scores(rows, baseline=args.baseline, year=args.year)
    points = plot(rows, args.output / FIGURE, settings=settings) if rows else {}
    table = markdown(rows, skipped, settings=settings, baseline=baseline, year=args.year,
                     figure=FIGURE if rows else None)
    block = markdown(rows, skipped, settings=settings, baseline=baseline, year=args.year)  # the figure is linked by hand
    report = {"settings": {**settings.key(), "benchmark_root": str(args.benchmark_root or "")}, "year": args.year,
              "baseline": str(args.baseline), "device": str(device), "rows": rows, "skipped": skipped,
              "figure": {"file": FIGURE, "points": points}}
    try:
        write_text_atomic(args.output / "results.md", table)
        write_json_atomic(args.output / "results.json", report)
        for path in (args.readme, args.zoo):
            if path is not None:
                replace_between_markers(path, MARKER, block)
    except OSError as err:
        print(f"error: cannot write under {args.output}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(table)
    print(f"written: {args.output / 'results.md'}, results.json, {FIGURE} ({len(rows)} measured, {len(skipped)} "
          f"not measured; {torch.get_num_threads()} torch threads)")
    return 0

