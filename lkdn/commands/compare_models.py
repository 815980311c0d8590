"""Compare models the way the LKDN paper's table reads: parameters, Multi-Adds, runtime, PSNR/SSIM.

For each option file, runs ``lkdn-test`` (PSNR/SSIM per test set, from its ``metrics.json``)
and ``lkdn-profile --json`` (parameters, Multi-Adds for a 1280x720 output, runtime
for that LR input), then prints and writes one table. Nothing is typed by hand: the numbers are
those of the individual runs.

    lkdn-compare -opt options/test/LKDN/test_LKDN_x4.yml \
        -opt options/test/BSRN/test_BSRN_x4.yml --datasets Set5 \
        [--benchmark-root ../shared/benchmarks] [--weights-root ../shared/pretrained] \
        [--output docs/comparison.md] [--readme README.md]

``--benchmark-root`` reads test sets from the ``<root>/<Set>/x<s>/{HR,LR}`` layout instead of the
YAML's folders (without it, a set whose YAML folder is absent is looked up by name in the
reference lookup order, README "Data and weights"); ``--weights-root`` replaces the ``experiments/pretrained_models`` prefix of the
YAML's weights. ``--readme`` replaces the block between ``<!-- comparison:start -->`` and
``<!-- comparison:end -->`` of that file with the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lkdn.utils import command, command_parser, parse_command_line, replace_between_markers, write_text_atomic
from lkdn.zoo import find_benchmark

WEIGHTS_PREFIX = "experiments/pretrained_models"
README_START, README_END = "<!-- comparison:start -->", "<!-- comparison:end -->"
TABLE_METRICS = ("psnr", "ssim")  # val.metrics names read from metrics.json


def prepare_options(
    path: Path, *, datasets: Sequence[str] | None, benchmark_root: Path | None, weights_root: Path | None
) -> dict[str, Any]:
    """The option file with test sets filtered and folders/weights redirected (a new dict)."""
    from lkdn.options import load_options

    scale = load_options(path).scale  # validated as every entry point validates it
    opt = yaml.safe_load(path.read_text(encoding="utf-8"))
    kept = {}
    for key, dataset in (opt.get("datasets") or {}).items():
        if datasets and dataset.get("name") not in datasets:
            continue
        folder = benchmark_root / dataset["name"] / f"x{scale}" if benchmark_root is not None else None
        if folder is not None and folder.is_dir():
            dataset = dict(dataset, dataroot_gt=str(folder / "HR"), dataroot_lq=str(folder / "LR"), filename_tmpl="{}")
        elif not Path(str(dataset.get("dataroot_gt", ""))).is_dir():
            found = find_benchmark(str(dataset.get("name")), scale)  # the reference lookup order (README)
            if found is not None:
                dataset = dict(dataset, dataroot_gt=str(found[0]), dataroot_lq=str(found[1]), filename_tmpl="{}")
        kept[key] = dataset
    if not kept:
        raise ValueError(f"{path}: no test set named {', '.join(datasets or [])}")
    opt["datasets"] = kept
    weights = str((opt.get("path") or {}).get("pretrain_network_g") or "")
    if weights_root is not None and weights.startswith(WEIGHTS_PREFIX):
        opt["path"]["pretrain_network_g"] = str(weights_root / weights[len(WEIGHTS_PREFIX) + 1 :])
    opt.setdefault("val", {})["save_img"] = False
    return opt


def check_metrics(path: Path, opt: dict[str, Any]) -> None:
    """The table reads ``psnr`` and ``ssim`` of ``metrics.json``: ``val.metrics`` must name both."""
    metrics = (opt.get("val") or {}).get("metrics") or {}
    missing = [name for name in TABLE_METRICS if name not in metrics]
    if missing:
        raise ValueError(f"{path}: val.metrics has no {' and no '.join(missing)} (has: {', '.join(metrics) or 'none'}); "
                         f"the comparison table needs {' and '.join(TABLE_METRICS)}: add them as in "
                         "options/test/LKDN/test_LKDN_x4.yml")


def check_arguments(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every argument and option file, before any work; the prepared options, one per file.

    Raises:
        ValueError: the first argument or option at fault, named.
    """
    from lkdn.profiling import lr_size_for_output, parse_size
    from lkdn.upscaler import resolve_device

    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    parse_size(args.output_size)
    if args.device is not None:
        resolve_device(args.device)
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8") if args.readme.is_file() else None
        if text is None or README_START not in text or README_END not in text:
            raise ValueError(f"--readme {args.readme}: no {README_START} ... {README_END} block to replace")
    prepared = []
    for path in args.opt:
        if not path.is_file():
            raise ValueError(f"-opt {path}: no such option file")
        opt = prepare_options(path, datasets=args.datasets, benchmark_root=args.benchmark_root,
                              weights_root=args.weights_root)
        check_metrics(path, opt)
        lr_size_for_output(parse_size(args.output_size), int(opt["scale"]))
        prepared.append(opt)
    names = [opt["name"] for opt in prepared]
    if len(set(names)) != len(names):
        raise ValueError(f"two option files share a name ({', '.join(names)}): their results would overwrite each other")
    return prepared


