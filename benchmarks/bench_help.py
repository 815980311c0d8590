"""How fast every command answers ``--help``: each command in a process of its own, as a user runs it.

Every ``lkdn-*`` command of :data:`lkdn.commands.COMMANDS` is started with ``--help`` (the installed console
script beside this Python, else ``python -m lkdn.commands <command>``), ``ROUNDS`` times; the commands are
interleaved and the order rotates every round, so load changes on the machine hit them alike. Reported: the
median and the min-max wall time from start to exit, beside the same for ``python -c pass`` (the
interpreter's own start) and ``python -c "import torch"`` (what a command would cost that imported torch
first). The goal: every command under 1 s by median. Standalone: ``python benchmarks/bench_help.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lkdn.commands import COMMANDS

ROUNDS = 7
GOAL_S = 1.0


def command_line(command: str) -> list[str]:
    """How ``command --help`` is started: its console script beside this Python, else through ``-m lkdn.commands``."""
    script = Path(sys.executable).parent / command
    return [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "lkdn.commands", command, "--help"]


def candidates() -> dict[str, list[str]]:
    return {"python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            **{command: command_line(command) for command in COMMANDS}}


def seconds(argv: list[str]) -> float:
    """Wall time of one run of ``argv`` (output discarded); a failed run is an error naming it."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with status {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds per run of each candidate, interleaved, the order rotated every round, after one untimed round."""
    runs = candidates()
    names = list(runs)
    for name in names:  # warm the file cache: the first start reads every file from disk
        seconds(runs[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(seconds(runs[name]))
    return times


def machine() -> str:
    from machine_facts import cpu_model_and_flags  # benchmarks/ (on the path when run from run.py or standalone)

    cpu, _ = cpu_model_and_flags()
    import torch

    return f"CPU: {cpu} ({os.cpu_count()} logical cores), Python {platform.python_version()}, torch {torch.__version__}"


def run(ctx: dict) -> str:
    rounds = int(ctx.get("help_rounds", ROUNDS))
    load_before = os.getloadavg()[0]
    times = measure(rounds)
    load_after = os.getloadavg()[0]
    slow = [name for name in COMMANDS if statistics.median(times[name]) >= GOAL_S]
    load = f"Load average (1 minute) {load_before:.1f} before the run and {load_after:.1f} after, on {os.cpu_count()} logical cores."
    lines = [
        "## Command start-up: `--help` of every command",
        "",
        load if "machine" in ctx else f"Run on {time.strftime('%Y-%m-%d')}: {machine()}. {load}",  # run.py says the machine
        "",
        f"Each command's `--help` in a process of its own (its console script), {rounds} rounds after one untimed "
        "round, commands interleaved and the order rotated every round; wall time from start to exit. "
        "`python -c pass` is the interpreter's own start, `python -c \"import torch\"` what a command that "
        f"imported torch before reading its command line would cost at least. Goal: every command under {GOAL_S:.0f} s "
        "by median.",
        "",
        "| command | median s | min-max s |",
        "| --- | ---: | ---: |",
    ]
    for name, values in times.items():
        lines.append(f"| `{name}` | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |")
    worst = max(COMMANDS, key=lambda name: statistics.median(times[name]))
    lines += ["", f"* Slowest command: `{worst}`, {statistics.median(times[worst]):.3f} s by median; "
              + (f"goal {GOAL_S:.0f} s reached by every command." if not slow else
                 f"goal {GOAL_S:.0f} s not reached by {', '.join(f'`{n}`' for n in slow)}.")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed rounds (default {ROUNDS})")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    print(run({"help_rounds": args.rounds}))


if __name__ == "__main__":
    main()
