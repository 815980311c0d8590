"""Every CPU backend and precision side by side: PyTorch, onnxruntime, OpenVINO, ncnn, and ``backend="auto"``.

For LKDN x4, LKDN-S (deploy form) and SPAN c28 (official weights when found, else random: timing
does not depend on them) at LR 320x180 and 1280x720, each candidate runs **in its own process**
(its own OpenMP pool and allocator, nothing left spinning from another runtime), pinned to the
same ``threads`` cores with ``threads`` runtime threads; the parent sends one forward at a time.
At the first size every candidate is alive at once and timed round after round in rotated order
(interleaved: a slow period of a shared machine is spread over all candidates); at the larger
sizes one candidate at a time (see :func:`measure_group`). It reports the median, the min-max
spread, the max abs difference and the PSNR of the output against PyTorch float32 (eager) on a
photograph (scikit-image's ``astronaut`` at 320x180; measured in the first size's group), and the
fraction of the machine's dense-convolution throughput reached (``2 * Multi-Adds / time`` against
a 256->256 3x3 convolution, float32 and bfloat16, measured like ``bench_roofline.py``, in a
process of its own).

The baselines are what a user runs with each runtime's defaults, on our exported files (the
thread count set to ``threads`` like every other candidate, nothing else changed): PyTorch
eager ``net(x)``; ``onnxruntime.InferenceSession`` on our ``.onnx``; ``openvino.Core().compile_model``
of our IR (on CPUs with bfloat16 this runs bf16: OpenVINO's default precision hint); ncnn's
default options on pnnx's default output (float16 weights). The rest go through
``lkdn.Upscaler`` (``backend=``, ``precision=``), whose output is clamped to [0, 1] like any
user's. ``auto`` is timed after its first call (which chose; the choice and its measured times
are listed).

Memory: at 1280x720 a worker holds up to 13 GiB (onnxruntime's arena for LKDN x4, ncnn's
blobs), so not every candidate can be alive at once there: at the larger sizes each candidate is
set up, timed and closed before the next one starts, and the machine holds one worker at a time.

Quick mode (``LKDN_BENCH_QUICK=1`` or ``--quick``): LKDN-S only, LR 64x36 (side by side) and
128x72 (one at a time), 2 rounds, to check the benchmark runs. ``LKDN_BENCH_ROUNDS`` overrides the
number of rounds (default 5), ``LKDN_BENCH_SIZES`` the LR sizes (``320x180,1280x720``, width x
height; the first side by side, the others one at a time).

    python benchmarks/run.py --only backends --threads 2       # into docs/benchmarks.md
    LKDN_BENCH_QUICK=1 python benchmarks/bench_backends.py     # a quick look, printed
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_facts import cpu_model_and_flags  # noqa: E402

NETWORKS = {
    "LKDN x4": "options/test/LKDN/test_LKDN_x4.yml",
    "LKDN-S (deploy)": "options/test/LKDN/test_LKDN-S_del_rep_x4.yml",
    "SPAN c28": "options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml",
}
SIZES = ((180, 320), (720, 1280))
QUICK_NETWORKS = ("LKDN-S (deploy)",)
QUICK_SIZES = ((36, 64), (72, 128))
ROUNDS, QUICK_ROUNDS = 5, 2
PAUSE_S = 0.1
"""Idle time between two forwards (an OpenMP pool that just finished may still spin)."""
SETUP_TIMEOUT_S, RUN_TIMEOUT_S = 1800, 1800


@dataclass(frozen=True)
class Candidate:
    """One way of running a network: ``kind`` tells the worker how to build it."""

    key: str
    label: str
    precision: str
    default: bool = False
    """A runtime used alone with its defaults (a baseline of the goal)."""


CANDIDATES = (
    Candidate("torch-eager", "PyTorch eager `net(x)` (defaults)", "fp32", default=True),
    Candidate("torch", "Upscaler(backend='torch')", "fp32"),
    Candidate("torch-bf16", "Upscaler(backend='torch', precision='bf16')", "bf16"),
    Candidate("ort-default", "onnxruntime defaults on our .onnx", "fp32", default=True),
    Candidate("ort-fp16", "Upscaler(backend='onnxruntime', precision='fp16')", "fp16"),
    Candidate("ov-default", "OpenVINO defaults on our IR", "default", default=True),
    Candidate("ov-fp32", "Upscaler(backend='openvino')", "fp32"),
    Candidate("ov-bf16", "Upscaler(backend='openvino', precision='bf16')", "bf16"),
    Candidate("ov-int8", "Upscaler(backend='openvino', precision='int8')", "int8"),
    Candidate("ncnn-default", "ncnn defaults on pnnx's default output (fp16 weights)", "fp16 weights", default=True),
    Candidate("ncnn-fp32", "Upscaler(backend='ncnn')", "fp32"),
    Candidate("auto-fp32", "Upscaler(backend='auto')", "fp32"),
    Candidate("auto-bf16", "Upscaler(backend='auto', precision='bf16')", "bf16"),
)
EXACT_TOLERANCE = 5e-4
"""Candidates within this max abs of PyTorch float32 count as exact float32 (the backends' fp32 tolerance)."""


def quick_mode(ctx: Mapping[str, Any]) -> bool:
    return bool(ctx.get("quick")) or os.environ.get("LKDN_BENCH_QUICK", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------
# shared with benchmarks/quantization_table.py


def photo(size: tuple[int, int]) -> torch.Tensor:
    """scikit-image's bundled ``astronaut`` resized and cropped to ``size`` (1x3xHxW in [0, 1])."""
    import cv2
    from skimage import data

    height, width = size
    side = max(height, width)
    image = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)[:height, :width]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def calibration_folder(folder: Path, scale: int) -> Path:
    """LR calibration images for int8: scikit-image's bundled photographs (not Set5), MATLAB-bicubic downscaled."""
    import cv2
    from skimage import data

    from lkdn.resize import downscale, mod_crop

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        rgb = getattr(data, name)()
        bgr = np.ascontiguousarray(rgb[:, :, :3][:, :, ::-1])
        cv2.imwrite(str(folder / f"{name}.png"), downscale(mod_crop(bgr, scale), scale))
    return folder


def load_network(yml: str) -> tuple[torch.nn.Module, int, str]:
    """The network of a test YAML with its official weights, else random weights (for timing only)."""
    from lkdn import build_network
    from lkdn.checkpoint import CheckpointError
    from lkdn.loading import load_network_from_options
    from lkdn.options import load_options

    opt = load_options(ROOT / yml)
    try:
        return load_network_from_options(opt), opt.scale, "official weights"
    except (CheckpointError, FileNotFoundError, OSError):
        return build_network(opt["network_g"]).eval(), opt.scale, "random weights (checkpoint not found)"


def machine_line(threads: int, *, cpu_model: bool = True) -> str:
    """ISA flags that matter here, threads and the runtimes' versions (after the CPU model, unless not ``cpu_model``)."""
    cpu, flags = cpu_model_and_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
           if f in flags]
    versions = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino", "nncf", "ncnn", "pnnx"):
        try:
            mod = __import__(module)
            version = mod.get_version().split("-")[0] if module == "openvino" else getattr(mod, "__version__", "?")
            versions.append(f"{module} {version}")
        except ImportError:
            versions.append(f"{module} not installed")
    where = f"CPU: {cpu} ({os.cpu_count()} logical cores; ISA: " if cpu_model else "CPU ISA: "
    return f"{where}{', '.join(isa) or 'none of note'}{')' if cpu_model else ''}, {threads} threads per candidate; {', '.join(versions)}"


