"""Score models with the NTIRE efficient-SR challenge protocol, next to a baseline: the harness's table.

    lkdn-ntire -opt options/test/LKDN/test_LKDN_x4.yml \\
        --baseline options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml --dataset datasets/DIV2K_LSDIR_valid [--year 2026]

For the baseline and every ``-opt`` model (weights from each YAML's ``path.pretrain_network_g``),
as the challenge harness measures it (:mod:`lkdn.ntire`): RGB PSNR with ``border = scale`` on
the paired set, runtime (CUDA events around the forward, no warm-up, float32, batch 1, whole
images, mean; wall time on the CPU, labelled so), ``max_memory_allocated``, parameters, fvcore
FLOPs, activations and convs on ``3x256x256`` (:func:`lkdn.profiling.ntire_counts`), and the
challenge score of each metric against the baseline, ``exp(2 * team / baseline)``, weighted
0.7/0.15/0.15 (2024, 2025) or 0.8/0.1/0.1 (2026). Models run as the harness runs a submission:
the network as configured, called directly (autograd on, parameters frozen); ``--optimized``
runs them through ``lkdn.Upscaler`` instead (folded, channels_last, inference mode).

``--dataset`` takes the challenge's ``DIV2K_LSDIR_valid`` layout (``DIV2K_LSDIR_valid_HR`` and
``DIV2K_LSDIR_valid_LR/<name>x4.png``) or any paired folder (``HR``/``LR``, ``GTmod4``/``LRbicx4``).
Writes ``results.txt`` (the harness's format), ``results.md`` and ``results.json`` under
``--output``. Exit status: 0, or 2 for bad arguments, options or weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lkdn.commands import NTIRE_YEARS
from lkdn.errors import LkdnError
from lkdn.utils import command, command_parser, parse_command_line, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import torch


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-ntire", __doc__,
        ["lkdn-ntire -opt options/test/LKDN/test_LKDN_x4.yml --baseline options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml --dataset datasets/DIV2K_LSDIR_valid"])
    parser.add_argument("-opt", action="append", default=[], type=Path, help="a model's option YAML (repeat)")
    parser.add_argument("--baseline", required=True, type=Path, help="the baseline's option YAML (e.g. SPAN c28)")
    parser.add_argument("--dataset", required=True, type=Path, help="paired set: DIV2K_LSDIR_valid layout or HR/LR")
    parser.add_argument("--year", type=int, default=2026, choices=NTIRE_YEARS, help="scoring rule (default 2026)")
    parser.add_argument("--device", default=None, help="cuda (the protocol) or cpu (default: cuda when present)")
    parser.add_argument("--optimized", action="store_true", help="run through lkdn.Upscaler instead of the plain network")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images (a quick check)")
    parser.add_argument("--output", type=Path, default=Path("results") / "ntire_esr", help="folder for the tables")
    return parse_command_line(parser, argv)


def model_forward(net: torch.nn.Module, *, scale: int, device: torch.device, optimized: bool) -> Any:
    from lkdn.upscaler import Upscaler

    if optimized:
        return Upscaler(net, scale=scale, device=device)
    net = net.to(device).eval().requires_grad_(False)  # as the harness: eval mode, frozen, autograd on

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(x)

    return forward


def measure(path: Path, *, pairs: list, device: torch.device, optimized: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from lkdn.loading import load_network_from_options
    from lkdn.ntire import run_images
    from lkdn.options import load_options
    from lkdn.profiling import ntire_counts

    opt = load_options(path)
    net = load_network_from_options(opt)
    counts = ntire_counts(net)
    bar = tqdm(total=len(pairs), desc=opt.get("name", path.stem), unit="image", dynamic_ncols=True)

    def progress(_: str) -> None:
        bar.update(1)

    run = run_images(model_forward(net, scale=opt.scale, device=device, optimized=optimized), pairs,
                     device=device, scale=opt.scale, progress=progress)
    bar.close()
    return {"model": str(opt.get("name", path.stem)), "options": str(path), "psnr": run.mean_psnr,
            "runtime_ms": run.mean_runtime_ms, "timer": run.timer, "memory_mb": run.memory_mb, **counts.as_row(),
            "per_image": {"psnr": run.psnr, "runtime_ms": run.runtime_ms}}


def add_scores(rows: list[dict[str, Any]], *, year: int) -> None:
    from lkdn.ntire import challenge_score

    baseline = rows[0]
    reference = {"runtime": baseline["runtime_ms"], "flops": baseline["flops_g"], "params": baseline["params_m"]}
    for row in rows:
        if row["flops_g"] is None or reference["flops"] is None:
            row["score"] = None
            continue
        row["score"] = challenge_score({"runtime": row["runtime_ms"], "flops": row["flops_g"], "params": row["params_m"]},
                                       reference, year=year)


def results_txt(rows: list[dict[str, Any]]) -> str:
    """The harness's ``results.txt`` (tab-separated, its column names and number formats)."""
    fmt = "{:20s}\t{:10s}\t{:14s}\t{:10s}\t{:10s}\t{:8s}\t{:8s}\t{:8s}\n"
    text = fmt.format("Model", "Val PSNR", "Val Time [ms]", "Params [M]", "FLOPs [G]", "Acts [M]", "Mem [M]", "Conv")
    for r in rows:
        memory = "-" if r["memory_mb"] is None else f"{r['memory_mb']:2.2f}"
        flops = "-" if r["flops_g"] is None else f"{r['flops_g']:2.2f}"
        text += fmt.format(r["model"], f"{r['psnr']:2.2f}", f"{r['runtime_ms']:3.2f}", f"{r['params_m']:2.3f}", flops,
                           f"{r['activations_m']:2.2f}", memory, f"{r['convs']:4d}")
    return text


