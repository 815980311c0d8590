"""The zoo against the official code: ``lkdn.Upscaler(optimize=True)`` and the official module, network by network.

For every x4 network of the zoo (:data:`lkdn.leaderboard.ZOO`) whose option file and weights are
found, at LR 320x180 (1280x720 output), batch 1, float32, on the CPU:

* **ours**: ``lkdn.Upscaler(optimize=True)`` on the network of the option file (its defaults:
  folded, channels_last, fused conv+activation, tuned allocator);
* **official**: the official model file of ``<shared>/reference`` (imported from there, with
  ``Module.cuda``/``Tensor.cuda`` made harmless while it is imported and built, as its own
  ``test_demo.py`` builds it: same arguments, same checkpoint, ``strict=False`` where the harness
  loads so), called eagerly in eval mode under ``torch.inference_mode`` as a user would run it,
  with the harness's ``data_range`` (input times 255 and output divided by it for RLFN and RFDN).

Each candidate runs in its own process (``bench_backends.Worker``: its own OpenMP pool and
allocator, pinned to the same cores); the parent sends one forward at a time to each, in rounds
of rotated order (interleaved: a slow period of a shared machine is spread over both), and
reports the median and the min-max spread. Both outputs on one seeded 40x48 input are compared
(max abs difference, after the official output is clamped to [0, 1] as the ``Upscaler`` clamps).
Networks without official code in the reference (LKDN, LKDN-S, BSRN) are listed as such.

``LKDN_BENCH_ROUNDS`` sets the rounds (default 7); ``LKDN_BENCH_QUICK=1`` (or ``--quick``) runs
two networks at LR 128x72 with 2 rounds, to check the benchmark runs.

    python benchmarks/run.py --only zoo --threads 2      # into docs/benchmarks.md
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for folder in (ROOT, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_backends import Candidate, Result, Worker, _interleave, machine_line  # noqa: E402

LR_SIZE = (180, 320)  # height, width
QUICK_SIZE = (72, 128)
ROUNDS, QUICK_ROUNDS = 7, 2
CHECK_SIZE = (40, 48)
QUICK_ENTRIES = ("SPAN c28", "E-RFDN")


@dataclass(frozen=True)
class Official:
    """How the official code builds a network: its file under ``reference/``, the class and the arguments
    its ``test_demo.py`` passes, whether it loads strictly, and the harness's ``data_range``."""

    file: str
    cls: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = True
    data_range: float = 1.0


#: zoo label -> official code (None: not in the reference)
OFFICIAL: dict[str, Official | None] = {
    "IMDN": Official("IMDN/model/architecture.py", "IMDN", kwargs={"upscale": 4}),
    "IMDN (NTIRE 2022)": Official("ntire_esr/2022/models/imdn_baseline.py", "IMDN",
                                  kwargs={"in_nc": 3, "out_nc": 3, "nc": 64, "nb": 8, "upscale": 4}),
    "E-RFDN": Official("ntire_esr/2022/models/rfdn_baseline/RFDN.py", "RFDN", data_range=255.0),
    "RLFN": Official("ntire_esr/2022/models/team04_rlfn.py", "RLFN_cut", kwargs={"in_nc": 3, "out_nc": 3},
                     data_range=255.0),
    "BSRN": None,
    "LKDN": None,
    "LKDN-S": None,
    "SPAN c28": Official("ntire_esr/2026/models/team00_SPAN.py", "SPAN", (3, 3), {"upscale": 4, "feature_channels": 28},
                         strict=False),
    "EFDN": Official("ntire_esr/2025/models/team00_EFDN.py", "EFDN"),
    "DSCLoRA": Official("ntire_esr/2025/models/team23_DSCF.py", "DSCF", (3, 3), {"feature_channels": 26, "upscale": 4},
                        strict=False),
    "SPANF": Official("ntire_esr/2025/models/team24_SPANF.py", "SPANF", (3, 3), {"upscale": 4, "feature_channels": 32}),
    "SPANV2": Official("ntire_esr/2026/models/team22_SPANV2_ESR.py", "SPANV2_ESR", (3, 3),
                       {"feature_channels": 32, "upscale": 4, "bias": False, "use_span_attn": False}),
    "PDS": Official("ntire_esr/2026/models/team01_PDS.py", "PDS"),
    "PKDSR": Official("ntire_esr/2026/models/team16_PKDSR.py", "SPANFPrunedKD", (3, 3),
                      {"upscale": 4, "tail_channels": 24, "feature_channels": 32}),
    "DISP": Official("ntire_esr/2026/models/team18_DISP.py", "DISP"),
    "DSCF fused": Official("ntire_esr/2026/models/team15_DSCF_Fused.py", "DSCF_Fused",
                           kwargs={"num_in_ch": 3, "num_out_ch": 3, "feature_channels": 26, "upscale": 4}),
}


