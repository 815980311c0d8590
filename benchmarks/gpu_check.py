"""The GPU check (``make gpu-check``): every CUDA claim of the project, unattended, in under eight minutes.

The claims are the pytest tests of ``tests/gpu/`` (marked ``gpu``; skipped without CUDA); the
timings are the ``bench_*`` functions below, which take a device. This driver runs the tests
with ``--junitxml``, then the timings while time is left, and writes ``<out>/report.json`` (the
raw results) and ``<out>/report.md`` (per check: passed, failed with its message, or skipped
with the reason, and the numbers measured). docs/gpu_check.md describes it.

    python benchmarks/gpu_check.py --out results/gpu_check            # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check     # on the CPU, tiny sizes

Exit status: 0 when nothing failed, 1 otherwise, 2 without a GPU (one line says so).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lkdn.utils import write_atomic, write_text_atomic  # noqa: E402

DRY_ENV, DEADLINE_ENV, WORK_ENV = "LKDN_GPU_CHECK_DRY", "LKDN_GPU_CHECK_DEADLINE", "LKDN_GPU_CHECK_WORK"
LIMIT_S = 450.0
"""The whole run stops here (8 minutes = 480 s, less the interpreter start and the report)."""
TESTS_SHARE = 0.78
"""The part of the run the tests get (the rest: the timings)."""
SCALE = 4
DIV2K_LR = (339, 510)  # a DIV2K-valid-sized LR input (height, width), as the NTIRE harness times
SMALL_LR = (180, 320)  # 1280x720 output
DRY_LR = (24, 36)

# NTIRE 2026 efficient SR, official "Ave Time [ms]" (mean of the valid and test runtimes) on an RTX A6000,
# from the challenge's results.txt / results.json (reference/ntire_esr/2026 in the shared folder).
NTIRE_2026_RUNTIME_MS = {"SPAN": 7.74, "SPANV2": 5.24, "PDS": 6.70, "PKDSR": 6.80, "DISP": 6.51, "DSCF_Fused": 7.88}
NTIRE_2026_GPU = "RTX A6000"
# The same table's SPAN c28 baseline counts (params M, FLOPs G on 256x256, activations M).
SPAN_NTIRE_2026 = {"params_m": 0.151, "flops_g": 9.83, "activations_m": 41.68}
ZOO_OPTIONS = "options/test/*/test_*NTIRE*.yml"
"""The NTIRE zoo entries' option files (SPAN c28, SPANV2, PDS, PKDSR, DISP, DSCF, DSCLoRA, SPANF, EFDN, RLFN, IMDN)."""

# Our models: label, key, options, published checkpoint, Set5 x4 PSNR / SSIM (README, measured with the official
# code), translation-local (tiles are exact).
MODELS = (
    ("LKDN x4", "LKDN_x4", "options/test/LKDN/test_LKDN_x4.yml", "LKDN_x4", (32.39, 0.8980), True),
    ("LKDN-S x4 (training form)", "LKDN-S_x4", "options/test/LKDN/test_LKDN-S_x4.yml", "LKDN-S_x4",
     (32.11, 0.8938), True),
    ("LKDN-S x4 (deploy form)", "LKDN-S_del_rep_x4", "options/test/LKDN/test_LKDN-S_del_rep_x4.yml",
     "LKDN-S_del_rep_x4", (32.11, 0.8938), True),
    ("BSRN x4", "BSRN_x4", "options/test/BSRN/test_BSRN_x4.yml", "BSRN_x4", (32.35, 0.8965), False),
    ("E-RFDN", "E-RFDN", "options/test/RFDN/test_E-RFDN_x4.yml", "RFDN_AIM", (32.16, 0.8946), False),
    ("SPAN c28", "SPAN_c28", "options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml", "SPAN_NTIRE_ESR_c28_x4",
     (31.75, 0.8898), True),
)
DRY_MODELS = ("LKDN_x4", "LKDN-S_x4", "SPAN_c28")
"""The dry run's models (a plain, a foldable and a SPAN network)."""


def dry_run() -> bool:
    return os.environ.get(DRY_ENV) == "1"


def check_device() -> torch.device:
    """The device the check runs on: the CPU in the dry run, else CUDA device 0."""
    return torch.device("cpu") if dry_run() else torch.device("cuda", 0)


def models() -> tuple[tuple[Any, ...], ...]:
    return tuple(m for m in MODELS if m[1] in DRY_MODELS) if dry_run() else MODELS


