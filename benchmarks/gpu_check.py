"""The GPU path, proven: every CUDA claim of the project checked in under eight minutes (``make gpu-check``).

Runs unattended on a machine with NVIDIA GPUs and no network, and writes its evidence:
``<out>/report.json`` (every number, every check with its tolerance) and ``<out>/report.md``
(for docs/benchmarks.md), plus one log per step under ``<out>/logs/``. What each step checks
and why each tolerance is what it is: docs/gpu_check.md.

On the GPU machine (its own Python 3.12 and torch; the other wheels made beforehand with
``make gpu-wheels``, i.e. ``python scripts/make_gpu_wheels.py --dest .whl``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
    python3 benchmarks/gpu_check.py --out $OUT/gpu_check

Without a GPU the script says so in one line and exits with status 2. On the CPU, for testing
the script itself: ``python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check`` runs every
step at tiny sizes (tiny networks, inputs and iteration counts; the GPU-only parts replaced by
their CPU equivalents, each labelled so) in about a minute on 2 CPU cores.

Steps, in order, each in its own process (forked from this one, or ``--isolation spawn``) with
its own time budget in seconds; a step over its budget is killed (with its children) and
reported as ``timeout``, keeping what it had written, and the next step runs:

=================  ======  =========================================================================
step               budget  what it checks
=================  ======  =========================================================================
environment        10      GPU, driver, CUDA, cuDNN, torch, Python; the imports lkdn needs
correctness        45      ``lkdn/test.py`` on Set5, CUDA vs CPU (0.01 dB) and vs the published numbers
numerics           30      ``Upscaler`` fp32 CUDA vs CPU (1e-4), bf16 / fp16 tolerances, exact tiles
counts             25      params, NTIRE FLOPs, activations, convs of the deploy forms (256x256 LR)
inference          65      eager / Upscaler fp32, bf16, fp16 / NTIRE harness timing; peak memory
training           45      LKDN x4 recipe step (batch 64, HR 192, Adan, EMA): fp32 / bf16 / fp16 x NCHW / NHWC
training_loader    35      the same through ``train_pipeline`` with an LMDB and 6 loader workers
resume             30      deterministic N/2 + N/2 against N on CUDA: bit-identical weights
distributed        30      ``torchrun`` with nccl on every visible GPU
sigterm            20      SIGTERM during a CUDA run saves a state; ``--auto_resume`` continues
oom                25      a truly large image falls back to tiles (``lkdn.tiling.run_network``)
inference_compile  40+     ``Upscaler(compile=True)``: compile time and speed
training_compile   40+     ``train.compile``: compile time and speed, loss against eager
=================  ======  =========================================================================

The budgets sum to 440 s; the whole run stops at 465 s (``--limit``), before eight minutes. The
two compile steps (``+``) also get the time the steps before them left unused. The dry run's
budgets are smaller (they sum to 240 s, its limit is 260 s; it takes about a minute).

Options: ``--out DIR`` (default ``results/gpu_check``), ``--dry-run``, ``--only STEP ...``,
``--budget STEP=SECONDS``, ``--shared DIR`` (reference weights and Set5, as ``$LKDN_SHARED``;
default: ``$LKDN_SHARED``, else ``shared/`` in the checkout when it holds ``pretrained/``, else
lkdn.zoo's lookup order). Failure injection, for the test of this script:
``--fail STEP`` (or ``LKDN_GPU_CHECK_FAIL=step,step``) makes a step raise at its start;
``--hang STEP`` (or ``LKDN_GPU_CHECK_HANG``) makes it sleep past its budget. Exit status: 0 when
every step that ran passed, 1 otherwise, 2 without a GPU.
"""

from __future__ import annotations

import os
import sys
import time

_STARTED = time.monotonic()
# Before torch is imported: the CUDA presence check through NVML does not initialize CUDA, so
# this process can fork one child per step, each of which initializes CUDA for itself.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
os.environ["LKDN_OFFLINE"] = "1"  # never any network, here or in the children

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import lkdn  # noqa: E402 (registers the architectures, datasets and models)
from lkdn import profiling  # noqa: E402
from lkdn.archs import build_network, our_architectures  # noqa: E402
from lkdn.loading import load_network_from_options  # noqa: E402
from lkdn.options import load_options, load_yaml  # noqa: E402
from lkdn.reparam import reparameterize_model  # noqa: E402
from lkdn.upscaler import Upscaler  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "gpu_check"
LIMIT_S = 465.0
"""The whole run stops here (8 minutes = 480 s, less the interpreter start and the report)."""
SOFT_MARGIN_S = 1.5
"""A step stops starting new work this long before its budget ends."""
FAIL_ENV, HANG_ENV = "LKDN_GPU_CHECK_FAIL", "LKDN_GPU_CHECK_HANG"

TRAIN_YML = ROOT / "options" / "train" / "LKDN" / "train_LKDN_x4.yml"
SCALE = 4
DIV2K_LR = (339, 510)  # a DIV2K-valid-sized LR input (height, width)
SMALL_LR = (180, 320)  # 1280x720 output
DRY_SIZES = ((24, 36), (16, 20))

# Tolerances (docs/gpu_check.md says where each comes from).
PSNR_TOL, SSIM_TOL = 0.01, 0.0005  # README / tests: every published row to 0.01 dB / 0.0005
FP32_TOL = 1e-4  # docs/deployment.md and lkdn.Upscaler: float32 within 1e-4 (max abs, images in [0, 1])
FP16_TOL = 1e-2  # docs/deployment.md: float16 within 1e-2 (max abs)
# bf16: docs/deployment.md gives no figure; measured on the CPU (Set5 LR, official weights, max / mean abs):
# LKDN x4 0.020 / 0.0033 (baby; lkdn.Upscaler's docstring), LKDN-S 0.041 / 0.0024, SPAN c28 0.046 / 0.0020
BF16_TOL, BF16_MEAN_TOL = 0.1, 5e-3
TILE_TOL = 1e-5  # exact tiles: the same arithmetic, up to the kernels cuDNN picks per tile shape
TRAIN_LOSS_TOL = {"fp32": 0.01, "amp": 0.05}  # relative, mean loss of the last 5 of N steps, against fp32 NCHW
RESUME_TOL = 1e-6  # bit-identical expected in deterministic mode; up to this is reported as "within tolerance"
LOADER_KEEPS_UP = 0.9  # the loader keeps up when it reaches this fraction of the in-memory rate
OOM_CAP_BYTES, OOM_FACTOR = 8 * 2**30, 3.0  # the OOM image needs about 3x the memory the process may use (8 GiB)

# NTIRE 2026 efficient SR challenge, the published SPAN baseline (results.txt; RTX A6000, not this GPU).
SPAN_NTIRE_2026 = {"runtime_ms": 7.74, "params_m": 0.151, "flops_g": 9.83, "activations_m": 41.68, "gpu": "RTX A6000"}


class Model(NamedTuple):
    """One network of the check: its test options, published checkpoint and published Set5 x4 numbers."""

    label: str
    key: str
    options: str
    checkpoint: str
    published: tuple[float, float]  # Set5 x4 PSNR / SSIM (Y, crop 4), measured with the official code
    translation_local: bool


MODELS = (
    Model("LKDN x4", "LKDN_x4", "options/test/LKDN/test_LKDN_x4.yml", "LKDN_x4", (32.39, 0.8980), True),
    Model("LKDN-S x4 (training form)", "LKDN-S_x4", "options/test/LKDN/test_LKDN-S_x4.yml", "LKDN-S_x4",
          (32.11, 0.8938), True),
    Model("LKDN-S x4 (deploy form)", "LKDN-S_del_rep_x4", "options/test/LKDN/test_LKDN-S_del_rep_x4.yml",
          "LKDN-S_del_rep_x4", (32.11, 0.8938), True),
    Model("BSRN x4", "BSRN_x4", "options/test/BSRN/test_BSRN_x4.yml", "BSRN_x4", (32.35, 0.8965), False),
    Model("E-RFDN", "E-RFDN", "options/test/RFDN/test_E-RFDN_x4.yml", "RFDN_AIM", (32.16, 0.8946), False),
    Model("SPAN c28", "SPAN_c28", "options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml", "SPAN_NTIRE_ESR_c28_x4",
          (31.75, 0.8898), True),
)

DRY_MODELS = ("LKDN_x4", "LKDN-S_x4", "SPAN_c28")
"""The models of the dry run's numerics, counts and inference steps (correctness runs every model)."""

logger = logging.getLogger("gpu_check")


def models_for(ctx: Context) -> tuple[Model, ...]:
    """Every model on the GPU; in the dry run, a subset covering a plain, a foldable and a SPAN network."""
    return tuple(m for m in MODELS if m.key in DRY_MODELS) if ctx.dry else MODELS


# =============================================================================================
# what a step has: its device, its time, its results


class InjectedFailureError(RuntimeError):
    """The failure ``--fail`` / ``LKDN_GPU_CHECK_FAIL`` asks for."""


class Context:
    """What a step runs with (device, sizes, time left) and what it records (results, checks, notes).

    Everything recorded is written to ``<out>/steps/<step>.json`` at once, so a step killed at its
    budget still leaves what it had measured.
    """

    def __init__(self, step: str, out: Path, *, dry: bool, timeout_s: float) -> None:
        self.step, self.out, self.dry = step, out, dry
        self.device = torch.device("cpu" if dry else "cuda", None if dry else 0)
        self.deadline = time.monotonic() + timeout_s - SOFT_MARGIN_S
        self.work = out / "work" / step
        self.work.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"step": step, "results": {}, "checks": [], "notes": [], "finished": False}
        self.save()

    # --- time
    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def has_time(self, seconds: float = 0.0, *, what: str = "") -> bool:
        """True when ``seconds`` remain; else a note that ``what`` was not started for lack of time."""
        if self.time_left() > seconds:
            return True
        if what:
            self.note(f"not started, the budget is spent: {what}")
        return False

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- records
    @property
    def results(self) -> dict[str, Any]:
        return self.data["results"]

    def record(self, key: str, value: Any) -> None:
        self.results[key] = value
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def check(self, name: str, value: Any, limit: Any, *, op: str = "<=", required: bool = True,
              detail: str = "") -> bool:
        """Record one check ``value op limit``; a non-finite value fails every comparison."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and not math.isfinite(value):
            passed = False
        elif op == "<=":
            passed = value <= limit
        elif op == ">=":
            passed = value >= limit
        elif op == ">":
            passed = value > limit
        elif op == "==":
            passed = value == limit
        else:
            raise ValueError(f"unknown comparison {op!r}")
        self.data["checks"].append({"name": name, "value": value, "op": op, "limit": limit, "passed": bool(passed),
                                    "required": required, "detail": detail})
        self.save()
        return bool(passed)

    def save(self) -> None:
        write_json(self.out / "steps" / f"{self.step}.json", self.data)


def jsonable(value: Any) -> Any:
    """Plain JSON: non-finite floats become the strings ``nan``/``inf``; tensors and paths become numbers / text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=1, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_command(command: list[str], *, cwd: Path, timeout: float, log: Path, env: dict[str, str] | None = None) -> int:
    """Run ``command`` (output to ``log``) in its own process group, killed with it after ``timeout``; its status."""
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            return process.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"{command[:4]}... still running after {timeout:.0f} s (killed)") from None


