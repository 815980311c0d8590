"""Plot training curves of one or several experiments (e.g. Adam vs Adan) into one PNG.

Reads ``experiments/<name>/train_log.jsonl`` (losses per logged iteration) and
``metrics.jsonl`` (validation metrics), both written by ``lkdn/train.py``.

    lkdn-plot-curves experiments/A experiments/B --output curves.png \
        [--metric psnr] [--dataset Set5] [--smooth 5] [--reference bicubic=29.38]

``--reference LABEL=VALUE`` draws a horizontal line on the validation panel (a baseline such as
bicubic's PSNR on the validation images), so the curve's gain reads from the plot.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lkdn.utils import command, command_parser, parse_command_line, refuse_overwriting_inputs

NON_LOSS_KEYS = {"iter", "epoch", "lr", "time", "data_time", "eta"}


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a line cut by a crash is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (no smoothing for window <= 1)."""
    if window <= 1:
        return values
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(
    experiments: Sequence[Path], output: Path, *, metric: str = "psnr", dataset: str | None = None, window: int = 1,
    references: dict[str, float] | None = None,
) -> Path:
    """Write a two-panel PNG: training losses (left) and a validation metric (right), with ``references``
    (label -> value) as horizontal lines on the right.

    A ``window`` below 0, or a ``metric`` that the validation logs do not hold while they hold
    others, is a ValueError (naming the metrics they hold).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"--smooth: expected a moving-average window of 0 or more points (0 and 1: none), got {window!r}")
    logged = {k for exp in experiments for r in read_jsonl(exp / "metrics.jsonl") for k, v in r.items()
              if k not in NON_LOSS_KEYS and isinstance(v, int | float) and not isinstance(v, bool)}
    if logged and metric not in logged:
        raise ValueError(f"--metric {metric!r}: not in the validation logs (metrics.jsonl) of "
                         f"{', '.join(str(e) for e in experiments)}; they hold {', '.join(sorted(logged))}")
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    found_loss = found_val = False
    for exp in experiments:
        label = exp.name
        train = read_jsonl(exp / "train_log.jsonl")
        loss_keys = sorted({k for r in train for k in r if k not in NON_LOSS_KEYS and isinstance(r[k], (int, float))})
        for key in loss_keys:
            points = [(r["iter"], r[key]) for r in train if key in r]
            if points:
                found_loss = True
                xs, ys = zip(*points, strict=True)
                ax_loss.plot(xs, smooth(list(ys), window), label=f"{label}: {key}")
        val = [r for r in read_jsonl(exp / "metrics.jsonl") if metric in r and (dataset is None or r.get("dataset") == dataset)]
        for name in sorted({r.get("dataset", "val") for r in val}):
            points = [(r["iter"], r[metric]) for r in val if r.get("dataset", "val") == name]
            found_val = True
            xs, ys = zip(*points, strict=True)
            ax_val.plot(xs, ys, marker="o", markersize=3, label=f"{label}: {name}")
    if not found_loss and not found_val:
        raise FileNotFoundError(
            "no training records in " + ", ".join(str(e) for e in experiments) + " (expected train_log.jsonl / metrics.jsonl)"
        )
    ax_loss.set(title="training loss", xlabel="iteration", ylabel="loss")
    if found_loss:
        ax_loss.set_yscale("log")
        ax_loss.legend(fontsize=8)
    for (label, value), style in zip((references or {}).items(), ("--", ":", "-.", "--"), strict=False):
        ax_val.axhline(value, color="grey", linestyle=style, linewidth=1.2, label=f"{label}: {value:.2f}")
    unit = " (dB)" if metric.lower() == "psnr" else ""
    ax_val.set(title=f"validation {metric.upper()}", xlabel="iteration", ylabel=f"{metric.upper()}{unit}")
    ax_val.ticklabel_format(axis="y", useOffset=False)  # plain values on the axis, not offsets from one
    if found_val or references:
        ax_val.legend(fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-plot-curves``: 0, or 2 after one ``error: ...`` line (a missing log, a bad --reference)."""
    parser = command_parser(
        "lkdn-plot-curves", __doc__,
        ["lkdn-plot-curves experiments/A experiments/B --output curves.png --metric psnr --smooth 5 --reference bicubic=29.38"])
    parser.add_argument("experiments", nargs="+", type=Path, help="experiment folders (experiments/<name>)")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--metric", default="psnr", help="validation metric to plot (default psnr)")
    parser.add_argument("--dataset", help="only this validation dataset")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window for losses")
    parser.add_argument("--reference", nargs="+", default=[], metavar="LABEL=VALUE",
                        help="horizontal lines on the validation panel, e.g. bicubic=29.38")
    args = parse_command_line(parser, argv)  # parsed before matplotlib is imported, so --help is fast
    try:
        references = {}
        for entry in args.reference:
            label, sep, value = entry.partition("=")
            if not sep or not label:
                raise ValueError(f"--reference {entry!r}: expected LABEL=VALUE")
            try:
                references[label] = float(value)
            except ValueError as err:
                raise ValueError(f"--reference {entry!r}: {value!r} is not a number") from err
        refuse_overwriting_inputs({"--output": args.output}, [
            (f"log {name} of an experiment", exp / name) for exp in args.experiments
            for name in ("train_log.jsonl", "metrics.jsonl")
        ])
        out = plot_curves(args.experiments, args.output, metric=args.metric, dataset=args.dataset, window=args.smooth,
                          references=references)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0