def reference_root() -> Path | None:
    """``$LKDN_SHARED/reference`` when the variable is set, else ``../shared/reference`` (None when absent)."""
    env = os.environ.get("LKDN_SHARED")
    root = Path(env) / "reference" if env else ROOT.parent / "shared" / "reference"
    return root if root.is_dir() else None


@contextlib.contextmanager
def cuda_is_a_no_op() -> Iterator[None]:
    """``Module.cuda()`` and ``Tensor.cuda()`` return ``self`` inside the block (official constructors call them)."""
    module_cuda, tensor_cuda = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = module_cuda, tensor_cuda  # type: ignore[method-assign]


def import_official(path: Path) -> ModuleType:
    """An official model file as a module of a package named after its folder (for its sibling imports)."""
    package = "official_" + path.parent.name.replace("-", "_")
    holder = sys.modules.setdefault(package, ModuleType(package))
    holder.__path__ = [str(path.parent)]
    sys.path[:0] = [str(path.parent), str(path.parent.parent), str(path.parent.parent.parent)]  # its imports: siblings, models.*
    spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    with cuda_is_a_no_op():
        spec.loader.exec_module(module)
    return module


def _output_file(spec: Mapping[str, Any]) -> Path:
    return Path(spec["folder"]) / f"{spec['name']}-{spec['key']}.npy"