def work_dir() -> Path:
    path = Path(os.environ.get(WORK_ENV) or ROOT / "results" / "gpu_check" / "work")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# networks, weights, images (shared with tests/gpu)


def small_overrides(options: str | Path) -> list[str]:
    """``--force_yml`` entries: in the dry run, the architecture's small test configuration; else none."""
    from lkdn.archs import our_architectures
    from lkdn.options import load_yaml

    if not dry_run():
        return []
    small = our_architectures()[load_yaml(ROOT / options)["network_g"]["type"]].test_options
    return [f"network_g:{key}={json.dumps(value)}" for key, value in small.items()]


def weights_for(options: str | Path, checkpoint: str | None) -> tuple[Path, bool]:
    """(weights file, published?): the published checkpoint when found (not in the dry run), else random
    weights (seed 0) written once under the work folder."""
    from lkdn.archs import build_network
    from lkdn.options import load_options
    from lkdn.zoo import find_checkpoint

    found = None if dry_run() or checkpoint is None else find_checkpoint(checkpoint)
    if found is not None:
        return found, True
    path = work_dir() / "weights" / f"{Path(options).stem}{'_small' if dry_run() else ''}.pth"
    if not path.exists():
        torch.manual_seed(0)
        state = build_network(load_options(ROOT / options, overrides=small_overrides(options)).network_g).state_dict()
        write_atomic(path, lambda handle: torch.save({"params": state, "params_ema": state}, handle))
    return path, False


def load_model(options: str | Path, checkpoint: str | None, device: torch.device | str) -> tuple[Any, bool]:
    """(network in eval mode on ``device``, published weights?)."""
    from lkdn.loading import load_network_from_options
    from lkdn.options import load_options

    weights, published = weights_for(options, checkpoint)
    opt = load_options(ROOT / options, overrides=small_overrides(options))
    return load_network_from_options(opt, weights=weights, device=device), published