# ---------------------------------------------------------------------------------------------
# the worker (one process per candidate)


def _pin(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):  # not Linux
        pass


def _build(spec: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The forward of one candidate and facts about it."""
    from lkdn.upscaler import Upscaler

    key, threads, files = spec["key"], spec["threads"], spec["files"]
    info: dict[str, Any] = {}
    if key == "roofline":
        return None, info
    net, _, _ = load_network(spec["yml"])
    if key == "torch-eager":
        return net, info
    if key == "ort-default":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(files["onnx"], sess_options=options, providers=["CPUExecutionProvider"])
        info["describe"] = f"onnxruntime {ort.__version__}, graph optimizations {options.graph_optimization_level}"
        return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), info
    if key == "ov-default":
        import openvino as ov

        compiled = ov.Core().compile_model(files["ir"], "CPU", {"INFERENCE_NUM_THREADS": threads})
        info["describe"] = f"inference precision {compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()}"
        return lambda x: torch.from_numpy(compiled({0: x.numpy()})[0]), info
    if key == "ncnn-default":
        import ncnn

        n = ncnn.Net()
        n.opt.num_threads = threads
        n.load_param(files["ncnn_param"])
        n.load_model(files["ncnn_bin"])

        def run_ncnn(x: torch.Tensor) -> torch.Tensor:
            outs = []
            for image in x.numpy():
                data = np.ascontiguousarray(image)
                mat = ncnn.Mat(data).clone()
                ex = n.create_extractor()
                ex.input("in0", mat)
                outs.append(np.array(ex.extract("out0")[1]))
            return torch.from_numpy(np.stack(outs))

        return run_ncnn, info
    backend, _, precision = key.partition("-")
    backend = {"ort": "onnxruntime", "ov": "openvino"}.get(backend, backend)
    up = Upscaler(net, device="cpu", backend=backend, precision=precision or "fp32", threads=threads,
                  calibration=files.get("calibration", ()))
    info["describe"] = repr(up)
    return up, info


def _roofline(threads: int) -> dict[str, float]:
    """Dense 3x3 convolution 256->256 on 128x128, channels_last: GFLOP/s in float32 and bfloat16 (best of 5)."""
    import torch.nn.functional as F

    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.rand(1, 256, 128, 128).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.rand(256, 256, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        times = []
        with torch.inference_mode():
            for i in range(7):
                start = time.perf_counter()
                F.conv2d(x, w, padding=1)
                if i >= 2:
                    times.append(time.perf_counter() - start)
        rates[name] = 2 * 128 * 128 * 256 * 256 * 9 / 1e9 / min(times)
    return rates


def worker(build: Any = None) -> None:
    """Serve one candidate: JSON commands on stdin, JSON answers on the original stdout.

    ``build(spec) -> (forward, info)`` makes the candidate (default: :func:`_build`, this benchmark's).
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a runtime prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    forward, x = None, None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                spec = command["spec"]
                _pin(spec["threads"])
                if spec["key"] == "roofline":
                    protocol.write(json.dumps({"ok": True, "roofline": _roofline(spec["threads"])}) + "\n")
                    continue
                import lkdn  # noqa: F401  (registers the architectures)

                start = time.perf_counter()
                forward, info = (build or _build)(spec)
                info["setup_s"] = time.perf_counter() - start
                x = torch.rand(1, 3, *spec["size"], generator=torch.Generator().manual_seed(0))
                with torch.inference_mode():
                    start = time.perf_counter()
                    forward(x)  # the first call at this size (auto: the choice)
                    info["first_ms"] = (time.perf_counter() - start) * 1e3
                    if spec.get("reference"):
                        ref = torch.from_numpy(np.load(spec["reference"]))
                        out = forward(photo(tuple(spec["accuracy_size"]))).float()
                        out, ref = out.clamp(0, 1), ref.clamp(0, 1)  # the Upscaler clamps; compare what users get
                        info["max_abs"] = float((out - ref).abs().max())
                        mse = float((out - ref).pow(2).mean())
                        info["psnr"] = math.inf if mse == 0 else 10 * math.log10(1 / mse)
                runtime = getattr(forward, "runtime", None)
                if runtime is not None and hasattr(runtime, "times_ms"):
                    info["auto"] = {"chosen": runtime.chosen, "times_ms": runtime.times_ms}
                protocol.write(json.dumps({"ok": True, **info}) + "\n")
            elif command["cmd"] == "run":
                with torch.inference_mode():
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    forward(x)
                    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
                protocol.write(json.dumps({"ok": True, "ms": wall * 1e3, "cpu_ms": cpu * 1e3}) + "\n")
            else:
                return
        except Exception as err:  # reported to the parent, which prints the row as failed
            protocol.write(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}) + "\n")