def markdown(rows: list[dict[str, Any]], *, year: int, device: torch.device, dataset: Path, images: int) -> str:
    import torch

    from lkdn.ntire import PSNR_THRESHOLDS

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"NTIRE efficient-SR protocol ({year} scoring, baseline {rows[0]['model']}) on {dataset} ({images} images), "
        f"{name}, runtime by {rows[0]['timer']}.",
        "",
        "| model | PSNR (RGB) | runtime ms | params M | FLOPs G | acts M | memory MB | convs | score runtime | "
        "score FLOPs | score params | final score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = r.get("score") or {}
        cell = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['model']} | {r['psnr']:.2f} | {r['runtime_ms']:.2f} | {r['params_m']:.3f} | {cell(r['flops_g'], '.2f')} | "
            f"{r['activations_m']:.2f} | {cell(r['memory_mb'], '.1f')} | {r['convs']} | {cell(s.get('runtime'), '.2f')} | "
            f"{cell(s.get('flops'), '.2f')} | {cell(s.get('params'), '.2f')} | {cell(s.get('final'), '.2f')} |"
        )
    lines += ["", f"The challenge asks for at least {PSNR_THRESHOLDS['valid']} dB on DIV2K_LSDIR_valid and "
              f"{PSNR_THRESHOLDS['test']} dB on its hidden test set; scores are exp(2 * model / baseline), lower is better."]
    return "\n".join(lines) + "\n"


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-ntire``: 0, or 2 after one ``error: ...`` line (bad options, data or weights; an unwritable --output)."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    from lkdn.ntire import challenge_pairs
    from lkdn.upscaler import resolve_device

    try:
        device = resolve_device(args.device)
        pairs = challenge_pairs(args.dataset)
        if args.max_images is not None:
            if args.max_images < 1:
                raise ValueError(f"--max-images must be positive, got {args.max_images}")
            pairs = pairs[: args.max_images]
        rows = [measure(path, pairs=pairs, device=device, optimized=args.optimized) for path in [args.baseline, *args.opt]]
    except (LkdnError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    add_scores(rows, year=args.year)
    table = markdown(rows, year=args.year, device=device, dataset=args.dataset, images=len(pairs))
    try:
        write_text_atomic(args.output / "results.txt", results_txt(rows))
        write_text_atomic(args.output / "results.md", table)
        write_json_atomic(args.output / "results.json", {"year": args.year, "device": str(device), "rows": rows})
    except OSError as err:
        print(f"error: cannot write under {args.output}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(table)
    print(f"written: {args.output / 'results.txt'}, results.md, results.json")
    return 0