def run_json(args: Sequence[str]) -> Any:
    """The output of the command ``args`` (``["lkdn-test", "-opt", ...]``), run in a process of its own."""
    proc = subprocess.run([sys.executable, "-m", "lkdn.commands", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def compare(
    option_files: Sequence[Path], *, workdir: Path, datasets: Sequence[str] | None = None,
    benchmark_root: Path | None = None, weights_root: Path | None = None, output_size: str = "1280x720",
    runs: int = 3, device: str | None = None, prepared: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per option file: name, profile (as configured) and metrics per test set.

    ``prepared``: the options of :func:`check_arguments`, one per file (else prepared here).
    """
    rows = []
    for index, path in enumerate(option_files):
        if prepared is not None:
            opt = prepared[index]
        else:
            opt = prepare_options(path, datasets=datasets, benchmark_root=benchmark_root, weights_root=weights_root)
            check_metrics(path, opt)
        tmp_opt = workdir / f"{opt['name']}.yml"
        tmp_opt.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
        test_args = ["lkdn-test", "-opt", str(tmp_opt), "--root", str(workdir)]
        run_json(test_args + (["--device", device] if device else []))
        metrics = json.loads((workdir / "results" / opt["name"] / "metrics.json").read_text())
        profile_args = ["lkdn-profile", "-opt", str(tmp_opt), "--json",
                        "--output-size", output_size, "--runs", str(runs), "--no-flops"]
        profile = json.loads(run_json(profile_args + (["--device", device] if device else [])))
        configured = profile["profiles"][0]
        # the runtime of what lkdn.Upscaler runs (deploy form + optimize_network), else of the network as configured
        upscaler = next((p for p in profile["profiles"] if p["form"] == "deploy + optimize_network"), configured)
        rows.append({
            "name": opt["name"], "options": str(path), "params": configured["params"],
            "multi_adds_g": configured["multi_adds_g"], "runtime_ms": upscaler["runtime_ms"],
            "eager_runtime_ms": configured["runtime_ms"],
            "device": profile["device"], "threads": profile.get("threads"), "lr_size": profile.get("lr_size"),
            "metrics": {name: {"psnr": m["psnr"], "ssim": m["ssim"]} for name, m in metrics.items()},
        })
    return rows


def markdown(rows: Sequence[dict[str, Any]], *, output_size: str) -> str:
    """The comparison table in Markdown (datasets in the order they first appear)."""
    sets: list[str] = []
    for row in rows:
        sets += [name for name in row["metrics"] if name not in sets]
    device = rows[0]["device"] if rows else "cpu"
    head = ["model", "params", f"Multi-Adds (G, {output_size} output)", f"{device} ms / image (Upscaler)", *sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["name"], f"{row['params']:,}", f"{row['multi_adds_g']:.2f}",
                 f"{row['runtime_ms']:.0f}" if row["runtime_ms"] is not None else "-"]
        for name in sets:
            m = row["metrics"].get(name)
            cells.append(f"{m['psnr']:.2f} / {m['ssim']:.4f}" if m else "-")
        lines.append("| " + " | ".join(cells) + " |")
    threads = rows[0].get("threads") if rows else None
    note = (f"\nPSNR/SSIM: Y channel, crop border = scale. Runtime: median forward pass of `lkdn.Upscaler` (deploy form, optimized) for a {output_size} output on "
            f"{device}" + (f" with {threads} threads" if threads else "") + " (measured on the machine that ran the command).")
    return "\n".join(lines) + "\n" + note + "\n"


def replace_block(readme: Path, table: str) -> None:
    """Put ``table`` between the comparison markers of ``readme`` (a ``ValueError`` without them)."""
    replace_between_markers(readme, "comparison", table)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-compare``: 0, or 2 after one ``error: ...`` line (bad arguments, or a run that failed)."""
    parser = command_parser(
        "lkdn-compare", __doc__,
        ["lkdn-compare -opt options/test/LKDN/test_LKDN_x4.yml -opt options/test/BSRN/test_BSRN_x4.yml --datasets Set5 --output docs/comparison.md"])
    parser.add_argument("-opt", action="append", type=Path, required=True, help="test option file (repeat)")
    parser.add_argument("--datasets", nargs="+", help="only these test sets (by name), e.g. Set5")
    parser.add_argument("--benchmark-root", type=Path, help="test sets in <root>/<Set>/x<s>/{HR,LR}")
    parser.add_argument("--weights-root", type=Path, help="replaces the experiments/pretrained_models prefix")
    parser.add_argument("--output-size", default="1280x720", help="output size for Multi-Adds and runtime")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per model (median)")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--workdir", type=Path, help="where results/ go (default: a temporary folder)")
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--readme", type=Path, help="replace the comparison block of this file")
    args = parse_command_line(parser, argv)  # parsed before torch is imported, so --help is fast
    try:
        prepared = check_arguments(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            rows = compare(args.opt, workdir=workdir, datasets=args.datasets, benchmark_root=args.benchmark_root,
                           weights_root=args.weights_root, output_size=args.output_size, runs=args.runs,
                           device=args.device, prepared=prepared)
        except (RuntimeError, ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    table = markdown(rows, output_size=args.output_size)
    print(table)
    if args.output:
        write_text_atomic(args.output, table)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    if args.readme:
        replace_block(args.readme, table)
    return 0