def smooth_image(height: int, width: int, *, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """A photograph-like random LR image (smooth shapes plus fine detail), 1x3xHxW in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 8, 2), max(width // 8, 2), generator=generator)
    detail = torch.rand(1, 3, height, width, generator=generator) * 0.15
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (image + detail).clamp(0, 1).to(device)


# ---------------------------------------------------------------------------------------------
# timings: each takes a device and returns its rows


def bench_ntire_runtime(device: torch.device) -> dict[str, Any]:
    """The NTIRE harness runtime of our models and of every zoo entry with an option file (``measure_runtime(ntire=True)``: the
    submitted fp32 form, batch 1, no warm-up of the network, cudnn.benchmark off, CUDA events around the forward only,
    a fresh input per run, mean of 20) at 510x339, with params, FLOPs, activations and peak memory, next to the
    official NTIRE 2026 runtime (measured on an RTX A6000, not this GPU)."""
    from lkdn import profiling
    from lkdn.options import load_options
    from lkdn.reparam import reparameterize_model
    from lkdn.zoo import checkpoint_for_path

    runs, shape = (2, DRY_LR) if device.type == "cpu" else (20, DIV2K_LR)
    if device.type == "cuda":  # the CUDA context and cuDNN exist before the first timed network
        torch.nn.functional.conv2d(torch.rand(1, 3, 8, 8, device=device), torch.rand(3, 3, 3, 3, device=device))
    rows: dict[str, Any] = {}
    ours = [(m[2], m[3]) for m in models() if m[1] != "SPAN_c28"]  # our models, in their deploy forms
    zoo = [(o, checkpoint_for_path(load_options(o)["path"].get("pretrain_network_g") or ""))
           for o in sorted(glob.glob(str(ROOT / ZOO_OPTIONS)))]
    for options, checkpoint in ours + zoo:
        kind = load_options(ROOT / options).network_g["type"]
        net, published = load_model(options, checkpoint, device)
        # the zoo's submitted forms as the harness runs them; ours folded as we would submit them
        deploy = reparameterize_model(net, fold_num_in=True).eval() if (options, checkpoint) in ours else net.eval()
        for p in deploy.parameters():
            p.requires_grad_(False)
        counts = profiling.ntire_counts(deploy, (1, 3, 64, 64) if device.type == "cpu" else profiling.NTIRE_FLOPS_INPUT)
        x = smooth_image(*shape, device=device)
        runtime = profiling.measure_runtime(deploy, x, runs=runs, ntire=True)
        rows[Path(options).stem.removeprefix("test_")] = {
            "type": kind, "published_weights": published, "runtime_ms": runtime["mean_ms"],
            "official_2026_ms": NTIRE_2026_RUNTIME_MS.get(kind), "params_m": counts.params / 1e6,
            "flops_g": None if counts.flops is None else counts.flops / 1e9, "activations_m": counts.activations / 1e6,
            "convs": counts.convs, "peak_mb": profiling.peak_memory(deploy, x)["peak_mb"]}
    return {"input": list(shape), "official_gpu": NTIRE_2026_GPU, "span_2026_counts": SPAN_NTIRE_2026, "rows": rows}


def bench_inference(device: torch.device) -> dict[str, Any]:
    """Our models: eager fp32 and ``Upscaler`` fp32 / bf16 / fp16, warmed median and peak memory, at 510x339 and
    320x180 (the dry run: one tiny size; fp16 runs as bf16 there, CPU float16 autocast being emulated)."""
    from lkdn import profiling
    from lkdn.upscaler import Upscaler

    runs, warmup, sizes = (2, 1, (DRY_LR,)) if device.type == "cpu" else (20, 5, (DIV2K_LR, SMALL_LR))
    rows: dict[str, Any] = {}
    for label, _key, options, checkpoint, _published, _local in models():
        net, _ = load_model(options, checkpoint, device)
        forwards = {"eager fp32": net}
        for p in ("fp32", "bf16", "fp16"):
            precision = "bf16" if device.type == "cpu" and p == "fp16" else p
            forwards[f"Upscaler {p}"] = Upscaler(net, scale=SCALE, device=device, precision=precision)
        for height, width in sizes:
            x = smooth_image(height, width, device=device)
            rows[f"{label} at {width}x{height}"] = row = {}
            for name, forward in forwards.items():
                row[f"{name} ms"] = profiling.measure_runtime(forward, x, runs=runs, warmup=warmup)["median_ms"]
                row[f"{name} MB"] = profiling.peak_memory(forward, x)["peak_mb"]
        del net, forwards
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"runs": runs, "warmup": warmup, "rows": rows}


BENCHES = (("NTIRE harness runtime (ours and the zoo)", bench_ntire_runtime, 90),
           ("inference speed and memory", bench_inference, 60))


# ---------------------------------------------------------------------------------------------
# the driver


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``TimeoutError`` in the main thread when the block runs longer than ``seconds`` (``signal.setitimer``)."""
    def overrun(signum: int, frame: Any) -> None:
        raise TimeoutError(f"over its {seconds:.3g} s limit")

    previous = signal.signal(signal.SIGALRM, overrun)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_benches(device: torch.device, deadline: float) -> dict[str, Any]:
    """Each bench within its own limit and the time left; a failure is recorded, not raised."""
    results: dict[str, Any] = {}
    for title, bench, limit in BENCHES:
        left = int(min(limit, deadline - time.monotonic()))
        if left < 5:
            results[title] = {"status": "skipped", "message": "no time left in the 8-minute run"}
            continue
        start = time.monotonic()
        try:
            with time_limit(left):
                results[title] = {"status": "passed", "results": bench(device)}
        except Exception as err:  # noqa: BLE001 - reported, and the next bench runs
            results[title] = {"status": "failed", "message": f"{type(err).__name__}: {err}"}
        results[title]["seconds"] = time.monotonic() - start
    return results


def read_junit(path: Path) -> list[dict[str, Any]]:
    """Per test case of a junit XML file: name, status (passed / failed / skipped), message, seconds, properties."""
    if not path.is_file():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        row: dict[str, Any] = {"name": case.get("name"), "seconds": float(case.get("time") or 0), "status": "passed",
                               "message": "", "properties": {}}
        for prop in case.iter("property"):
            value = prop.get("value")
            try:  # record_property writes str(value)
                row["properties"][prop.get("name")] = ast.literal_eval(value)
            except (TypeError, ValueError, SyntaxError):
                row["properties"][prop.get("name")] = value
        for tag, status in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                row["status"] = status
                message = found.get("message") or (found.text or "").strip().splitlines()[-1:] or [""]
                row["message"] = (message if isinstance(message, str) else message[0]).strip()
                break
        cases.append(row)
    return cases


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_runtime": torch.version.cuda, "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=15).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            driver = f"nvidia-smi: {err}"
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), driver=driver,
                   gpus=torch.cuda.device_count(), cudnn=torch.backends.cudnn.version(),
                   nccl=str(torch.cuda.nccl.version()), capability=f"{props.major}.{props.minor}")
    else:
        env["gpu"] = "none (dry run on the CPU)"
    return env


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# GPU check{' (DRY RUN on the CPU: no CUDA claim is checked)' if report['dry_run'] else ''}", "",
             f"{env['gpu']}; torch {env['torch']} (CUDA {env['cuda_runtime']}), Python {env['python']}; "
             f"{report['started']}, {report['wall_s']:.0f} s. Checks: " +
             ", ".join(f"{n} {s}" for s, n in report["counts"].items()) + ".", "",
             "## Checks (tests/gpu)", "", "| check | status | seconds | numbers / message |", "| --- | --- | ---: | --- |"]
    for case in report["tests"]:
        detail = "; ".join(f"{k} {_fmt(v)}" for k, v in case["properties"].items())
        if case["message"]:
            detail = f"{case['message'][:300]}" + (f"; {detail}" if detail else "")
        lines.append(f"| `{case['name']}` | {case['status']} | {case['seconds']:.1f} | "
                     f"{detail.replace('|', '/').replace(chr(10), ' ')} |")
    if report["pytest"]["status"] != 0:
        lines += ["", f"pytest exit status {report['pytest']['status']} (log: `pytest.log`)."]
    for title, bench in report["benches"].items():
        lines += ["", f"## {title}", ""]
        if bench["status"] != "passed":
            lines.append(f"{bench['status']}: {bench['message']}")
            continue
        rows = bench["results"]["rows"]
        columns = list(next(iter(rows.values()), {}))
        lines += ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
        lines += [f"| {name} | " + " | ".join(_fmt(row[c]) for c in columns) + " |" for name, row in rows.items()]
        if "official_gpu" in bench["results"]:
            lines += ["", f"Runtime: on {env['gpu']}; official NTIRE 2026 runtimes on an {NTIRE_2026_GPU} "
                      f"(SPAN c28: 7.74 ms). NTIRE 2026 published SPAN counts: {SPAN_NTIRE_2026}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check", help="report folder")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes (tests the check itself)")
    parser.add_argument("--shared", type=Path, help="reference weights and Set5 (sets $LKDN_SHARED)")
    parser.add_argument("-k", dest="select", help="only the checks whose names match (pytest -k)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, start = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), time.monotonic()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); "
              "use --dry-run to test the check on the CPU", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(1)  # the dry run shares a small CPU machine
    out = args.out.resolve()
    (out / "work").mkdir(parents=True, exist_ok=True)
    deadline = start + (LIMIT_S if not args.dry_run else 240.0)
    os.environ.update({"LKDN_OFFLINE": "1", WORK_ENV: str(out / "work"), DRY_ENV: "1" if args.dry_run else "0",
                       "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
                       DEADLINE_ENV: str(time.time() + (deadline - start) * TESTS_SHARE)})
    if args.shared:
        os.environ["LKDN_SHARED"] = str(args.shared.resolve())
    elif "LKDN_SHARED" not in os.environ and (ROOT / "shared" / "pretrained").is_dir():
        os.environ["LKDN_SHARED"] = str(ROOT / "shared")
    # --noconftest: tests/conftest.py needs hypothesis, which the GPU machine lacks; tests/gpu does not use it
    command = [sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu",
               f"--junitxml={out / 'junit.xml'}", "-o", "junit_logging=no", "-o", "junit_family=xunit1"]
    if args.select:
        command += ["-k", args.select]
    with open(out / "pytest.log", "w", encoding="utf-8") as log:
        try:  # the tests stop themselves at the deadline; this is the last resort
            status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=(deadline - start) * TESTS_SHARE + 30).returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
    device = check_device()
    tests = read_junit(out / "junit.xml")
    benches = run_benches(device, deadline)
    statuses = [c["status"] for c in tests] + [b["status"] for b in benches.values()]
    report = {"dry_run": args.dry_run, "started": started, "environment": environment(device),
              "pytest": {"command": command[2:], "status": status}, "tests": tests, "benches": benches,
              "counts": {s: statuses.count(s) for s in ("passed", "failed", "skipped")}}
    report["wall_s"] = time.monotonic() - start
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, default=str))
    write_text_atomic(out / "report.md", markdown(report))
    print(f"gpu_check: {report['counts']} in {report['wall_s']:.0f} s; report: {out / 'report.md'}")
    return 0 if status == 0 and "failed" not in statuses and tests else 1


if __name__ == "__main__":
    sys.exit(main())