def build(spec: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A worker's candidate: ``ours`` (the Upscaler) or ``official``; saves its output on the check input."""
    from lkdn.checkpoint import load_state_dict
    from lkdn.loading import load_network_from_options
    from lkdn.options import load_options
    from lkdn.upscaler import Upscaler

    opt = load_options(ROOT / spec["yml"])
    info: dict[str, Any] = {}
    if spec["key"] == "ours":
        forward = Upscaler(load_network_from_options(opt), scale=opt.scale, device="cpu")
        info["describe"] = repr(forward)
    else:
        official = Official(**spec["official"])
        module = import_official(Path(spec["reference_root"]) / official.file)
        with cuda_is_a_no_op():
            model = getattr(module, official.cls)(*official.args, **official.kwargs)
        from lkdn.loading import weights_file

        state = load_state_dict(weights_file(opt), param_key=(opt.get("path") or {}).get("param_key_g") or None)
        missing, unexpected = model.load_state_dict(state, strict=official.strict)
        model = model.eval().requires_grad_(False)
        info["describe"] = f"{official.file}: {official.cls}, missing keys {len(missing)}, unexpected {len(unexpected)}"
        scale = official.data_range

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x * scale) / scale if scale != 1.0 else model(x)

    x = torch.rand(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        np.save(_output_file(spec), forward(x).float().clamp(0, 1).numpy())
    return forward, info


# ---------------------------------------------------------------------------------------------
# the parent


def entry_specs(quick: bool) -> list[tuple[Any, Official | None]]:
    """``(zoo entry, its official code)`` for the networks to measure."""
    from lkdn.leaderboard import ZOO

    entries = [e for e in ZOO if not quick or e.label in QUICK_ENTRIES]
    return [(entry, OFFICIAL.get(entry.label)) for entry in entries]


def spread(times: Sequence[float]) -> str:
    return f"{min(times):.0f}-{max(times):.0f}" if times else "-"


def summarize(ours: Sequence[float], official: Sequence[float]) -> dict[str, float | None]:
    """Medians and the speed-up of ours over the official code (``official / ours``; above 1: ours is faster)."""
    mo = statistics.median(ours) if ours else None
    mf = statistics.median(official) if official else None
    return {"ours_ms": mo, "official_ms": mf, "speedup": mf / mo if mo and mf else None}


def table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Markdown table: one row per network (``label``, ``ours``/``official`` times, ``max_abs``, ``note``)."""
    lines = [
        "| network | ours: Upscaler(optimize=True) median ms [min-max] | official eager, inference_mode, median ms "
        "[min-max] | official / ours | max abs diff | note |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        s = summarize(row.get("ours", ()), row.get("official", ()))
        ours = f"{s['ours_ms']:.0f} [{spread(row['ours'])}]" if s["ours_ms"] is not None else "-"
        official = f"{s['official_ms']:.0f} [{spread(row['official'])}]" if s["official_ms"] is not None else "-"
        speedup = f"{s['speedup']:.2f}x" if s["speedup"] is not None else "-"
        diff = "-" if row.get("max_abs") is None else f"{row['max_abs']:.1e}"
        lines.append(f"| {row['label']} | {ours} | {official} | {speedup} | {diff} | {row.get('note', '')} |")
    return lines


#: Why ours is slower than the official code, for the networks where a run found it so (shown under the table).
SLOWER: dict[str, str] = {}
WHY_FASTER = (
    "Where ours is faster, it is by what `Upscaler(optimize=True)` adds to the same arithmetic (the official "
    "files here are already in their deploy form): channels_last, each convolution fused with its activation into "
    "one oneDNN call, element-wise ops in place and the glibc allocator tuned (`docs/efficiency.md` measures each "
    "step)."
)


def findings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines under the table: the networks where ours is slower (median), with :data:`SLOWER`'s reason, and those
    whose two [min-max] ranges overlap (their ratio is within the machine's noise)."""
    slower, overlap = [], []
    for row in rows:
        ours, official = row.get("ours") or (), row.get("official") or ()
        if not ours or not official:
            continue
        s = summarize(ours, official)
        if s["speedup"] is not None and s["speedup"] < 1:
            slower.append(f"- {row['label']} ({s['speedup']:.2f}x): "
                          + SLOWER.get(row["label"], "not explained yet: profile both with `torch.profiler` at one "
                                                     "thread, the way `docs/efficiency.md` does."))
        if min(official) <= max(ours):
            overlap.append(row["label"])
    lines = ["", "**Where ours is slower:** " + ("none in this run (median)." if not slower else "")] + slower
    if overlap:
        lines += ["", "Ranges that overlap (the ratio is within this run's noise): " + ", ".join(overlap) + "."]
    return [*lines, "", WHY_FASTER]


def measure_entry(entry: Any, official: Official | None, *, size: tuple[int, int], threads: int, rounds: int,
                  folder: Path, reference: Path | None) -> dict[str, Any]:
    """Time ours and the official code of one network, interleaved, each in its own process."""
    from lkdn.leaderboard import resolve
    from lkdn.loading import weights_file
    from lkdn.options import load_options

    row: dict[str, Any] = {"label": entry.label, "ours": [], "official": []}
    path = resolve(entry.options)
    if not path.is_file():
        return {**row, "note": f"not measured: option file not found ({entry.options})"}
    try:
        if not weights_file(load_options(path)).is_file():
            return {**row, "note": "not measured: weights not found"}
    except (ValueError, RuntimeError, OSError) as err:
        return {**row, "note": f"not measured: {str(err).splitlines()[0]}"}
    keys = ["ours"]
    notes = []
    if official is None:
        notes.append("no official code in the reference (see the Inference section)")
    elif reference is None or not (reference / official.file).is_file():
        notes.append(f"official code not found ({official.file})")
        official = None
    else:
        keys.append("official")
    name = path.stem
    workers = {key: Worker(folder / f"{name}-{key}.log", script=Path(__file__).resolve()) for key in keys}
    results = {key: Result(Candidate(key, key, "fp32")) for key in keys}
    try:
        for key, worker in workers.items():
            spec = {"key": key, "yml": str(path), "threads": threads, "size": list(size), "folder": str(folder),
                    "name": name, "reference_root": str(reference) if reference else None,
                    "official": None if official is None else asdict(official)}
            answer = worker.ask({"cmd": "setup", "spec": spec})
            if not answer.get("ok"):
                results[key].error = answer["error"]
                notes.append(f"{key} failed: {answer['error'][:200]}")
            elif key == "official":
                notes.append(answer.get("describe", "").split(": ", 1)[-1])
        _interleave(workers, results, rounds)
    finally:
        for worker in workers.values():
            worker.close()
    for key in keys:
        row[key] = results[key].times
        if results[key].error and f"{key} failed" not in " ".join(notes):
            notes.append(f"{key} failed: {results[key].error[:200]}")
    files = [folder / f"{name}-{key}.npy" for key in ("ours", "official")]
    if all(f.is_file() for f in files):
        a, b = (np.load(f) for f in files)
        row["max_abs"] = float(np.abs(a - b).max()) if a.shape == b.shape else None
        if a.shape != b.shape:
            notes.append(f"output shapes differ: {a.shape} vs {b.shape}")
    row["note"] = "; ".join(n for n in notes if n)
    return row


def run(ctx: dict) -> str:
    quick = bool(ctx.get("quick")) or os.environ.get("LKDN_BENCH_QUICK", "") not in ("", "0")
    threads = int(ctx.get("threads", 2))
    rounds = int(os.environ.get("LKDN_BENCH_ROUNDS", QUICK_ROUNDS if quick else ROUNDS))
    size = QUICK_SIZE if quick else LR_SIZE
    reference = reference_root()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_zoo_") as tmp:
        for entry, official in entry_specs(quick):
            print(f"bench_zoo: {entry.label}", file=sys.stderr, flush=True)
            rows.append(measure_entry(entry, official, size=size, threads=threads, rounds=rounds, folder=Path(tmp),
                                      reference=reference))
    height, width = size
    out = [
        "## Zoo against the official code",
        "",
        f"{machine_line(threads)}. LR {width}x{height}, batch 1, float32. Ours: `lkdn.Upscaler(optimize=True)` on the "
        "zoo's option file and weights; official: the model file of the reference code built and loaded as its "
        "`test_demo.py` does, eval mode, called eagerly under `torch.inference_mode`. Each in its own process, "
        f"{rounds} interleaved rounds after one untimed call; median and [min-max] wall time. Max abs diff: the two "
        f"outputs (clamped to [0, 1]) on one seeded {CHECK_SIZE[1]}x{CHECK_SIZE[0]} input of uniform noise, far from "
        "the images these networks see, so float32 rounding is amplified (up to about 1e-3); on the Set5 images the "
        "tests hold every network to the official output within 1e-5. `benchmarks/bench_zoo.py`.",
        "",
        *table(rows),
        *findings(rows),
    ]
    if load_start is not None:
        load_end, cores = os.getloadavg()[0], os.cpu_count() or 1
        busy = (" (above the core count: other processes shared the cores, so every time is longer than on an idle "
                "machine and the ranges wider)" if max(load_start, load_end) > cores else "")
        out += ["", f"Load average (1 minute) at the start and the end of the run: {load_start:.1f} and "
                f"{load_end:.1f}, on {cores} logical cores{busy}."]
    return "\n".join(out)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        from bench_backends import worker

        worker(build=build)
    else:
        print(run({"threads": int(os.environ.get("LKDN_BENCH_THREADS", 2)), "quick": "--quick" in sys.argv}))