# ---------------------------------------------------------------------------------------------
# the parent


class Worker:
    """A candidate's process."""

    def __init__(self, log: Path, script: Path | None = None) -> None:
        """``script``: the benchmark whose ``--worker`` serves the candidate (default: this one)."""
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(script or Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
        )

    def ask(self, command: Mapping[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            try:
                status = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # it closed its output but still runs
                status = None
            killed = " (SIGKILL: out of memory?)" if status == -9 else ""
            return {"ok": False, "error": f"the worker died (exit status {status}{killed})"}
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask({"cmd": "quit"})
            except (OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@dataclass
class Result:
    """What was measured for one candidate in one (network, size) group."""

    candidate: Candidate
    info: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan


def export_files(net: torch.nn.Module, folder: Path, scale: int) -> dict[str, str]:
    """The files the defaults baselines load, written and verified by our exporters."""
    from lkdn.export import export_ncnn, export_onnx, export_openvino

    files: dict[str, str] = {"calibration": str(calibration_folder(folder / "calibration", scale))}
    export_onnx(net, folder / "model.onnx")
    files["onnx"] = str(folder / "model.onnx")
    try:
        export_openvino(net, folder / "openvino.xml")
        files["ir"] = str(folder / "openvino.xml")
    except ImportError:
        pass
    try:
        export_ncnn(net, folder / "ncnn.param", precision="fp16")  # pnnx's default output
        files["ncnn_param"], files["ncnn_bin"] = str(folder / "ncnn.param"), str(folder / "ncnn.bin")
    except ImportError:
        pass
    return files


def _interleave(workers: Mapping[str, Worker], results: Mapping[str, Result], rounds: int) -> None:
    """``rounds`` rounds of one forward per live worker, the order rotated each round."""
    keys = [k for k in workers if not results[k].error]
    for r in range(rounds):
        for key in keys[r % max(len(keys), 1):] + keys[:r % max(len(keys), 1)]:
            if results[key].error:
                continue
            time.sleep(PAUSE_S)
            answer = workers[key].ask({"cmd": "run"})
            if answer.get("ok"):
                results[key].times.append(answer["ms"])
            else:
                results[key].error = answer["error"]


def _set_up(
    candidate: Candidate, result: Result, *, yml: str, size: tuple[int, int], threads: int, files: Mapping[str, str],
    reference: Path | None, accuracy_size: tuple[int, int], folder: Path,
) -> Worker | None:
    """Start ``candidate``'s process and build it there (``result`` gets its facts, or its error: then None)."""
    worker = Worker(folder / f"{candidate.key}-{size[1]}x{size[0]}.log")
    spec = {"key": candidate.key, "yml": yml, "size": list(size), "threads": threads, "files": dict(files),
            "reference": str(reference) if reference else None, "accuracy_size": list(accuracy_size)}
    answer = worker.ask({"cmd": "setup", "spec": spec})
    print(f"   set up {candidate.key}: {'ok' if answer.get('ok') else answer['error']}", file=sys.stderr, flush=True)
    if answer.pop("ok"):
        result.info = answer
        return worker
    result.error = answer["error"]
    worker.close()
    return None


def measure_group(
    candidates: tuple[Candidate, ...], *, yml: str, size: tuple[int, int], threads: int, rounds: int, files: Mapping[str, str],
    reference: Path | None, accuracy_size: tuple[int, int], folder: Path, alone: bool = False,
) -> list[Result]:
    """Time every candidate in its own process, ``rounds`` forwards each; the results in ``candidates``' order.

    Side by side (the default): every candidate is set up, then all are timed together in
    interleaved rounds (:func:`_interleave`). ``alone``: one candidate at a time, set up, timed and
    closed before the next one starts, so that the machine holds one worker at a time (large inputs:
    onnxruntime's arena for LKDN x4 at 1280x720 holds 13 GiB, and the 13 candidates together would
    not fit in memory).
    """
    results = {c.key: Result(c) for c in candidates}
    workers: dict[str, Worker] = {}
    try:
        for candidate in candidates:
            worker = _set_up(candidate, results[candidate.key], yml=yml, size=size, threads=threads, files=files,
                             reference=reference, accuracy_size=accuracy_size, folder=folder)
            if worker is None:
                continue
            workers[candidate.key] = worker
            if alone:
                _interleave(workers, results, rounds)
                workers.pop(candidate.key).close()
        _interleave(workers, results, rounds)
    finally:
        for worker in workers.values():
            worker.close()
    return [results[c.key] for c in candidates]


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, pattern)


def section_rows(results: list[Result], *, gflop: float, peaks: Mapping[str, float]) -> list[str]:
    rows = []
    defaults = [r for r in results if r.candidate.default and r.times and not r.error]
    best_default = min((r.median for r in defaults), default=math.nan)
    for r in results:
        c = r.candidate
        if r.error:
            rows.append(f"| {c.label} | {c.precision} | failed: {r.error.splitlines()[0][:160]} | | | | | | |")
            continue
        rate = gflop / (r.median / 1e3)
        bf16_peak = f"{rate / peaks['bf16']:.0%}" if "bf16" in peaks and c.precision in ("bf16", "int8", "default") else "-"
        rows.append(
            f"| {c.label}{' (default)' if c.default else ''} | {c.precision} | {r.median:.1f} | "
            f"{min(r.times):.1f}-{max(r.times):.1f} | {best_default / r.median:.2f}x | "
            f"{_fmt(r.info.get('max_abs'), '.1e')} | {_fmt(r.info.get('psnr'), '.1f')} | {rate:.1f} | "
            f"{rate / peaks['fp32']:.0%} / {bf16_peak} |"
        )
    return rows


def goal_lines(results: list[Result]) -> list[str]:
    timed = [r for r in results if r.times and not r.error]  # a worker that died part-way is a failed row
    by_key = {r.candidate.key: r for r in timed}
    defaults = {r.candidate.label: r.median for r in timed if r.candidate.default}
    lines = []
    if not defaults:
        return ["no default baseline ran"]
    best_label = min(defaults, key=defaults.__getitem__)
    for key in ("auto-fp32", "auto-bf16"):
        if key in by_key:
            r = by_key[key]
            chosen = r.info.get("auto", {}).get("chosen", "?")
            ratio = defaults[best_label] / r.median
            lines.append(
                f"`{r.candidate.label}` (chose {chosen}): {r.median:.1f} ms, {ratio:.2f}x the fastest runtime alone "
                f"with its defaults ({best_label}, {defaults[best_label]:.1f} ms): goal 1.3x "
                f"{'reached' if ratio >= 1.3 else 'not reached'}."
            )
    exact = {r.candidate.label: r.median for r in timed  # the runtimes themselves, not auto's choice of them
             if not r.candidate.key.startswith("auto") and r.info.get("max_abs") is not None
             and r.info["max_abs"] <= EXACT_TOLERANCE}
    if "auto-fp32" in by_key and exact:
        fastest = min(exact, key=exact.__getitem__)
        ratio = by_key["auto-fp32"].median / exact[fastest]
        lines.append(
            f"Exact float32 (max abs <= {EXACT_TOLERANCE:.0e}): `Upscaler(backend='auto')` is {ratio:.2f}x the time of "
            f"the fastest exact float32 candidate ({fastest}, {exact[fastest]:.1f} ms): goal <= 1.2x "
            f"{'reached' if ratio <= 1.2 else 'not reached'}."
        )
    elif "auto-fp32" in by_key:
        lines.append("Exact float32: no accuracy measured in this group (see the first size).")
    return lines


def run(ctx: dict) -> str:
    from lkdn.profiling import conv_counts

    threads = int(ctx.get("threads", 2))
    quick = quick_mode(ctx)
    rounds = int(os.environ.get("LKDN_BENCH_ROUNDS", QUICK_ROUNDS if quick else ROUNDS))
    networks = {k: v for k, v in NETWORKS.items() if not quick or k in QUICK_NETWORKS}
    sizes = QUICK_SIZES if quick else SIZES
    if os.environ.get("LKDN_BENCH_SIZES"):  # e.g. "320x180,1280x720" (W x H of the LR input)
        sizes = tuple((int(h), int(w)) for w, h in (item.split("x") for item in os.environ["LKDN_BENCH_SIZES"].split(",")))
    torch.set_num_threads(threads)
    lines = [
        "## Backends: every CPU runtime and precision side by side",
        "",
        machine_line(threads, cpu_model=False) + ".",
        "",
        f"{'QUICK MODE (a check that the benchmark runs, not a measurement): ' if quick else ''}"
        f"each candidate in its own process pinned to {threads} cores, {rounds} rounds "
        "(one forward of 1x3xHxW per candidate per round) after set-up and one untimed first call; "
        f"at LR {sizes[0][1]}x{sizes[0][0]} every candidate is alive at once and the rounds are interleaved "
        "(rotated order)"
        + (", at the larger sizes one candidate at a time (its process the only one alive: set up, timed and "
           "closed before the next one starts)" if len(sizes) > 1 else "")
        + ". "
        "Columns: median and min-max wall time; speed relative to the fastest runtime used alone with its "
        "defaults (marked *default*); max abs difference and PSNR of the output (clamped to [0, 1]) against PyTorch float32 eager "
        "on a photograph (measured in the first size's group); GFLOP/s = 2 x Multi-Adds / median time, and the "
        "fraction of the dense-convolution rate (float32 / bfloat16; the bfloat16 fraction for reduced-precision "
        "candidates). Measured on a machine shared with other work unless stated otherwise.",
    ]
    with tempfile.TemporaryDirectory(prefix="lkdn-bench-backends-") as tmp:
        folder = Path(tmp)
        roof = Worker(folder / "roofline.log")
        answer = roof.ask({"cmd": "setup", "spec": {"key": "roofline", "threads": threads}})
        roof.close()
        peaks = answer.get("roofline", {"fp32": math.nan})
        lines += ["", f"Dense 3x3 convolution 256->256 at 128x128 (channels_last, PyTorch/oneDNN, best of 5): "
                  f"{peaks.get('fp32', math.nan):.0f} GFLOP/s float32, {peaks.get('bf16', math.nan):.0f} GFLOP/s bfloat16."]
        for name, yml in networks.items():
            print(f"== {name}", file=sys.stderr, flush=True)
            net, scale, weights = load_network(yml)
            net_folder = folder / name.replace(" ", "_").replace("(", "").replace(")", "")
            net_folder.mkdir()
            files = export_files(net, net_folder, scale)
            accuracy_size = sizes[0]
            reference = net_folder / "reference.npy"
            with torch.inference_mode():
                np.save(reference, net(photo(accuracy_size)).numpy())
            for index, size in enumerate(sizes):
                multi_adds = conv_counts(net, (1, 3, *size)).multi_adds
                results = measure_group(
                    CANDIDATES, yml=yml, size=size, threads=threads, rounds=rounds, files=files,
                    reference=reference if index == 0 else None, accuracy_size=accuracy_size, folder=net_folder,
                    alone=index > 0,
                )
                lines += [
                    "", f"### {name}, LR {size[1]}x{size[0]} -> x{scale} ({weights}; {multi_adds / 1e9:.2f} G Multi-Adds)", "",
                    "| candidate | precision | median ms | min-max ms | vs fastest default | max abs vs fp32 | PSNR vs fp32 dB "
                    "| GFLOP/s | of dense conv fp32 / bf16 |",
                    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                ]
                lines += section_rows(results, gflop=2 * multi_adds / 1e9, peaks=peaks)
                lines += [""] + [f"* {line}" for line in goal_lines(results)]
                for r in results:
                    if "auto" in r.info:
                        times = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(r.info["auto"]["times_ms"].items(),
                                                                               key=lambda kv: kv[1]))
                        lines.append(f"* `{r.candidate.label}` first call {r.info['first_ms']:.0f} ms (the choice: {times})")
                    elif r.info.get("describe") and r.candidate.default:
                        lines.append(f"* {r.candidate.label}: {r.info['describe']}")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        print(run({"threads": int(os.environ.get("LKDN_BENCH_THREADS", 2)), "quick": "--quick" in sys.argv}))