def child_env() -> dict[str, str]:
    """The environment of a command-line child: this checkout importable first, no network."""
    env = dict(os.environ, LKDN_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    return env


def load_module(path: Path, name: str) -> Any:
    """A script or benchmark of this checkout as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# =============================================================================================
# networks, weights, images


def model_overrides(model: Model, *, dry: bool) -> list[str]:
    """``--force_yml`` entries for ``model``: in the dry run, the architecture's small test configuration."""
    if not dry:
        return []
    network = load_yaml(ROOT / model.options)["network_g"]
    small = our_architectures()[network["type"]].test_options
    return [f"network_g:{key}={json.dumps(value)}" for key, value in small.items()]


def model_weights(ctx: Context, model: Model) -> tuple[Path, str]:
    """The weights file for ``model`` and what they are: the published checkpoint, or random weights.

    Random weights (seed 0) are written once under ``<out>/work/weights``: always in the dry run
    (small networks), and on the GPU when the published file is not found (the published-number
    check is then skipped, everything else runs).
    """
    from lkdn.zoo import find_checkpoint

    if not ctx.dry:
        found = find_checkpoint(model.checkpoint)
        if found is not None:
            return found, "published"
    path = ctx.out / "work" / "weights" / f"{model.key}{'_small' if ctx.dry else ''}.pth"
    if not path.exists():
        opt = load_options(ROOT / model.options, overrides=model_overrides(model, dry=ctx.dry))
        torch.manual_seed(0)
        state = build_network(opt.network_g).state_dict()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params": state, "params_ema": state}, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    kind = "random (small test configuration, dry run)" if ctx.dry else "random (published file not found)"
    return path, kind


def load_model(ctx: Context, model: Model, device: torch.device | str) -> nn.Module:
    """``model``'s network with its weights, in eval mode on ``device`` (the one loader of the project)."""
    weights, _ = model_weights(ctx, model)
    opt = load_options(ROOT / model.options, overrides=model_overrides(model, dry=ctx.dry))
    return load_network_from_options(opt, weights=weights, device=device)


def test_images(ctx: Context) -> tuple[Path, Path, str]:
    """(HR folder, LR folder, description): Set5 x4 from lkdn.zoo's lookup order, else the built-in demo images."""
    from lkdn.zoo import find_benchmark

    found = find_benchmark("Set5", SCALE)
    if found is not None:
        return found[0], found[1], f"Set5 x4 ({found[1].parent})"
    root = ctx.out / "work" / "demo_data"
    hr, lr = root / "test" / f"GTmod{SCALE}", root / "test" / f"LRbicx{SCALE}"
    if not (hr.is_dir() and lr.is_dir()):
        demo = load_module(ROOT / "scripts" / "data_preparation" / "make_demo_data.py", "make_demo_data")
        demo.make_demo_data(root, scale=SCALE)
    return hr, lr, "built-in demo images (coffee, chelsea; Set5 not found)"


def read_lr_images(folder: Path, *, limit: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """The images of ``folder`` as 1x3xHxW RGB float tensors in [0, 1] (cropped to ``limit`` pixels a side)."""
    images = []
    for path in sorted(folder.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
        if limit:
            image = image[:limit, :limit]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        images.append((path.stem, tensor))
    return images


def smooth_image(height: int, width: int, *, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """A photograph-like random LR image (smooth shapes plus fine detail), 1x3xHxW in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 8, 2), max(width // 8, 2), generator=generator)
    detail = torch.rand(1, 3, height, width, generator=generator) * 0.15
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False) + detail
    return image.clamp(0, 1).to(device)


def write_pairs(folder: Path, *, count: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """``count`` synthetic HR sub-images (``size`` square PNGs) and their x4 LR images; (HR folder, LR folder)."""
    hr_dir, lr_dir = folder / "HR", folder / f"LRx{SCALE}"
    if hr_dir.is_dir() and len(list(hr_dir.glob("*.png"))) == count:
        return hr_dir, lr_dir
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        hr = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        hr = np.clip(hr.astype(np.int16) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
        name = f"img{i:04d}.png"
        cv2.imwrite(str(hr_dir / name), hr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        lr = cv2.resize(hr, (size // SCALE, size // SCALE), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(lr_dir / name), lr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    return hr_dir, lr_dir


def training_options(ctx: Context, name: str, hr: Path, lr: Path, *, batch: int, gt_size: int, total_iter: int,
                     workers: int, lmdb: bool = False, save_every: int = 10**9, enlarge: int | None = None,
                     ) -> dict[str, Any]:
    """The official LKDN x4 recipe (options/train/LKDN/train_LKDN_x4.yml) on the given data, without validation.

    In the dry run the network is LKDN's small test configuration and the run is on the CPU.
    ``enlarge``: ``dataset_enlarge_ratio`` (default the recipe's).
    """
    opt = load_yaml(TRAIN_YML)
    opt["name"] = name
    opt["num_gpu"] = 0 if ctx.dry else 1
    train_set = opt["datasets"]["train"]
    train_set.update(name="synthetic", dataroot_gt=str(hr), dataroot_lq=str(lr), gt_size=gt_size,
                     batch_size_per_gpu=batch, num_worker_per_gpu=workers,
                     io_backend={"type": "lmdb" if lmdb else "disk"})
    if enlarge is not None:
        train_set["dataset_enlarge_ratio"] = enlarge
    opt["datasets"] = {"train": train_set}
    opt.pop("val", None)
    if ctx.dry:
        opt["network_g"].update(our_architectures()["LKDN"].test_options)
    opt["train"]["total_iter"] = total_iter
    opt["logger"].update(print_freq=1, save_checkpoint_freq=save_every, use_tb_logger=False)
    opt["logger"].pop("wandb", None)
    opt["manual_seed"] = 0
    return opt


def write_options(ctx: Context, opt: dict[str, Any]) -> Path:
    import yaml

    path = ctx.work / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
    return path


def train_log(root: Path, name: str) -> list[dict[str, Any]]:
    path = root / "experiments" / name / "train_log.jsonl"
    lines = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@contextmanager
def captured(logger_name: str, pattern: str) -> Iterator[list[logging.LogRecord]]:
    """The records of ``logger_name`` whose message contains ``pattern``, while the block runs."""
    records: list[logging.LogRecord] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if pattern in record.getMessage():
                records.append(record)

    handler = Handler(level=logging.DEBUG)
    target = logging.getLogger(logger_name)
    target.addHandler(handler)
    try:
        yield records
    finally:
        target.removeHandler(handler)


# =============================================================================================
# 0. environment


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module\s+(\S+)", text)
        return match.group(1) if match else text.splitlines()[0]
    except OSError:
        return None


def _packages(modules: tuple[str, ...]) -> dict[str, Any]:
    """For each top-level module: the distribution that provides it, its version and where it is installed."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, Any] = {}
    for module in modules:
        spec = importlib.util.find_spec(module)
        location = str(Path(spec.origin).parent.parent) if spec is not None and spec.origin else None
        for dist in providers.get(module, []) or [module]:
            try:
                found[dist] = {"module": module, "version": importlib.metadata.version(dist), "location": location}
            except importlib.metadata.PackageNotFoundError:
                found[dist] = {"module": module, "version": None, "location": location}
    return found


def step_environment(ctx: Context) -> None:
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "cuda_runtime": torch.version.cuda, "lkdn": lkdn.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if ctx.dry:
        env["gpus"] = []
        env["device"] = "cpu (dry run)"
        ctx.note("dry run: no GPU is looked for; the CPU stands in for it in every step")
    else:
        env["device_count"] = torch.cuda.device_count()
        env["gpus"] = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            env["gpus"].append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                "capability": f"{props.major}.{props.minor}",
                                "multiprocessors": props.multi_processor_count})
        env["device"] = env["gpus"][0]["name"] if env["gpus"] else None
        env["driver"] = _driver_version()
        try:
            version = torch._C._cuda_getDriverVersion()  # e.g. 12080: the CUDA version the driver supports
            env["cuda_driver_api"] = f"{version // 1000}.{version % 1000 // 10}"
        except (AttributeError, RuntimeError):
            env["cuda_driver_api"] = None
        try:
            env["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except (AttributeError, RuntimeError, TypeError):
            env["nccl"] = None
        env["tf32"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                       "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        ctx.check("a CUDA device is visible", torch.cuda.device_count(), 1, op=">=")
    ctx.record("environment", env)
    ctx.record("packages", _packages(("torch", "torchvision", "timm", "basicsr", "numpy", "cv2", "skimage", "scipy",
                                      "lmdb", "fvcore", "iopath", "safetensors", "tensorboard", "yaml", "tqdm",
                                      "addict", "yapf", "setuptools")))
    # what lkdn needs at run time, each import on its own
    imports: dict[str, str] = {}
    for module in ("basicsr.archs.arch_util", "basicsr.data", "basicsr.losses", "basicsr.metrics", "lmdb",
                   "timm.optim", "fvcore.nn", "safetensors.torch", "lkdn.training.pipeline", "lkdn.test"):
        try:
            importlib.import_module(module)
            imports[module] = "ok"
        except Exception as err:  # noqa: BLE001 - each failure is reported, not raised
            imports[module] = f"{type(err).__name__}: {err}"
    distutils = sys.modules.get("distutils")
    imports["distutils (basicsr's LooseVersion, gone from Python 3.12's stdlib)"] = (
        getattr(distutils, "__file__", "not imported") if distutils else "not imported")
    ctx.record("imports", imports)
    from lkdn.utils.checkpoint import MIN_TORCH, require_safe_torch

    try:
        require_safe_torch()
        gate = "ok"
    except ImportError as err:
        gate = str(err)
    ctx.record("torch_gate", {"min_torch": ".".join(map(str, MIN_TORCH)), "result": gate})
    ctx.record("ntire_counts_available", hasattr(profiling, "ntire_counts"))
    ctx.check("torch >= 2.10 (lkdn.utils.checkpoint.require_safe_torch)", gate, "ok", op="==")
    failed = [m for m, r in imports.items() if r != "ok" and not m.startswith("distutils")]
    ctx.check("every run-time import of lkdn works", len(failed), 0, op="==", detail=", ".join(failed))


# =============================================================================================
# 1. correctness: lkdn/test.py on Set5, CUDA against the CPU and the published numbers


def _test_run(ctx: Context, model: Model, device: str, hr: Path, lr: Path, *, label: str) -> dict[str, Any]:
    """``lkdn/test.py`` (its ``main``) for ``model`` on ``device``; Set5 means, per-image scores and seconds."""
    from lkdn.test import main as test_main

    weights, _ = model_weights(ctx, model)
    argv = ["-opt", str(ROOT / model.options), "--device", device, "--root", str(ctx.work / label), "--force_yml",
            f"datasets:test_1:dataroot_gt={hr}", f"datasets:test_1:dataroot_lq={lr}",
            f"path:pretrain_network_g={weights}", "val:save_img=false", *model_overrides(model, dry=ctx.dry)]
    start = time.perf_counter()
    metrics = test_main(argv)["Set5"]
    return {"psnr": metrics["psnr"], "ssim": metrics["ssim"], "seconds": time.perf_counter() - start,
            "per_image": metrics.get("per_image", {})}


def step_correctness(ctx: Context) -> None:
    hr, lr, source = test_images(ctx)
    ctx.record("data", source)
    if ctx.dry:
        ctx.note("dry run: the 'CUDA' runs are on the CPU; small networks with random weights (no published numbers)")
    rows: dict[str, Any] = {}
    ctx.record("models", rows)
    for model in MODELS:  # the GPU runs first: they are what this step is for
        if not ctx.has_time(3, what=f"{model.label} on CUDA"):
            break
        _, kind = model_weights(ctx, model)
        rows[model.key] = {"label": model.label, "weights": kind,
                           "published": dict(zip(("psnr", "ssim"), model.published, strict=True)),
                           "cuda": _test_run(ctx, model, ctx.device.type, hr, lr, label="cuda")}
        ctx.save()
    for model in MODELS:  # then the CPU reference, while time allows
        if model.key in rows and ctx.has_time(5, what=f"{model.label} CPU reference (published numbers used)"):
            rows[model.key]["cpu"] = _test_run(ctx, model, "cpu", hr, lr, label="cpu")
            ctx.save()
    for row in rows.values():
        gpu, cpu = row["cuda"], row.get("cpu")
        if cpu is not None:
            ctx.check(f"{row['label']}: |PSNR cuda - cpu| (dB)", abs(gpu["psnr"] - cpu["psnr"]), PSNR_TOL)
            ctx.check(f"{row['label']}: |SSIM cuda - cpu|", abs(gpu["ssim"] - cpu["ssim"]), SSIM_TOL)
            gaps = [abs(g["psnr"] - cpu["per_image"][n]["psnr"]) for n, g in gpu["per_image"].items()
                    if g.get("psnr") is not None and (cpu["per_image"].get(n) or {}).get("psnr") is not None]
            row["largest_per_image_gap_db"] = max(gaps) if gaps else None
        if row["weights"] == "published" and source.startswith("Set5"):
            ctx.check(f"{row['label']}: |PSNR cuda - published| (dB)", abs(gpu["psnr"] - row["published"]["psnr"]),
                      PSNR_TOL)
            ctx.check(f"{row['label']}: |SSIM cuda - published|", abs(gpu["ssim"] - row["published"]["ssim"]),
                      SSIM_TOL)
        elif not ctx.dry:
            ctx.note(f"{row['label']}: weights {row['weights']}, data {source}: compared with the CPU only")
    ctx.save()


# =============================================================================================
# 2. numerics: Upscaler fp32 / bf16 / fp16 on the GPU against the CPU, and exact tiles


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """cuDNN convolutions (and matmuls) with or without TF32 while the block runs (torch's legacy flags)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 calls these flags legacy
        before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _differences(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> dict[str, Any]:
    diffs = [(o.float().cpu() - r.float()).abs() for o, r in zip(outputs, references, strict=True)]
    return {"max_abs": float(torch.stack([d.max() for d in diffs]).max()),  # NaN propagates (Python's max skips it)
            "mean_abs": float(torch.stack([d.mean() for d in diffs]).mean()),
            "finite": all(bool(torch.isfinite(o).all()) for o in outputs)}


def step_numerics(ctx: Context) -> None:
    _, lr_dir, source = test_images(ctx)
    images = [x for _, x in read_lr_images(lr_dir, limit=32 if ctx.dry else None)]
    if ctx.dry:  # two images of one shape: CPU kernels are set up once per shape
        images = [x for x in images if x.shape[-2:] == (32, 32)][:2]
    ctx.record("data", f"{source}: {len(images)} LR images")
    ctx.record("tolerances", {"fp32_max_abs": FP32_TOL, "fp16_max_abs": FP16_TOL, "bf16_max_abs": BF16_TOL,
                              "bf16_mean_abs": BF16_MEAN_TOL, "tiles_max_abs": TILE_TOL})
    if ctx.dry:
        ctx.note("dry run: the GPU is the CPU, so fp32 'cuda' equals the CPU trivially; bf16 and fp16 run under CPU "
                 "autocast; no TF32 row")
    rows: dict[str, Any] = {}
    ctx.record("models", rows)
    tile_input = smooth_image(*((40, 52) if ctx.dry else DIV2K_LR), seed=1)
    for model in models_for(ctx):
        if not ctx.has_time(3, what=f"{model.label} numerics"):
            break
        net = load_model(ctx, model, "cpu")
        row: dict[str, Any] = {"label": model.label, "weights": model_weights(ctx, model)[1]}
        rows[model.key] = row
        cpu = Upscaler(net, scale=SCALE, device="cpu")
        references = [cpu(x) for x in images]
        gpu = Upscaler(net, scale=SCALE, device=ctx.device)
        row["fp32"] = _differences([gpu(x) for x in images], references)
        ctx.check(f"{model.label}: Upscaler fp32 on {ctx.device.type} vs CPU, max abs", row["fp32"]["max_abs"],
                  FP32_TOL, detail="TF32 as torch sets it by default" if not ctx.dry else "dry run: both on the CPU")
        if not ctx.dry:
            try:
                with tf32(False):
                    row["fp32_tf32_off"] = _differences([gpu(x) for x in images], references)
                ctx.check(f"{model.label}: Upscaler fp32 (TF32 off) vs CPU, max abs",
                          row["fp32_tf32_off"]["max_abs"], FP32_TOL)
            except RuntimeError as err:  # the flags cannot be set on this torch: say so, keep going
                ctx.note(f"{model.label}: TF32 could not be turned off ({err})")
        for precision, limit, mean_limit in (("bf16", BF16_TOL, BF16_MEAN_TOL), ("fp16", FP16_TOL, None)):
            half = Upscaler(net, scale=SCALE, device=ctx.device, precision=precision)
            row[precision] = result = _differences([half(x) for x in images], references)
            ctx.check(f"{model.label}: Upscaler {precision} output is finite", result["finite"], True, op="==")
            # the tolerances are for trained networks; random weights (dry run) only show that the path runs
            trained = row["weights"] == "published"
            detail = "" if trained else f"{row['weights']}: observation only"
            ctx.check(f"{model.label}: Upscaler {precision} vs CPU fp32, max abs", result["max_abs"], limit,
                      required=trained, detail=detail)
            if mean_limit is not None:
                ctx.check(f"{model.label}: Upscaler {precision} vs CPU fp32, mean abs", result["mean_abs"], mean_limit,
                          required=trained, detail=detail)
            del half
        if model.translation_local:
            x = tile_input.to(ctx.device)
            whole = gpu(x)
            tile = 16 if ctx.dry else 128
            tiled = gpu(x, tile=tile)
            row["tiles"] = {"tile": tile, "pad": gpu.tile_pad, "exactness": gpu.tiling.describe(),
                            "max_abs": max_abs(whole, tiled), "bit_identical": bool(torch.equal(whole, tiled)),
                            "input": list(x.shape)}
            ctx.check(f"{model.label}: {tile}-pixel tiles vs whole image on {ctx.device.type}, max abs",
                      row["tiles"]["max_abs"], TILE_TOL)
        del gpu, cpu, net
        ctx.save()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


# =============================================================================================
# 3. counts: the NTIRE quantities of the deploy forms


def step_counts(ctx: Context) -> None:
    shape = (1, 3, 64, 64) if ctx.dry else profiling.NTIRE_FLOPS_INPUT
    exact = getattr(profiling, "ntire_counts", None)  # the NTIRE-exact counter, where the project has it
    rows: dict[str, Any] = {}
    ctx.record("input", list(shape))
    ctx.record("models", rows)
    if ctx.dry:
        ctx.note("dry run: counted on a 64x64 LR input (NTIRE: 256x256)")
    for model in models_for(ctx):
        if not ctx.has_time(2, what=f"{model.label} counts"):
            break
        deploy = reparameterize_model(load_model(ctx, model, "cpu"), fold_num_in=True).eval()
        counts = profiling.conv_counts(deploy, shape)  # every convolution, functional ones included
        row: dict[str, Any] = {"label": model.label, "multi_adds_g": counts.multi_adds / 1e9,
                               "conv_counts": {"activations_m": counts.activations / 1e6, "convs": counts.convs}}
        if exact is not None:
            result = exact(deploy, shape)
            row.update(params=result.params, flops_g=None if result.flops is None else result.flops / 1e9,
                       activations_m=result.activations / 1e6, convs=result.convs,
                       counter="lkdn.profiling.ntire_counts (params, fvcore FLOPs, nn.Conv2d outputs as the harness)")
        else:
            flops = profiling.ntire_flops(deploy, shape)
            row.update(params=profiling.count_parameters(deploy), flops_g=None if flops is None else flops / 1e9,
                       activations_m=counts.activations / 1e6, convs=counts.convs,
                       counter="count_parameters, ntire_flops (fvcore), conv_counts")
        rows[model.key] = row
        ctx.check(f"{model.label}: parameters, activations and convs counted", min(row["params"], row["convs"],
                                                                                    row["activations_m"]), 0, op=">")
        ctx.save()
    if rows and all(r["flops_g"] is None for r in rows.values()):
        ctx.note("fvcore is not importable: FLOPs are n/a (install the fvcore wheel, scripts/make_gpu_wheels.py)")


# =============================================================================================
# 4. inference speed (harness protocol) and memory


def step_inference(ctx: Context) -> None:
    sizes = DRY_SIZES if ctx.dry else (DIV2K_LR, SMALL_LR)
    runs, warmup = (2, 1) if ctx.dry else (20, 5)
    ctx.record("protocol", {
        "runs": runs, "warmup": warmup, "batch": 1, "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "ntire": "lkdn.profiling.measure_runtime(ntire=True): fp32 deploy form, no warm-up of the network, "
                 "cudnn.benchmark off, CUDA events around the forward only, a fresh random input per run, mean",
        "warmed": f"median of {runs} runs after {warmup} warm-up runs, synchronized",
        "memory": "lkdn.profiling.peak_memory: torch.cuda.max_memory_allocated of one forward (weights included)"})
    if ctx.dry:
        ctx.note("dry run: CPU wall time (perf_counter) instead of CUDA events; CPU memory from the profiler; the fp16 "
                 "row runs bf16 (CPU float16 autocast is emulated, seconds per new shape)")
    else:  # the CUDA context and cuDNN exist before the first timed model (the network itself is not warmed)
        F.conv2d(torch.rand(1, 3, 8, 8, device=ctx.device), torch.rand(3, 3, 3, 3, device=ctx.device))
        ctx.sync()
    rows: dict[str, Any] = {}
    ctx.record("models", rows)
    for model in models_for(ctx):
        if not ctx.has_time(3, what=f"{model.label} inference"):
            break
        net = load_model(ctx, model, ctx.device)
        deploy = reparameterize_model(net, fold_num_in=True).eval()
        forms = {"ntire": deploy, "eager": net}
        # dry run: CPU autocast float16 is emulated and takes seconds per new shape; bfloat16 stands in for it
        upscalers = {p: Upscaler(net, scale=SCALE, device=ctx.device, precision="bf16" if ctx.dry and p == "fp16" else p)
                     for p in ("fp32", "bf16", "fp16")}
        rows[model.key] = entry = {"label": model.label, "sizes": {}}
        for height, width in sizes:
            if not ctx.has_time(1.5, what=f"{model.label} at {width}x{height}"):
                break
            x = smooth_image(height, width, device=ctx.device)
            table: dict[str, Any] = {}
            entry["sizes"][f"{width}x{height}"] = table
            with torch.inference_mode():
                table["ntire_deploy_fp32"] = {"label": "NTIRE harness: deploy form, fp32, no warm-up",
                                              **profiling.measure_runtime(forms["ntire"], x, runs=runs, ntire=True)}
                table["ntire_deploy_fp32"]["ms"] = table["ntire_deploy_fp32"]["mean_ms"]
                candidates: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]] = [
                    ("warmed_deploy_fp32", "deploy form, fp32, warmed median", forms["ntire"]),
                    ("eager_fp32", "eager fp32 as configured (NCHW), warmed median", forms["eager"]),
                    *[(f"upscaler_{p}", f"Upscaler(optimize=True, precision={p!r}), warmed median", up)
                      for p, up in upscalers.items()],
                ]
                for key, label, forward in candidates:
                    timing = profiling.measure_runtime(forward, x, runs=runs, warmup=warmup)
                    table[key] = {"label": label, **timing, "ms": timing["median_ms"]}
            for key, forward in (("ntire_deploy_fp32", forms["ntire"]), ("warmed_deploy_fp32", forms["ntire"]),
                                 ("eager_fp32", forms["eager"]),
                                 *[(f"upscaler_{p}", up) for p, up in upscalers.items()]):
                table[key]["peak_mb"] = profiling.peak_memory(forward, x)["peak_mb"]
            timed = [v for row in table.values() for v in (row["ms"], row["peak_mb"])]
            ctx.check(f"{model.label} at {width}x{height}: every row timed and its memory measured (values > 0)",
                      sum(1 for v in timed if math.isfinite(v) and v > 0), len(timed), op="==")
            ctx.check(f"{model.label} at {width}x{height}: Upscaler fp32 / eager fp32 time", table["upscaler_fp32"]["ms"]
                      / table["eager_fp32"]["ms"], 1.0, required=False,
                      detail="an observation: the Upscaler's rewrites were measured faster on CPUs (docs/efficiency.md)")
            ctx.save()
        del net, deploy, forms, upscalers
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def step_inference_compile(ctx: Context) -> None:
    height, width = DRY_SIZES[0] if ctx.dry else DIV2K_LR
    runs, warmup = (2, 1) if ctx.dry else (20, 3)
    ctx.record("protocol", f"LR {width}x{height}, fp32; compile s = the first call; then the median of {runs} runs")
    if ctx.dry:
        ctx.note("dry run: torch.compile(backend='eager') (dynamo tracing without inductor code generation) on one "
                 "model; on the GPU: Upscaler(compile=True), inductor")
    order = ("LKDN_x4", "SPAN_c28", "LKDN-S_del_rep_x4", "LKDN-S_x4", "BSRN_x4", "E-RFDN")
    rows: dict[str, Any] = {}
    ctx.record("models", rows)
    for key in order[:1] if ctx.dry else order:
        model = next(m for m in MODELS if m.key == key)
        if not ctx.has_time(10, what=f"{model.label} compile"):
            break
        net = load_model(ctx, model, "cpu")
        x = smooth_image(height, width, device=ctx.device)
        plain = Upscaler(net, scale=SCALE, device=ctx.device)
        rows[key] = row = {"label": model.label, "status": "compiling"}
        ctx.save()
        if ctx.dry:
            compiled = Upscaler(net, scale=SCALE, device=ctx.device)
            compiled.network = torch.compile(compiled.network, backend="eager")
        else:
            compiled = Upscaler(net, scale=SCALE, device=ctx.device, compile=True)
        start = time.perf_counter()
        out = compiled(x)
        ctx.sync()
        row["compile_s"] = time.perf_counter() - start
        row["max_abs_vs_eager_upscaler"] = max_abs(out, plain(x))
        row["compiled_ms"] = profiling.measure_runtime(compiled, x, runs=runs, warmup=warmup)["median_ms"]
        row["upscaler_ms"] = profiling.measure_runtime(plain, x, runs=runs, warmup=warmup)["median_ms"]
        row["status"] = "done"
        ctx.check(f"{model.label}: compiled vs eager Upscaler, max abs", row["max_abs_vs_eager_upscaler"], FP32_TOL)
        ctx.save()


# =============================================================================================
# 5. training throughput


class TrainSetting(NamedTuple):
    label: str
    amp: str | None
    channels_last: bool
    compile: Any = False
    stand_in: str = ""


def train_settings(dry: bool) -> list[TrainSetting]:
    """fp32 / AMP bf16 / AMP fp16 (GradScaler), each with channels_last off and on (CPU stand-ins in the dry run)."""
    settings = []
    for amp in (None, "bf16", "fp16"):
        for channels_last in (False, True):
            label = f"{amp or 'fp32'}{' + GradScaler' if amp == 'fp16' else ''}, {'channels_last' if channels_last else 'NCHW'}"
            run_amp, run_cl, stand_in = amp, channels_last, ""
            if dry and amp == "fp16":
                run_amp, stand_in = "bf16", "dry run: bf16 stands in for fp16 + GradScaler (CUDA only)"
            if dry and run_amp == "bf16" and channels_last:
                run_cl = False
                stand_in = (stand_in + "; " if stand_in else "dry run: ") + (
                    "NCHW (bf16 + channels_last reads uninitialized memory on the CPU, benchmarks/bench_train.py)")
            settings.append(TrainSetting(label, run_amp, run_cl, False, stand_in))
    return settings


def _recipe(ctx: Context, setting: TrainSetting) -> dict[str, Any]:
    opt = load_yaml(TRAIN_YML)
    network = dict(opt["network_g"], **(our_architectures()["LKDN"].test_options if ctx.dry else {}))
    train = dict(opt["train"], amp=setting.amp, channels_last=setting.channels_last, compile=setting.compile)
    return {"name": "gpu_check_train", "model_type": "SRModel", "scale": SCALE, "num_gpu": 0 if ctx.dry else 1,
            "network_g": network, "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
            "train": train, "logger": {"save_format": "pth"}}


def measure_training(ctx: Context, setting: TrainSetting, batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                     warmup: int, steps: int) -> dict[str, Any]:
    """``steps`` timed iterations of the real training step (``SRModel.optimize_parameters``) after ``warmup``."""
    from lkdn.models.sr_model import SRModel
    from lkdn.training.dist import DistInfo

    torch.manual_seed(0)
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)
    model = SRModel(_recipe(ctx, setting), dist_info=DistInfo("none", 0, 1, 0, ctx.device, None))
    losses: list[float] = []
    first_s = None
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            ctx.sync()
            start = time.perf_counter()
        lr, hr = batches[i % len(batches)]
        step_start = time.perf_counter()
        model.update_learning_rate(i + 1)
        model.feed_data({"lq": lr, "gt": hr})
        model.optimize_parameters(i + 1)
        losses.append(float(model.log_dict["l_pix"]))  # synchronizes, as the training loop's finiteness check does
        if i == 0:
            first_s = time.perf_counter() - step_start
    ctx.sync()
    elapsed = time.perf_counter() - start
    result = {"label": setting.label, "amp": setting.amp, "channels_last": setting.channels_last,
              "compile": setting.compile, "stand_in": setting.stand_in, "steps": steps, "warmup": warmup,
              "it_per_s": steps / elapsed, "s_per_step": elapsed / steps, "first_step_s": first_s,
              "final_loss": statistics.fmean(losses[-5:]), "losses": losses}
    if model.scaler is not None:
        result["grad_scale"] = float(model.scaler.get_scale())
    if ctx.device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    del model
    return result


def training_batches(ctx: Context) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """Fixed learnable batches in device memory (``benchmarks/bench_train.py``'s), at the recipe's batch and patch.

    Also turns ``cudnn.benchmark`` on, as the training pipeline does on CUDA (fixed patch sizes).
    """
    torch.backends.cudnn.benchmark = ctx.device.type == "cuda"
    bench = load_module(ROOT / "benchmarks" / "bench_train.py", "gpu_check_bench_train")
    bench.BATCH, bench.PATCH = (2, 8) if ctx.dry else (64, 48)  # recipe: batch 64, LR 48 (HR 192)
    count = 2 if ctx.dry else 6
    batches = bench.synthetic_batches(count, device=ctx.device)
    return batches, {"batch": bench.BATCH, "lr_patch": bench.PATCH, "hr_patch": bench.PATCH * SCALE,
                     "distinct_batches": count, "source": "benchmarks/bench_train.py synthetic_batches",
                     "cudnn.benchmark": torch.backends.cudnn.benchmark}


def _compare_losses(ctx: Context, rows: dict[str, Any], baseline: dict[str, Any]) -> None:
    for row in rows.values():
        if row is baseline or "final_loss" not in row:
            continue
        kind = "amp" if row["amp"] else "fp32"
        rel = abs(row["final_loss"] - baseline["final_loss"]) / baseline["final_loss"]
        row["loss_rel_diff"] = rel
        ctx.check(f"training {row['label']}{' (compiled)' if row['compile'] else ''}: loss vs {baseline['label']} "
                  "(relative)", rel, TRAIN_LOSS_TOL[kind], detail=row["stand_in"])


def step_training(ctx: Context) -> None:
    warmup, steps = (1, 4) if ctx.dry else (3, 20)
    batches, data = training_batches(ctx)
    ctx.record("setup", {**data, "network": "LKDN x4 (official)" if not ctx.dry else "LKDN small test configuration",
                         "optimizer": "Adan lr 5e-3, betas (0.98, 0.92, 0.99), eps 1e-8, foreach (the recipe)",
                         "ema_decay": 0.999, "loss": "L1", "warmup_steps": warmup, "timed_steps": steps,
                         "loss_compared": "mean of the last 5 step losses", "tolerances": TRAIN_LOSS_TOL})
    rows: dict[str, Any] = {}
    ctx.record("settings", rows)
    for setting in train_settings(ctx.dry):
        if not ctx.has_time(3, what=f"training {setting.label}"):
            break
        rows[setting.label] = measure_training(ctx, setting, batches, warmup=warmup, steps=steps)
        ctx.check(f"training {setting.label}: loss is finite", rows[setting.label]["final_loss"], 0.0, op=">=")
        ctx.save()
    baseline = rows.get("fp32, NCHW")
    if baseline is not None:
        _compare_losses(ctx, rows, baseline)


def step_training_compile(ctx: Context) -> None:
    warmup, steps = (2, 3) if ctx.dry else (3, 20)
    batches, data = training_batches(ctx)
    compile_opt = {"backend": "eager"} if ctx.dry else True
    ctx.record("setup", {**data, "compile": "train.compile: true (inductor)" if not ctx.dry else
                         "dry run: train.compile: {backend: eager}", "warmup_steps (first = compile)": warmup,
                         "timed_steps": steps})
    eager = (read_json(ctx.out / "steps" / "training.json") or {}).get("results", {}).get("settings", {})
    rows: dict[str, Any] = {}
    ctx.record("settings", rows)
    for base in [s for s in train_settings(ctx.dry) if s.label in ("bf16, channels_last", "fp32, channels_last")]:
        setting = base._replace(compile=compile_opt)
        if not ctx.has_time(15 if not ctx.dry else 2, what=f"compiled training {setting.label}"):
            break
        rows[setting.label] = row = measure_training(ctx, setting, batches, warmup=warmup, steps=steps)
        row["compile_s"] = row["first_step_s"]
        reference = eager.get(setting.label)
        if reference and "final_loss" in reference:
            row["eager_it_per_s"] = reference["it_per_s"]
            rel = abs(row["final_loss"] - reference["final_loss"]) / reference["final_loss"]
            row["loss_rel_diff_vs_eager"] = rel
            tol = TRAIN_LOSS_TOL["amp" if setting.amp else "fp32"]
            ctx.check(f"compiled training {setting.label}: loss vs eager (relative)", rel, tol)
        ctx.save()


def step_training_loader(ctx: Context) -> None:
    from lkdn.training.pipeline import train_pipeline

    count, size = (12, 64) if ctx.dry else (160, 480)
    batch, gt_size, workers, total = (2, 32, 2, 8) if ctx.dry else (64, 192, 6, 60)
    start = time.perf_counter()
    hr_dir, lr_dir = write_pairs(ctx.work / "images", count=count, size=size)
    create_lmdb = load_module(ROOT / "scripts" / "data_preparation" / "create_lmdb.py", "gpu_check_create_lmdb")
    lmdbs = []
    for folder in (hr_dir, lr_dir):
        target = ctx.work / f"{folder.name}.lmdb"
        if not target.exists():
            create_lmdb.main(["--input", str(folder), "--output", str(target), "--n-thread", str(min(8, os.cpu_count() or 1))])
        lmdbs.append(target)
    ctx.record("data", {"images": count, "hr_size": size, "lmdb": [str(p) for p in lmdbs],
                        "made_with": "scripts/data_preparation/create_lmdb.py", "prepare_s": time.perf_counter() - start})
    opt = training_options(ctx, "gpu_check_loader", lmdbs[0], lmdbs[1], batch=batch, gt_size=gt_size,
                           total_iter=total, workers=workers, lmdb=True)
    ctx.record("setup", {"batch": batch, "gt_size": gt_size, "num_worker_per_gpu": workers, "iterations": total,
                         "prefetch_mode": opt["datasets"]["train"].get("prefetch_mode"),
                         "through": "lkdn.training.pipeline.train_pipeline (what lkdn/train.py runs)"})
    rc = train_pipeline(argv=["-opt", str(write_options(ctx, opt)), "--root_path", str(ctx.work)])
    lines = train_log(ctx.work, opt["name"])
    skip = min(5, max(len(lines) - 2, 0))  # loader start-up
    times = [r["time"] for r in lines[skip:]]
    data_times = [r["data_time"] for r in lines[skip:]]
    result = {"exit_status": rc, "iterations_logged": len(lines), "skipped_first": skip,
              "median_iter_s": statistics.median(times), "median_data_s": statistics.median(data_times),
              "it_per_s": 1 / statistics.median(times)}
    result["data_fraction"] = result["median_data_s"] / result["median_iter_s"]
    memory = ((read_json(ctx.out / "steps" / "training.json") or {}).get("results", {}).get("settings", {})
              .get("fp32, NCHW"))
    if memory:
        result["in_memory_it_per_s"] = memory["it_per_s"]
        result["fraction_of_in_memory"] = result["it_per_s"] / memory["it_per_s"]
    ctx.record("result", result)
    ctx.check("training through the loader ends normally", rc, 0, op="==")
    if "fraction_of_in_memory" in result:
        ctx.check("the loader keeps up: loader it/s / in-memory it/s (fp32 NCHW, the recipe)",
                  result["fraction_of_in_memory"], LOADER_KEEPS_UP, op=">=", required=False,
                  detail=f"{workers} workers; an observation about this machine, not a defect")


# =============================================================================================
# 6. training features: resume, torchrun, SIGTERM, out-of-memory fallback


def _small_training(ctx: Context, name: str, **changes: Any) -> dict[str, Any]:
    """Training options on a few synthetic disk images (the recipe's network and optimizer)."""
    hr, lr = write_pairs(ctx.out / "work" / "small_images", count=8 if ctx.dry else 16, size=32 if ctx.dry else 128)
    settings = dict(batch=2 if ctx.dry else 16, gt_size=16 if ctx.dry else 64, total_iter=8 if ctx.dry else 12,
                    workers=0 if ctx.dry else 2)
    settings.update(changes)
    return training_options(ctx, name, hr, lr, **settings)


def _weights_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, float]:
    identical, diff = True, 0.0
    for group in ("params", "params_ema"):
        for key, tensor in a[group].items():
            other = b[group][key]
            identical = identical and torch.equal(tensor, other)
            diff = max(diff, max_abs(tensor, other) if tensor.numel() else 0.0)
    return identical, diff


def step_resume(ctx: Context) -> None:
    from lkdn.training import pipeline
    from lkdn.utils.checkpoint import load_file

    total = 10 if ctx.dry else 12
    # 4 (dry run: 8 images, batch 2) or 5 (16 images, batch 16) batches an epoch: the runs cross epochs and
    # the resume starts mid-epoch
    enlarge = 1 if ctx.dry else 5
    ctx.record("setup", {"iterations": total, "resume_from": total // 2, "dataset_enlarge_ratio": enlarge,
                         "deterministic": "train.deterministic: torch.use_deterministic_algorithms(True, warn_only=True), "
                                          "cudnn.deterministic, cudnn.benchmark off, CUBLAS_WORKSPACE_CONFIG=:4096:8",
                         "compared": "net_g_latest.pth: params and params_ema, every tensor", "tolerance": RESUME_TOL})
    root = ctx.work
    runs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, argv in (("full", []), ("part", ["--force_yml", f"train:total_iter={total // 2}"])):
            opt = _small_training(ctx, f"resume_{name}", total_iter=total, save_every=total // 2, enlarge=enlarge)
            opt["train"]["deterministic"] = True
            runs[name] = write_options(ctx, opt)
            ctx.check(f"{name} run ends normally", pipeline.train_pipeline(
                argv=["-opt", str(runs[name]), "--root_path", str(root), *argv]), 0, op="==")
        state = root / "experiments" / "resume_part" / "training_states" / f"{total // 2}.state"
        rc = pipeline.train_pipeline(argv=["-opt", str(runs["part"]), "--root_path", str(root), "--force_yml",
                                           f"path:resume_state={state}"])
        ctx.check("resumed run ends normally", rc, 0, op="==")
    nondeterministic = sorted({str(w.message).splitlines()[0] for w in caught if "deterministic" in str(w.message)})
    full = load_file(root / "experiments" / "resume_full" / "models" / "net_g_latest.pth")
    part = load_file(root / "experiments" / "resume_part" / "models" / "net_g_latest.pth")
    identical, diff = _weights_difference(full, part)
    losses_equal = ([r["l_pix"] for r in train_log(root, "resume_full")] ==
                    [r["l_pix"] for r in train_log(root, "resume_part")])
    ctx.record("result", {"bit_identical": identical, "max_abs_diff": diff, "logged_losses_equal": losses_equal,
                          "ops_without_deterministic_kernel": nondeterministic})
    ctx.check(f"N/2 + N/2 vs N on {ctx.device.type}: max abs weight difference", diff, RESUME_TOL,
              detail="bit-identical" if identical else "not bit-identical")


def step_distributed(ctx: Context) -> None:
    procs = 1 if ctx.dry else max(torch.cuda.device_count(), 1)
    opt = _small_training(ctx, "torchrun", total_iter=4 if ctx.dry else 6, batch=2 if ctx.dry else 8)
    opt["dist_params"] = {"backend": "gloo" if ctx.dry else "nccl", "port": 29500}
    yml = write_options(ctx, opt)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               str(ROOT / "lkdn" / "train.py"), "-opt", str(yml), "--launcher", "pytorch", "--root_path", str(ctx.work)]
    ctx.record("setup", {"command": " ".join(command[1:]), "processes": procs,
                         "backend": opt["dist_params"]["backend"]})
    if ctx.dry:
        ctx.note("dry run: one CPU process with gloo (tests/test_train_dist.py runs two)")
    start = time.perf_counter()
    log = ctx.out / "logs" / "distributed_torchrun.log"
    rc = run_command(command, cwd=ROOT, timeout=ctx.time_left() - 1, log=log, env=child_env())
    exp = ctx.work / "experiments" / opt["name"]
    logs = "".join(p.read_text(errors="replace") for p in exp.glob("train_*.log"))
    match = re.search(r"(\d+) process\(es\), launcher (\w+), backend (\w+)", logs)
    ctx.record("result", {"exit_status": rc, "seconds": time.perf_counter() - start, "log": str(log),
                          "world": match.group(0) if match else None,
                          "iterations_logged": len(train_log(ctx.work, opt["name"])),
                          "latest_weights": (exp / "models" / "net_g_latest.pth").is_file()})
    ctx.check("torchrun exits with status 0", rc, 0, op="==")
    ctx.check("processes, launcher and backend as asked", match.group(0) if match else "none", (
        f"{procs} process(es), launcher pytorch, backend {opt['dist_params']['backend']}"), op="==")
    ctx.check("net_g_latest.pth written", (exp / "models" / "net_g_latest.pth").is_file(), True, op="==")


def step_sigterm(ctx: Context) -> None:
    from lkdn.training.pipeline import train_pipeline
    from lkdn.utils.checkpoint import load_file

    opt = _small_training(ctx, "sigterm", total_iter=100000)
    yml = write_options(ctx, opt)
    done = threading.Event()
    sent: dict[str, Any] = {}

    def signal_after_three_iterations() -> None:
        while not done.is_set():
            lines = train_log(ctx.work, opt["name"])
            if len(lines) >= 3:
                sent["after_iter"] = lines[-1]["iter"]
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=signal_after_three_iterations, daemon=True)
    watcher.start()
    try:
        rc = train_pipeline(argv=["-opt", str(yml), "--root_path", str(ctx.work)])
    finally:
        done.set()
    exp = ctx.work / "experiments" / opt["name"]
    states = sorted(int(p.stem) for p in (exp / "training_states").glob("*.state"))
    result: dict[str, Any] = {"exit_status": rc, "signal_sent_after_iter": sent.get("after_iter"), "states": states}
    ctx.record("result", result)
    ctx.check("SIGTERM during training: exit status 128 + 15", rc, 128 + signal.SIGTERM, op="==")
    ctx.check("a training state was saved", len(states), 1, op=">=")
    if not states:
        return
    stopped = states[-1]
    result["state_iter"] = int(load_file(exp / "training_states" / f"{stopped}.state")["iter"])
    result["network_saved"] = (exp / "models" / f"net_g_{stopped}.pth").is_file()
    ctx.check("the saved network exists for the state", result["network_saved"], True, op="==")
    rc = train_pipeline(argv=["-opt", str(yml), "--root_path", str(ctx.work), "--auto_resume", "--force_yml",
                              f"train:total_iter={stopped + 2}"])
    iters = [r["iter"] for r in train_log(ctx.work, opt["name"])]
    result.update(resume_exit_status=rc, iterations_after_resume=iters[-2:])
    ctx.record("result", result)
    ctx.check("--auto_resume continues to the end", rc, 0, op="==")
    ctx.check("the resumed run logs the next iterations", iters[-2:], [stopped + 1, stopped + 2], op="==")


class _SimulatedMemoryLimit(nn.Module):
    """Dry run: raise ``torch.OutOfMemoryError`` for inputs above ``pixels``, as a GPU that is too small would."""

    def __init__(self, net: nn.Module, pixels: int) -> None:
        super().__init__()
        self.net, self.pixels = net, pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] > self.pixels:
            raise torch.OutOfMemoryError(f"simulated out of memory (dry run): {tuple(x.shape)}")
        return self.net(x)


def step_oom(ctx: Context) -> None:
    model = MODELS[0]
    net = load_model(ctx, model, "cpu")
    up = Upscaler(net, scale=SCALE, device=ctx.device)
    if ctx.dry:
        side = 96
        lr = smooth_image(side, side, seed=2)
        whole = up(lr)
        limit = (side // 2 + up.tile_pad) ** 2  # half-size tiles with their context fit, the whole image does not
        up.network = _SimulatedMemoryLimit(up.network, pixels=limit)
        ctx.note(f"dry run: the forward raises torch.OutOfMemoryError above {limit} input pixels (simulated); on the "
                 "GPU the image is larger than the memory the process may use")
        setup = {"input": [side, side], "memory": "simulated"}
    else:
        total = torch.cuda.get_device_properties(ctx.device).total_memory
        cap = min(total, OOM_CAP_BYTES)
        if cap < total:
            torch.cuda.set_per_process_memory_fraction(cap / total, ctx.device)
        probe_side = 1024  # large enough that fixed costs (weights, cuDNN workspace) do not dominate
        probe = smooth_image(probe_side, probe_side, device=ctx.device)
        per_pixel = profiling.peak_memory(up, probe)["delta_mb"] * 2**20 / probe_side**2
        del probe
        torch.cuda.empty_cache()
        side = int(math.sqrt(OOM_FACTOR * cap / per_pixel))
        lr = smooth_image(side, side, seed=2, device=ctx.device)
        whole = None
        setup = {"input": [side, side], "memory_cap_gib": cap / 2**30, "gpu_memory_gib": total / 2**30,
                 "bytes_per_lr_pixel": per_pixel,
                 "memory": "torch.cuda.set_per_process_memory_fraction" if cap < total else "the whole GPU",
                 "estimated_need_gib": per_pixel * side * side / 2**30}
    ctx.record("setup", setup)
    start = time.perf_counter()
    with captured("lkdn.tiling", "retrying with") as retries:
        out = up(lr)
    ctx.sync()
    seconds = time.perf_counter() - start
    tiles = [int(r.args[3]) for r in retries if isinstance(r.args, tuple) and len(r.args) > 3]
    result: dict[str, Any] = {"seconds": seconds, "retries": len(retries), "tile_sizes": tiles,
                              "output": list(out.shape), "finite": bool(torch.isfinite(out).all())}
    if ctx.device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    ctx.record("result", result)
    ctx.check("out of memory on the whole image, retried in tiles", len(retries), 1, op=">=")
    ctx.check("output has the full size", list(out.shape), [1, 3, side * SCALE, side * SCALE], op="==")
    ctx.check("output is finite", result["finite"], True, op="==")
    if whole is None and tiles and ctx.has_time(5, what="comparison with explicit tiles"):
        out = out.cpu()
        whole = up(lr, tile=tiles[-1]).cpu()  # the same exact tiles, asked for explicitly
        result["compared_with"] = f"explicit {tiles[-1]}-pixel tiles (LKDN tiles are exact)"
    elif whole is not None:
        result["compared_with"] = "the whole image without the memory limit"
    if whole is not None:
        result["max_abs_vs_reference"] = max_abs(out, whole.to(out.device))
        ctx.record("result", result)
        ctx.check("fallback output vs reference, max abs", result["max_abs_vs_reference"], TILE_TOL)


# =============================================================================================
# the steps, their budgets and the runner


class Step(NamedTuple):
    name: str
    title: str
    budget_s: float
    dry_budget_s: float
    run: Callable[[Context], None]
    elastic: bool = False  # gets the time earlier steps left unused


STEPS = (  # name, title, budget on the GPU, budget in the dry run (seconds), what runs
    Step("environment", "Environment", 10, 10, step_environment),
    Step("correctness", "Correctness: lkdn/test.py on Set5", 45, 25, step_correctness),
    Step("numerics", "Numerics: Upscaler fp32 / bf16 / fp16, exact tiles", 30, 15, step_numerics),
    Step("counts", "Counts: params, FLOPs, activations (deploy forms)", 25, 15, step_counts),
    Step("inference", "Inference speed and memory", 65, 20, step_inference),
    Step("training", "Training throughput (data in device memory)", 45, 15, step_training),
    Step("training_loader", "Training through the data loader (LMDB)", 35, 15, step_training_loader),
    Step("resume", "Exact resume", 30, 15, step_resume),
    Step("distributed", "torchrun", 30, 50, step_distributed),
    Step("sigterm", "SIGTERM saves a state", 20, 15, step_sigterm),
    Step("oom", "Out-of-memory fallback to tiles", 25, 10, step_oom),
    Step("inference_compile", "Inference with torch.compile", 40, 15, step_inference_compile, elastic=True),
    Step("training_compile", "Training with torch.compile", 40, 20, step_training_compile, elastic=True),
)
DRY_LIMIT_S = 260.0
"""The dry run's limit (its budgets sum to 240 s; it takes about a minute on 2 CPU cores)."""
STEP_NAMES = tuple(s.name for s in STEPS)


def _names(values: list[str], env: str | None = None) -> set[str]:
    """Step names from the command line (and the comma-separated variable ``env``), checked."""
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    if env:
        names |= {n.strip() for n in os.environ.get(env, "").split(",") if n.strip()}
    unknown = names - set(STEP_NAMES)
    if unknown:
        raise SystemExit(f"error: unknown step(s) {', '.join(sorted(unknown))}; steps: {', '.join(STEP_NAMES)}")
    return names


def child_main(step: Step, args: argparse.Namespace, timeout_s: float) -> int:
    """Run one step in this (child) process; 0 when it finished (its checks decide pass or fail)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # dry run: one thread, as the tests do for tiny tensors on shared cores (no OpenMP contention)
    torch.set_num_threads(1 if args.dry_run else min(16, os.cpu_count() or 1))
    ctx = Context(step.name, args.out, dry=args.dry_run, timeout_s=timeout_s)
    try:
        if step.name in args.fail_steps:
            raise InjectedFailureError(f"injected failure in step {step.name} (--fail / {FAIL_ENV})")
        if step.name in args.hang_steps:
            ctx.note(f"hanging on purpose (--hang / {HANG_ENV})")
            time.sleep(10**6)
        step.run(ctx)
    except BaseException as err:  # noqa: BLE001 - the step's failure is the result
        ctx.data["error"] = f"{type(err).__name__}: {err}"
        ctx.data["traceback"] = traceback.format_exc()[-4000:]
        ctx.save()
        traceback.print_exc()
        return 1
    ctx.data["finished"] = True
    ctx.data["distributions"] = loaded_distributions()
    ctx.save()
    return 0


_DISTRIBUTIONS: dict[str, list[str]] | None = None


def loaded_distributions() -> dict[str, str]:
    """Distribution -> version of every top-level module this process has imported (what must travel)."""
    global _DISTRIBUTIONS
    if _DISTRIBUTIONS is None:
        _DISTRIBUTIONS = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for top in {name.split(".")[0] for name in list(sys.modules)}:
        for dist in _DISTRIBUTIONS.get(top, []):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return dict(sorted(found.items()))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch(step: Step, args: argparse.Namespace, timeout_s: float) -> tuple[str, float]:
    """Run ``step`` in a child process for at most ``timeout_s``; (how it ended, seconds)."""
    log = args.out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if args.isolation == "fork":
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: its own process group (killed as one), output to its log
            code = 1
            try:
                os.setsid()
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = child_main(step, args, timeout_s)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        end = start + timeout_s
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _kill_group(pid)  # anything the step left running (loader workers, torchrun)
                code = os.waitstatus_to_exitcode(status)
                return ("exited" if code == 0 else f"exit status {code}"), time.monotonic() - start
            if time.monotonic() > end:
                _kill_group(pid)
                os.waitpid(pid, 0)
                return "timeout", time.monotonic() - start
            time.sleep(0.05)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", step.name, "--child-timeout",
               str(timeout_s), "--out", str(args.out), *(["--dry-run"] if args.dry_run else []),
               *[a for s in sorted(args.fail_steps) for a in ("--fail", s)],
               *[a for s in sorted(args.hang_steps) for a in ("--hang", s)]]
    try:
        code = run_command(command, cwd=ROOT, timeout=timeout_s, log=log, env=dict(os.environ))
    except TimeoutError:
        return "timeout", time.monotonic() - start
    return ("exited" if code == 0 else f"exit status {code}"), time.monotonic() - start


def section_status(data: dict[str, Any] | None, ended: str) -> str:
    if ended == "timeout":
        return "timeout"
    if data is None:
        return f"crashed ({ended}, no record)"
    if data.get("error"):
        return "error"
    if not data.get("finished"):
        return f"crashed ({ended})"
    required = [c for c in data.get("checks", []) if c.get("required", True)]
    return "passed" if all(c["passed"] for c in required) else "failed"


def fork_is_safe(dry: bool) -> bool:
    """Whether this process may fork the steps' children.

    On the GPU only when this process has not touched the CUDA driver: torch has not initialized
    CUDA, and NVML answered the device count (else torch asked the driver, which a forked child
    must not inherit); otherwise each step starts a new interpreter (``spawn``).
    """
    if not hasattr(os, "fork"):
        return False
    if dry:
        return True
    try:
        nvml = torch.cuda._device_count_nvml() >= 0
    except (AttributeError, RuntimeError):
        nvml = False
    return nvml and not torch.cuda.is_initialized()


def gpu_count() -> int:
    """Visible CUDA devices, through NVML when torch can (no CUDA initialization in this process)."""
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except RuntimeError:
        return 0


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected step in turn, each within its budget and within the whole run's limit."""
    selected = [s for s in STEPS if not args.only or s.name in args.only]
    deadline = _STARTED + args.limit
    loaded_distributions()  # the module -> distribution map, once, for every forked step
    sections: dict[str, Any] = {}
    unused = 0.0
    for index, step in enumerate(selected):
        budget = args.budgets.get(step.name, step.dry_budget_s if args.dry_run else step.budget_s)
        later = sum(args.budgets.get(s.name, s.dry_budget_s if args.dry_run else s.budget_s)
                    for s in selected[index + 1:])
        timeout = min(budget + (unused if step.elastic else 0.0), deadline - time.monotonic() - later)
        entry: dict[str, Any] = {"title": step.title, "budget_s": budget, "timeout_s": round(timeout, 1),
                                 "log": f"logs/{step.name}.log"}
        if timeout < 3:
            entry.update(status="skipped", reason="the run's time limit is reached", seconds=0.0)
            sections[step.name] = entry
            print(f"[gpu_check] {step.name}: skipped (time limit)", flush=True)
            continue
        if args.isolation == "fork" and not fork_is_safe(args.dry_run):
            args.isolation = "spawn"
        print(f"[gpu_check] {step.name} (budget {timeout:.0f} s) ...", flush=True)
        (args.out / "steps" / f"{step.name}.json").unlink(missing_ok=True)
        ended, seconds = launch(step, args, timeout)
        data = read_json(args.out / "steps" / f"{step.name}.json")
        entry.update(status=section_status(data, ended), seconds=round(seconds, 1), ended=ended)
        if data:
            entry.update({k: data[k] for k in ("results", "checks", "notes", "error", "traceback", "distributions")
                          if k in data})
        sections[step.name] = entry
        unused = max(unused + budget - seconds, 0.0)  # an elastic step spends what the others left
        failed = [c["name"] for c in entry.get("checks", []) if not c["passed"] and c.get("required", True)]
        print(f"[gpu_check] {step.name}: {entry['status']} in {seconds:.1f} s"
              + (f" ({entry.get('error')})" if entry.get("error") else "")
              + (f"; failed: {'; '.join(failed)}" if failed else ""), flush=True)
    for step in STEPS:
        if step.name not in sections:
            sections[step.name] = {"title": step.title, "status": "skipped", "reason": "not selected (--only)",
                                   "budget_s": step.budget_s, "seconds": 0.0}
    return sections


# =============================================================================================
# the report


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value
    return str(value)


def _sci(value: Any) -> str:
    """A difference: ``3.2e-06``, ``0`` or the non-finite value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return "0" if value == 0 else f"{value:.1e}"
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(c if isinstance(c, str) else _fmt(c) for c in row) + " |" for row in rows]
    return lines


def _md_correctness(res: dict[str, Any]) -> list[str]:
    rows = []
    for row in res.get("models", {}).values():
        gpu, cpu = row.get("cuda", {}), row.get("cpu") or {}
        pub = row.get("published", {})
        rows.append([row["label"], row["weights"], f"{_fmt(gpu.get('psnr'))} / {_fmt(gpu.get('ssim'), 4)}",
                     f"{_fmt(cpu.get('psnr'))} / {_fmt(cpu.get('ssim'), 4)}" if cpu else "not run",
                     f"{_fmt(pub.get('psnr'))} / {_fmt(pub.get('ssim'), 4)}",
                     _fmt(row.get("largest_per_image_gap_db"), 4)])
    return [f"Data: {res.get('data', '')}.", "", *_table(
        ["model", "weights", "CUDA PSNR / SSIM", "CPU PSNR / SSIM (same run)", "published", "largest per-image gap dB"],
        rows)]


def _md_numerics(res: dict[str, Any]) -> list[str]:
    rows = []
    for row in res.get("models", {}).values():
        tiles = row.get("tiles") or {}
        bf16, fp16 = row.get("bf16", {}), row.get("fp16", {})
        rows.append([row["label"], _sci(row.get("fp32", {}).get("max_abs")),
                     _sci((row.get("fp32_tf32_off") or {}).get("max_abs")),
                     f"{_sci(bf16.get('max_abs'))} / {_sci(bf16.get('mean_abs'))}",
                     f"{_sci(fp16.get('max_abs'))} / {_sci(fp16.get('mean_abs'))}",
                     f"{_sci(tiles.get('max_abs'))} ({'bit-identical' if tiles.get('bit_identical') else 'differs'})"
                     if tiles else "n/a (not translation-local)"])
    tol = res.get("tolerances", {})
    return [f"Max abs differences on [0, 1] against the CPU float32 Upscaler; data: {res.get('data', '')}. "
            f"Tolerances: fp32 {tol.get('fp32_max_abs')}, bf16 {tol.get('bf16_max_abs')} (mean "
            f"{tol.get('bf16_mean_abs')}), fp16 {tol.get('fp16_max_abs')}, tiles {tol.get('tiles_max_abs')}.", "",
            *_table(["model", "fp32 (TF32 default)", "fp32, TF32 off", "bf16 max / mean", "fp16 max / mean",
                     "tiles vs whole"], rows)]


def _md_inference(res: dict[str, Any]) -> list[str]:
    keys = ("ntire_deploy_fp32", "warmed_deploy_fp32", "eager_fp32", "upscaler_fp32", "upscaler_bf16", "upscaler_fp16")
    header = ["model", "LR size", *[k.replace("_", " ") + " ms (MB)" for k in keys]]
    rows = []
    for row in res.get("models", {}).values():
        for size, table in row.get("sizes", {}).items():
            rows.append([row["label"], size, *[f"{_fmt(table[k]['ms'])} ({_fmt(table[k].get('peak_mb'), 1)})"
                                                if k in table else "" for k in keys]])
    proto = res.get("protocol", {})
    return [f"NTIRE: {proto.get('ntire', '')}. Warmed: {proto.get('warmed', '')}. Memory: {proto.get('memory', '')}.",
            "", *_table(header, rows)]


def ntire_table(sections: dict[str, Any], device: str) -> list[str]:
    """The results.txt-style table: counts of the deploy forms with NTIRE-protocol runtime and memory at 510x339."""
    shape = sections.get("counts", {}).get("results", {}).get("input", [1, 3, 256, 256])
    counts = sections.get("counts", {}).get("results", {}).get("models", {})
    inference = sections.get("inference", {}).get("results", {}).get("models", {})
    rows = []
    for key, row in counts.items():
        sizes = inference.get(key, {}).get("sizes", {})
        timing = next(iter(sizes.values()), {}).get("ntire_deploy_fp32", {}) if sizes else {}
        size = next(iter(sizes), "")
        rows.append([row["label"], row["params"] / 1e6, row.get("flops_g"), row.get("activations_m"), row.get("convs"),
                     f"{_fmt(timing.get('ms'))} ({size})" if timing else "", _fmt(timing.get("peak_mb"), 1)])
    rows.append([f"SPAN c28, NTIRE 2026 published ({SPAN_NTIRE_2026['gpu']})", SPAN_NTIRE_2026["params_m"],
                 SPAN_NTIRE_2026["flops_g"], SPAN_NTIRE_2026["activations_m"], "", f"{SPAN_NTIRE_2026['runtime_ms']}",
                 ""])
    return [f"NTIRE-style results (deploy forms; FLOPs and activations for a {shape[-1]}x{shape[-2]} LR input (counter: "
            f"{next(iter(counts.values()), {}).get('counter', 'n/a')}); runtime by the NTIRE "
            f"protocol on {device}, on one random LR input of the size shown, not the DIV2K_LSDIR_valid images; the "
            f"published SPAN row was measured on an {SPAN_NTIRE_2026['gpu']}, not on this GPU):", "",
            *_table(["model", "params (M)", "FLOPs (G)", "activations (M)", "convs", "runtime ms", "max memory MB"],
                    rows)]


def _md_training(res: dict[str, Any]) -> list[str]:
    setup = res.get("setup", {})
    rows = [[r["label"] + (f" ({r['stand_in']})" if r.get("stand_in") else ""), r["it_per_s"],
             _fmt(r.get("eager_it_per_s")), r["s_per_step"], _fmt(r.get("compile_s")), _fmt(r["final_loss"], 5),
             _sci(r.get("loss_rel_diff", r.get("loss_rel_diff_vs_eager"))), _fmt(r.get("peak_mb"), 0)]
            for r in res.get("settings", {}).values()]
    compiled = "compile" in setup
    what = setup.get("compile") if compiled else f"{setup.get('network')}, {setup.get('optimizer')}, EMA " \
        f"{setup.get('ema_decay')}, loss compared: {setup.get('loss_compared')} (tolerance {setup.get('tolerances')})"
    return [f"Batch {setup.get('batch')}, HR patch {setup.get('hr_patch')}, data in device memory "
            f"({setup.get('source')}); {what}; {setup.get('timed_steps')} timed steps after "
            f"{setup.get('warmup_steps', setup.get('warmup_steps (first = compile)'))}.", "",
            *_table(["setting", "it/s", "eager it/s", "s/step", "compile s", "loss", "loss rel. diff", "peak MB"],
                    rows)]


def _md_generic(res: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("setup", "data", "result"):
        if key in res:
            value = res[key]
            text = ", ".join(f"{k}: {_fmt(v, 3)}" for k, v in value.items()) if isinstance(value, dict) else str(value)
            lines.append(f"- {key}: {text}")
    return lines


def _md_compile(res: dict[str, Any]) -> list[str]:
    rows = [[r["label"], r.get("compile_s"), r.get("compiled_ms"), r.get("upscaler_ms"),
             _sci(r.get("max_abs_vs_eager_upscaler")), r.get("status")] for r in res.get("models", {}).values()]
    return [str(res.get("protocol", "")), "", *_table(
        ["model", "compile s", "compiled ms", "Upscaler ms", "max abs vs eager", "status"], rows)]


def _md_environment(res: dict[str, Any]) -> list[str]:
    env = res.get("environment", {})
    lines = [f"- {k}: {_fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v)}" for k, v in env.items()]
    lines.append("- imports: " + "; ".join(f"{k}: {v}" for k, v in res.get("imports", {}).items()))
    lines.append("- packages: " + ", ".join(f"{k} {v.get('version')}" for k, v in res.get("packages", {}).items()))
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "environment": _md_environment, "correctness": _md_correctness, "numerics": _md_numerics,
    "inference": _md_inference, "training": _md_training, "training_compile": _md_training,
    "inference_compile": _md_compile,
}


def machine_line(report: dict[str, Any]) -> str:
    env = report["sections"].get("environment", {}).get("results", {}).get("environment", {})
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in env.get("gpus", [])) or env.get("device", "?")
    return (f"{gpus}; driver {env.get('driver')}, CUDA {env.get('cuda_runtime')} (driver API "
            f"{env.get('cuda_driver_api')}), cuDNN {env.get('cudnn')}, torch {env.get('torch')}, Python "
            f"{env.get('python')}, {env.get('cpu_count')} CPU cores")


def _check_counts(section: dict[str, Any]) -> str:
    checks = section.get("checks", [])
    required = [c["passed"] for c in checks if c.get("required", True)]
    observations = [c["passed"] for c in checks if not c.get("required", True)]
    text = f"{sum(required)} / {len(required)}"
    return text + (f" ({sum(observations)} / {len(observations)})" if observations else "")


def markdown(report: dict[str, Any]) -> str:
    sections = report["sections"]
    lines = ["## GPU check (`make gpu-check`, benchmarks/gpu_check.py)", "",
             f"Run on {report['date']}{' (DRY RUN on the CPU: not GPU evidence)' if report['dry_run'] else ''}: "
             f"{machine_line(report)}. Wall time {report['wall_s']:.0f} s (limit {report['limit_s']:.0f} s). "
             "Tolerances and what each step checks: docs/gpu_check.md.", "",
             *_table(["step", "status", "seconds / budget", "checks passed (observations)"], [
                 [f"{s['title']} (`{name}`)", s["status"],
                  f"{_fmt(s.get('seconds'), 1)} / {_fmt(s.get('timeout_s', s.get('budget_s')), 0)}", _check_counts(s)]
                 for name, s in sections.items()])]
    failed = [f"`{name}`: {c['name']}: {_fmt(c['value'], 4)} (limit {c['op']} {_fmt(c['limit'], 4)})"
              for name, s in sections.items() for c in s.get("checks", []) if c.get("required", True) and not c["passed"]]
    failed += [f"`{name}`: {s['status']}{': ' + s['error'] if s.get('error') else ''}" for name, s in sections.items()
               if s["status"] in ("error", "timeout") or s["status"].startswith("crashed")]
    if failed:
        lines += ["", "Not passed:", "", *[f"- {text}" for text in failed]]
    device = "this GPU" if not report["dry_run"] else "the CPU (dry run)"
    for name, section in sections.items():
        lines += ["", f"### {section['title']}", "", f"Status: **{section['status']}**"
                  + (f" ({section.get('reason') or section.get('error')})" if section.get("reason") or section.get("error") else ""), ""]
        res = section.get("results", {})
        if res:
            lines += RENDERERS.get(name, _md_generic)(res)
        if name == "counts" and res:
            lines += ntire_table(sections, device)
        checks = section.get("checks", [])
        if checks:
            lines.append("")
            for c in checks:
                mark = "x" if c["passed"] else " "
                extra = "" if c.get("required", True) else " (observation)"
                detail = f"; {c['detail']}" if c.get("detail") else ""
                lines.append(f"- [{mark}] {c['name']}: {_fmt(c['value'], 4)} {c['op']} {_fmt(c['limit'], 4)}{extra}{detail}")
        for note in section.get("notes", []):
            lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


# =============================================================================================
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Steps: " + ", ".join(STEP_NAMES) + ". Details: docs/gpu_check.md.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default results/gpu_check)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (tests the script)")
    parser.add_argument("--only", nargs="+", default=[], metavar="STEP", help="run only these steps")
    parser.add_argument("--budget", action="append", default=[], metavar="STEP=SECONDS", help="change a step's budget")
    parser.add_argument("--limit", type=float, default=None, help=f"the whole run's time limit (default {LIMIT_S:.0f} s)")
    parser.add_argument("--shared", type=Path, default=None, help="reference weights and Set5 (as $LKDN_SHARED)")
    parser.add_argument("--isolation", choices=["fork", "spawn"], default="fork",
                        help="how steps get their own process (default fork; spawn starts a new interpreter)")
    parser.add_argument("--fail", action="append", default=[], metavar="STEP", help="inject a failure (tests)")
    parser.add_argument("--hang", action="append", default=[], metavar="STEP", help="inject a hang (tests)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.only = _names(args.only)
    args.fail_steps, args.hang_steps = _names(args.fail, FAIL_ENV), _names(args.hang, HANG_ENV)
    args.budgets = {}
    for entry in args.budget:
        name, _, seconds = entry.partition("=")
        if name not in STEP_NAMES or not seconds:
            raise SystemExit(f"error: --budget {entry!r}: expected STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)}")
        args.budgets[name] = float(seconds)
    if args.limit is None:
        args.limit = DRY_LIMIT_S if args.dry_run else LIMIT_S
    return args


def set_shared(shared: Path | None) -> str | None:
    """Where reference weights and Set5 are looked for first ($LKDN_SHARED for lkdn.zoo and the children)."""
    if shared is not None:
        os.environ["LKDN_SHARED"] = str(shared.resolve())
    elif "LKDN_SHARED" not in os.environ and (ROOT / "shared" / "pretrained").is_dir():
        os.environ["LKDN_SHARED"] = str(ROOT / "shared")
    return os.environ.get("LKDN_SHARED")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_shared(args.shared)
    if args.child:  # spawned step
        step = next(s for s in STEPS if s.name == args.child)
        return child_main(step, args, args.child_timeout)
    count = 0 if args.dry_run else gpu_count()
    if not args.dry_run and count == 0:
        print(f"gpu_check: no CUDA GPU visible (torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on "
              "a machine with an NVIDIA GPU, or use --dry-run to test the script on the CPU", flush=True)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"[gpu_check] {'dry run on the CPU' if args.dry_run else f'{count} GPU(s)'}; writing {args.out}", flush=True)
    sections = run_all(args)
    distributions: dict[str, str] = {}
    for section in sections.values():
        distributions.update(section.pop("distributions", None) or {})
    report = {
        "tool": "benchmarks/gpu_check.py", "dry_run": args.dry_run, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.monotonic() - _STARTED, "limit_s": args.limit, "isolation": args.isolation,
        "lkdn_shared": os.environ.get("LKDN_SHARED"), "sections": sections,
        "distributions_imported": dict(sorted(distributions.items())),
    }
    report["machine"] = machine_line(report)
    report["summary"] = {status: [n for n, s in sections.items() if s["status"] == status]
                         for status in sorted({s["status"] for s in sections.values()})}
    write_json(args.out / "report.json", report)
    (args.out / "report.md").write_text(markdown(jsonable(report)), encoding="utf-8")
    ran = [s for s in sections.values() if s.get("reason") != "not selected (--only)"]
    ok = all(s["status"] == "passed" for s in ran)
    print(f"[gpu_check] {'all passed' if ok else 'NOT all passed: ' + json.dumps(report['summary'])}; "
          f"{args.out / 'report.md'} ({report['wall_s']:.0f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
