"""The efficient-SR leaderboard: every zoo network measured on one machine under one protocol.

For each entry (a test option file and the weights it names), :func:`measure_entry` takes:

* **counts** of the form that runs (re-parameterizable branches folded, as a challenge submission
  is): parameters, fvcore FLOPs, activations and convolutions on one ``3x256x256`` LR input, as
  the NTIRE harness counts them (:func:`lkdn.profiling.ntire_counts`);
* **runtime** of ``lkdn.Upscaler(optimize=True)`` at a fixed LR size (default 320x180): median
  and spread of repeated runs after warm-up (:func:`lkdn.profiling.measure_runtime`; CUDA events
  on a GPU, wall time on the CPU, labelled), and **peak memory** of one forward
  (:func:`lkdn.profiling.peak_memory`);
* **PSNR/SSIM** (Y channel, ``crop_border = scale``) on every benchmark set found in the lookup
  order (Set5 required; Set14, B100, Urban100, Manga109 where present), by ``lkdn/test.py``'s own
  :func:`lkdn.test.test_pipeline` on a copy of the option file whose datasets point at them;

and :func:`add_scores` adds the NTIRE score of each against a baseline
(:func:`lkdn.ntire.challenge_score`: runtime, FLOPs and parameters, ``exp(2 * entry / baseline)``).

Each measured entry is cached as ``<output>/entries/<option file stem>.json``, keyed by the
SHA-256 of the option file, of the weights, the measurement settings and the benchmark folders
found (a set that appears is measured): a second run reuses
it (an interrupted run continues), ``force`` measures again. An entry whose option file or weights
are missing, or that cannot be built, is listed as skipped with the reason.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lkdn.commands.test import test_pipeline  # the same scoring as lkdn-test (python lkdn/test.py)
from lkdn.errors import LkdnError
from lkdn.evaluate import protocol_metrics
from lkdn.loading import load_network_from_options, weights_file
from lkdn.ntire import challenge_score
from lkdn.options import load_options, parse_options
from lkdn.profiling import measure_runtime, ntire_counts, peak_memory
from lkdn.reparam import reparameterize_model
from lkdn.upscaler import Upscaler
from lkdn.utils import write_json_atomic
from lkdn.zoo import ROOT, find_benchmark, sha256_of

#: The benchmark sets, in the order of the tables; Set5 is required, the others are used where present.
BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
REQUIRED_BENCHMARK = "Set5"
DEFAULT_LR_SIZE = (180, 320)  # height, width: a 1280x720 output at x4
DEFAULT_BASELINE = Path("options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml")


@dataclass(frozen=True)
class Entry:
    """One network of the leaderboard: a short label and its test option file (relative to the checkout)."""

    label: str
    options: Path
    source: str = ""


#: The x4 zoo, oldest first: the published networks and the NTIRE efficient-SR winners and baselines.
#: (LKDN-S's deploy-form options, test_LKDN-S_del_rep_x4.yml, run the same network as test_LKDN-S_x4.yml once folded.)
ZOO: tuple[Entry, ...] = (
    Entry("IMDN", Path("options/test/IMDN/test_IMDN_x4.yml"), "ACM MM 2019"),
    Entry("IMDN (NTIRE 2022)", Path("options/test/IMDN/test_IMDN_NTIRE2022.yml"), "NTIRE 2022"),
    Entry("E-RFDN", Path("options/test/RFDN/test_E-RFDN_x4.yml"), "AIM 2020"),
    Entry("RLFN", Path("options/test/RLFN/test_RLFN_NTIRE2022.yml"), "NTIRE 2022"),
    Entry("BSRN", Path("options/test/BSRN/test_BSRN_x4.yml"), "NTIRE 2022"),
    Entry("LKDN", Path("options/test/LKDN/test_LKDN_x4.yml"), "NTIRE 2023"),
    Entry("LKDN-S", Path("options/test/LKDN/test_LKDN-S_x4.yml"), "NTIRE 2023"),
    Entry("SPAN c28", Path("options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml"), "NTIRE 2025/2026 baseline"),
    Entry("EFDN", Path("options/test/EFDN/test_EFDN_NTIRE2025.yml"), "NTIRE 2025 baseline"),
    Entry("DSCLoRA", Path("options/test/DSCLoRA/test_DSCLoRA_NTIRE2025.yml"), "NTIRE 2025"),
    Entry("SPANF", Path("options/test/SPANF/test_SPANF_NTIRE2025.yml"), "NTIRE 2025"),
    Entry("SPANV2", Path("options/test/SPANV2/test_SPANV2_NTIRE2026.yml"), "NTIRE 2026"),
    Entry("PDS", Path("options/test/PDS/test_PDS_NTIRE2026.yml"), "NTIRE 2026"),
    Entry("PKDSR", Path("options/test/PKDSR/test_PKDSR_NTIRE2026.yml"), "NTIRE 2026"),
    Entry("DISP", Path("options/test/DISP/test_DISP_NTIRE2026.yml"), "NTIRE 2026"),
    Entry("DSCF fused", Path("options/test/DSCF/test_DSCF_Fused_NTIRE2026.yml"), "NTIRE 2026"),
)


class EntrySkippedError(LkdnError, Exception):
    """An entry that cannot be measured; the message is the reason shown in the table."""


@dataclass(frozen=True)
class Settings:
    """What every entry is measured with (part of each entry's cache key)."""

    lr_size: tuple[int, int] = DEFAULT_LR_SIZE
    runs: int = 10
    warmup: int = 2
    device: str = "cpu"
    benchmark_root: Path | None = None

    def key(self) -> dict[str, Any]:
        return {"lr_size": list(self.lr_size), "runs": self.runs, "warmup": self.warmup, "device": self.device,
                "threads": torch.get_num_threads(), "torch": torch.__version__}


def resolve(path: Path) -> Path:
    """An option file path as given, else relative to the checkout."""
    return path if path.is_absolute() or path.exists() else ROOT / path


def benchmark_sets(scale: int, benchmark_root: Path | None = None) -> dict[str, tuple[Path, Path]]:
    """``name -> (HR folder, LR folder)`` of the benchmark sets found, in :data:`BENCHMARKS` order.

    With ``benchmark_root``, only ``<root>/<Set>/x<scale>/{HR,LR}``; otherwise the reference lookup
    order (README "Data and weights"). A ``FileNotFoundError`` when Set5 is not found.
    """
    found = {}
    for name in BENCHMARKS:
        if benchmark_root is not None:
            folder = benchmark_root / name / f"x{scale}"
            pair = (folder / "HR", folder / "LR") if (folder / "HR").is_dir() and (folder / "LR").is_dir() else None
        else:
            pair = find_benchmark(name, scale)
        if pair is not None:
            found[name] = pair
    if REQUIRED_BENCHMARK not in found:
        where = f"{benchmark_root}/{REQUIRED_BENCHMARK}/x{scale}/{{HR,LR}}" if benchmark_root is not None else (
            f"$LKDN_SHARED/benchmarks, datasets/ or ../shared/benchmarks ({REQUIRED_BENCHMARK}/x{scale}/{{HR,LR}})")
        raise FileNotFoundError(f"{REQUIRED_BENCHMARK} x{scale} not found in {where}; see datasets/README.md")
    return found


def test_options(source: Path, *, weights: Path, sets: dict[str, tuple[Path, Path]], name: str) -> dict[str, Any]:
    """The option file ``source`` with its datasets replaced by ``sets``, the resolved ``weights`` and the protocol's metrics."""
    opt = yaml.safe_load(source.read_text(encoding="utf-8"))
    scale = int(opt["scale"])
    opt["name"] = name
    opt["datasets"] = {
        f"test_{i}": {"name": set_name, "type": "PairedImageDataset", "dataroot_gt": str(hr), "dataroot_lq": str(lr),
                      "filename_tmpl": "{}", "io_backend": {"type": "disk"}}
        for i, (set_name, (hr, lr)) in enumerate(sets.items(), start=1)
    }
    opt["path"] = {**(opt.get("path") or {}), "pretrain_network_g": str(weights)}
    opt["val"] = {"save_img": False, "self_ensemble": False, "tile": None, "metrics": protocol_metrics(scale)}
    return opt


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runtime_summary(times_ms: Sequence[float], device: torch.device) -> dict[str, Any]:
    """Median, quartiles, min and max of the timed runs, and how they were timed."""
    q1, _, q3 = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else (times_ms[0],) * 3
    return {"median_ms": statistics.median(times_ms), "q1_ms": q1, "q3_ms": q3, "min_ms": min(times_ms),
            "max_ms": max(times_ms), "runs": len(times_ms),
            "timer": "CUDA events" if device.type == "cuda" else "wall time (CPU)"}


def measure(source: Path, weights: Path, *, settings: Settings, workdir: Path, name: str,
            sets: dict[str, tuple[Path, Path]]) -> dict[str, Any]:
    """Counts, runtime, peak memory and PSNR/SSIM on ``sets`` of one option file (see the module docstring)."""
    device = torch.device(settings.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # how busy the machine was
    opt = load_options(source)
    net = load_network_from_options(opt, weights=weights)
    deploy = reparameterize_model(net)
    counts = ntire_counts(deploy)
    upscaler = Upscaler(net, scale=opt.scale, device=device, optimize=True)
    height, width = settings.lr_size
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    timing = measure_runtime(upscaler, x, runs=settings.runs, warmup=settings.warmup, keep_times=True)
    memory = peak_memory(upscaler, x)
    test_yml = workdir / f"{name}.yml"
    test_yml.parent.mkdir(parents=True, exist_ok=True)
    test_yml.write_text(yaml.safe_dump(test_options(source, weights=weights, sets=sets, name=name), sort_keys=False),
                        encoding="utf-8")
    results = test_pipeline(parse_options(test_yml, is_train=False, root_path=workdir), device=device)
    return {
        "network": opt.network_g.get("type"), "scale": opt.scale, "params": counts.params,
        "configured_params": sum(p.numel() for p in net.parameters()),
        "flops_g": None if counts.flops is None else counts.flops / 1e9, "activations_m": counts.activations / 1e6,
        "convs": counts.convs, "runtime": runtime_summary(timing["times_ms"], device),
        "memory_mb": memory["peak_mb"], "test_options": str(test_yml), "load_average": load,
        "metrics": {s: {"psnr": r.get("psnr"), "ssim": r.get("ssim"), "images": r["num_images"]} for s, r in results.items()},
    }


def measure_entry(entry: Entry, *, settings: Settings, output: Path, force: bool = False) -> dict[str, Any]:
    """The row of ``entry``: from its cache file when the key matches (and not ``force``), else measured and cached.

    Raises:
        EntrySkippedError: the option file or weights are missing, or the entry cannot be built or measured.
    """
    source = resolve(entry.options)
    if not source.is_file():
        raise EntrySkippedError(f"option file not found: {entry.options}")
    try:
        opt = load_options(source)
        weights = weights_file(opt)
        if not weights.is_file():
            raise EntrySkippedError(f"weights not found: {weights} (named by {entry.options})")
        sets = benchmark_sets(opt.scale, settings.benchmark_root)
        key = {"options_sha256": file_sha256(source), "weights_sha256": sha256_of(weights), "settings": settings.key(),
               "benchmarks": {name: [str(hr), str(lr)] for name, (hr, lr) in sets.items()}}
        slug = source.stem
        cache = output / "entries" / f"{slug}.json"
        if not force and cache.is_file():
            try:
                cached = json.loads(cache.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                cached = {}
            if cached.get("key") == key:
                return cached["row"]
        row = {"label": entry.label, "source": entry.source, "options": str(entry.options), "weights": str(weights),
               **measure(source, weights, settings=settings, workdir=output / "work", name=slug, sets=sets)}
    except (LkdnError, ValueError, OSError, KeyError, RuntimeError) as err:  # RuntimeError: a download that failed, a forward that fails
        raise EntrySkippedError(f"{type(err).__name__}: {err}".splitlines()[0]) from err
    write_json_atomic(cache, {"key": key, "row": row})
    return row


def run_leaderboard(
    entries: Sequence[Entry], *, settings: Settings, output: Path, force: bool = False,
    progress: Callable[[Sequence[Entry]], Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Measure (or read from the cache) every entry; returns ``(rows, skipped)`` in ``entries`` order."""
    rows, skipped = [], []
    iterator = progress(entries) if progress is not None else entries
    for entry in iterator:
        if hasattr(iterator, "set_postfix_str"):
            iterator.set_postfix_str(entry.label)
        try:
            rows.append(measure_entry(entry, settings=settings, output=output, force=force))
        except EntrySkippedError as err:
            skipped.append({"label": entry.label, "options": str(entry.options), "reason": str(err)})
    return rows, skipped


def add_scores(rows: list[dict[str, Any]], *, baseline: Path, year: int = 2026) -> dict[str, Any] | None:
    """Give every row its NTIRE ``score`` against the row of option file ``baseline`` (None without it or FLOPs)."""
    base = next((r for r in rows if resolve(Path(r["options"])).resolve() == resolve(baseline).resolve()), None)

    def values(row: dict[str, Any]) -> dict[str, float] | None:
        if row["flops_g"] is None:
            return None
        return {"runtime": row["runtime"]["median_ms"], "flops": row["flops_g"], "params": row["params"] / 1e6}

    reference = values(base) if base is not None else None
    for row in rows:
        team = values(row)
        row["score"] = challenge_score(team, reference, year=year) if team and reference else None
    return base


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def _score(value: float | None) -> str:
    """A score with 3 decimals, or 3 significant digits once it is large (exp grows fast)."""
    return "-" if value is None else f"{value:.3f}" if value < 1000 else f"{value:.3g}"


def benchmark_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    names = {name for row in rows for name in row["metrics"]}
    return [name for name in BENCHMARKS if name in names] + sorted(names - set(BENCHMARKS))


def markdown(rows: Sequence[dict[str, Any]], skipped: Sequence[dict[str, str]], *, settings: Settings,
             baseline: dict[str, Any] | None, year: int, figure: str | None = None) -> str:
    """The leaderboard table (rows by final score, best first; unscored rows last) and its notes."""
    sets = benchmark_names(rows)
    device = torch.device(settings.device)
    height, width = settings.lr_size
    ordered = sorted(rows, key=lambda r: (r["score"] is None, r["score"]["final"] if r["score"] else 0.0))
    timer = "CUDA events" if device.type == "cuda" else "wall time"
    head = ["network", "params (K)", "FLOPs (G)", "acts (M)", "convs", "memory (MB)",
            f"runtime ms ({timer}), median [min-max]", *(f"{s} PSNR / SSIM" for s in sets), "NTIRE score"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in ordered:
        t = r["runtime"]
        metric_cells = []
        for s in sets:
            m = r["metrics"].get(s)
            metric_cells.append(f"{_cell(m['psnr'], '.2f')} / {_cell(m['ssim'], '.4f')}" if m else "-")
        label = f"**{r['label']}** (baseline)" if baseline is r else r["label"]
        cells = [label, f"{r['params'] / 1e3:.1f}", _cell(r["flops_g"], ".2f"), f"{r['activations_m']:.2f}",
                 str(r["convs"]), _cell(r["memory_mb"], ".0f"),
                 f"{t['median_ms']:.1f} [{t['min_ms']:.1f}-{t['max_ms']:.1f}]", *metric_cells,
                 _score(r["score"]["final"] if r["score"] else None)]
        lines.append("| " + " | ".join(cells) + " |")
    base_name = baseline["label"] if baseline is not None else "none (its entry was not measured)"
    notes = [
        "",
        f"Measured by `lkdn-leaderboard` on {datetime.date.today()}: {machine_description(device)}. "
        f"Counts: the form that runs (re-parameterizable branches folded), as the NTIRE harness counts them "
        f"(fvcore FLOPs, conv-output activations, on one 3x256x256 LR input). Runtime and memory: "
        f"`lkdn.Upscaler(optimize=True)` on a {width}x{height} LR input ({width * 4}x{height * 4} output at x4), "
        f"batch 1, float32, {settings.warmup} warm-up then {settings.runs} timed runs ({timer}); memory = peak "
        f"{'CUDA memory allocated' if device.type == 'cuda' else 'bytes held by tensors allocated'} in one forward. "
        f"PSNR/SSIM: Y channel, crop border = scale, by `lkdn/test.py`. NTIRE score: {year} rule "
        f"(exp(2 x network / baseline) per metric on runtime, FLOPs and parameters, weighted), baseline {base_name}; "
        "lower is better, the baseline scores e^2 = 7.389.",
    ]
    loads = [r["load_average"] for r in rows if r.get("load_average") is not None]
    if loads and device.type == "cpu":
        notes += ["", f"The machine's load average (1 minute) when the networks were timed: {min(loads):.1f} to "
                  f"{max(loads):.1f}, on {os.cpu_count()} logical cores; above the core count, other processes shared "
                  "the cores and the wall times are longer than on an idle machine."]
    if figure:
        notes += ["", f"![PSNR on Set5 against parameters, FLOPs and runtime]({figure})"]
    if skipped:
        notes += ["", "Not measured:", ""] + [f"- {s['label']}: {s['reason']}" for s in skipped]
    return "\n".join(lines + notes) + "\n"


def figure_points(rows: Sequence[dict[str, Any]]) -> dict[str, list[tuple[str, float, float]]]:
    """The three panels' points, ``(label, x, Set5 PSNR)``: against params (K), FLOPs (G) and runtime (ms).

    Rows without a Set5 PSNR (or without FLOPs, on that panel) have no point.
    """
    panels: dict[str, list[tuple[str, float, float]]] = {"params": [], "flops": [], "runtime": []}
    for r in rows:
        psnr = (r["metrics"].get(REQUIRED_BENCHMARK) or {}).get("psnr")
        if psnr is None:
            continue
        panels["params"].append((r["label"], r["params"] / 1e3, psnr))
        if r["flops_g"] is not None:
            panels["flops"].append((r["label"], r["flops_g"], psnr))
        panels["runtime"].append((r["label"], r["runtime"]["median_ms"], psnr))
    return panels


def _label_offsets(points: Sequence[tuple[float, float]], widths: Sequence[float], *, height: float = 11.0,
                   step: float = 11.0, tries: int = 12) -> list[tuple[float, float]]:
    """Offsets (points) that keep labels from overlapping: each label right of its point, moved up or down
    in ``step``s, highest points first, until its box (``width`` x ``height``) overlaps no label placed before.

    ``points`` are the markers' display positions in points.
    """
    order = sorted(range(len(points)), key=lambda i: -points[i][1])
    boxes: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[float, float]] = [(6.0, -3.0)] * len(points)
    for i in order:
        x, y = points[i]
        for k in range(2 * tries + 1):
            dy = -3.0 + (k + 1) // 2 * step * (1 if k % 2 else -1)
            box = (x + 6.0, y + dy, x + 6.0 + widths[i], y + dy + height)
            if all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in boxes):
                break
        boxes.append(box)
        offsets[i] = (6.0, dy)
    return offsets


def plot(rows: Sequence[dict[str, Any]], path: Path, *, settings: Settings) -> dict[str, list[tuple[str, float, float]]]:
    """Write the three-panel figure (PSNR on Set5 against params, FLOPs, runtime) as a PNG; returns its points.

    Log x axes (costs span an order of magnitude); labels are moved apart, with a line to their point
    when moved.
    """
    import matplotlib  # optional: only the figure needs matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    points = figure_points(rows)
    height, width = settings.lr_size
    timer = "CUDA" if torch.device(settings.device).type == "cuda" else "CPU wall time"
    titles = {"params": "Parameters (K), folded form", "flops": "FLOPs (G, NTIRE fvcore, LR 256x256)",
              "runtime": f"Runtime (ms, Upscaler, {timer}, LR {width}x{height})"}
    dpi, fontsize = 90, 8
    fig, axes = plt.subplots(1, 3, figsize=(18, 7.5), sharey=True)
    for ax, (panel, data) in zip(axes, points.items(), strict=True):
        colours = [plt.get_cmap("tab20")(i % 20) for i in range(len(data))]  # one colour per network up to 20
        ax.scatter([d[1] for d in data], [d[2] for d in data], s=30, c=colours, zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if data:
            low, high = min(d[1] for d in data), max(d[1] for d in data)
            ax.set_xlim(low / 1.15, high * 1.9)  # room for the labels on the right
            bottom, top = min(d[2] for d in data), max(d[2] for d in data)
            ax.set_ylim(bottom - 0.1 * (top - bottom) - 0.02, top + 0.05 * (top - bottom) + 0.02)
        ax.set_xlabel(titles[panel])
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("PSNR on Set5 x4 (dB, Y channel)")
    fig.suptitle("Efficient SR on one machine: Set5 PSNR against cost (one point per network)")
    fig.tight_layout()
    fig.canvas.draw()  # fixes the limits, so points map to their final display positions
    for ax, data in zip(axes, points.values(), strict=True):
        display = [tuple(ax.transData.transform((d[1], d[2])) * 72.0 / dpi) for d in data]
        offsets = _label_offsets(display, [0.62 * fontsize * len(d[0]) for d in data])
        colours = [plt.get_cmap("tab20")(i % 20) for i in range(len(data))]
        for (label, x, y), (dx, dy), colour in zip(data, offsets, colours, strict=True):
            moved = abs(dy + 3.0) > 1.0
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize, color="0.15",
                        va="bottom", arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6} if moved else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return points
