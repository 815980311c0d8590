"""The project's CUDA claims, checked on a GPU (``make gpu-check``, benchmarks/gpu_check.py, docs/gpu_check.md).

Every test is marked ``gpu`` and skipped without CUDA. ``LKDN_GPU_CHECK_DRY=1`` (``gpu_check.py --dry-run``)
runs them on the CPU at tiny sizes, with random weights, to test the check itself: there the "CUDA" runs
are CPU runs and the tolerances meant for trained networks are not applied. Each test has a time limit
(``gpu_check.time_limit``) and none starts after the run's deadline. Measured numbers go to the junit XML as
properties (``record_property``); no test asserts on a timing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gc)
DRY = gc.dry_run()
if DRY:
    torch.set_num_threads(1)  # the dry run shares a small CPU machine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not DRY and not torch.cuda.is_available(),
                                                  reason="needs a CUDA GPU (make gpu-check)")]
MODEL_PARAMS = [pytest.param(m, id=m[1]) for m in gc.models()]

PSNR_TOL, SSIM_TOL = 0.01, 0.0005  # README / tests: every published row to 0.01 dB / 0.0005
FP32_TOL = 1e-4  # docs/deployment.md and lkdn.Upscaler: float32 within 1e-4 (max abs, images in [0, 1])
FP16_TOL = 1e-2  # docs/deployment.md: float16 within 1e-2 (max abs)
# bf16: docs/deployment.md gives no figure; measured on the CPU (Set5 LR, official weights, max / mean abs):
# LKDN x4 0.020 / 0.0033, LKDN-S 0.041 / 0.0024, SPAN c28 0.046 / 0.0020
BF16_TOL, BF16_MEAN_TOL = 0.1, 5e-3
TILE_TOL = 1e-5  # exact tiles: the same arithmetic, up to the kernels cuDNN picks per tile shape
TRAIN_LOSS_TOL = {"fp32": 0.01, "amp": 0.05}  # relative, mean loss of the last 5 steps, against fp32 NCHW
RESUME_TOL = 1e-6  # bit-identical expected in deterministic mode
OOM_CAP_BYTES, OOM_FACTOR = 8 * 2**30, 3.0  # the image needs about 3x the memory the process may use (8 GiB)


@pytest.fixture(autouse=True)
def time_limit(request: pytest.FixtureRequest) -> Any:
    """At most the test's ``limit_s`` (its ``gpu`` marker), and nothing after the run's deadline."""
    limit = next((m.kwargs["limit_s"] for m in request.node.iter_markers("gpu") if "limit_s" in m.kwargs), 60)
    deadline = float(os.environ.get(gc.DEADLINE_ENV) or "inf")
    limit = min(limit, deadline - time.time())
    if limit < 3:
        pytest.skip("no time left in the 8-minute run")
    with gc.time_limit(limit):
        yield


@pytest.fixture
def device() -> torch.device:
    return gc.check_device()


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())  # NaN propagates


def test_environment(device: torch.device, record_property: Any) -> None:
    """The torch gate passes and every run-time import of lkdn works on the GPU machine's Python."""
    from lkdn.checkpoint import require_safe_torch

    require_safe_torch()
    failed = {}
    for module in ("basicsr.archs.arch_util", "basicsr.data", "basicsr.losses", "basicsr.metrics", "lmdb",
                   "timm.optim", "fvcore.nn", "safetensors.torch", "lkdn.training.pipeline", "lkdn.test"):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - all failures are listed together
            failed[module] = f"{type(err).__name__}: {err}"
    for key, value in gc.environment(device).items():
        record_property(key, value)
    if device.type == "cuda":
        record_property("tf32_cudnn", torch.backends.cudnn.allow_tf32)
    assert not failed, f"imports failing: {failed}"


def _set5(work: Path) -> tuple[Path, Path, bool]:
    from lkdn.zoo import find_benchmark

    found = find_benchmark("Set5", gc.SCALE)
    if found is not None:
        return found[0], found[1], True
    root = work / "demo_data"
    if not (root / "test").is_dir():
        spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "scripts/data_preparation/make_demo_data.py")
        demo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(demo)
        demo.make_demo_data(root, scale=gc.SCALE)
    return root / "test" / f"GTmod{gc.SCALE}", root / "test" / f"LRbicx{gc.SCALE}", False


@pytest.mark.gpu(limit_s=90)
@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_published_numbers_on_cuda(model: tuple[Any, ...], device: torch.device, record_property: Any) -> None:
    """``lkdn/test.py`` on Set5 x4 on CUDA: the published PSNR / SSIM, and the CPU's, within 0.01 dB / 0.0005."""
    from lkdn.test import score as test_main

    label, _, options, checkpoint, published, _ = model
    hr, lr, is_set5 = _set5(gc.work_dir())
    weights, trained = gc.weights_for(options, checkpoint)
    scores = {}
    for where in (device.type, "cpu"):
        argv = ["-opt", str(ROOT / options), "--device", where, "--root", str(gc.work_dir() / f"test_{where}"),
                "--force_yml", f"datasets:test_1:dataroot_gt={hr}", f"datasets:test_1:dataroot_lq={lr}",
                f"path:pretrain_network_g={weights}", "val:save_img=false", *gc.small_overrides(options)]
        scores[where] = test_main(argv)["Set5"]
    gpu, cpu = scores[device.type], scores["cpu"]
    record_property("psnr", round(gpu["psnr"], 4))
    record_property("ssim", round(gpu["ssim"], 5))
    record_property("psnr_cpu", round(cpu["psnr"], 4))
    assert abs(gpu["psnr"] - cpu["psnr"]) <= PSNR_TOL and abs(gpu["ssim"] - cpu["ssim"]) <= SSIM_TOL, (gpu, cpu)
    if not (trained and is_set5):
        pytest.skip(f"{label}: published weights or Set5 not found; CUDA matched the CPU, not compared with "
                    f"the published {published}")
    assert abs(gpu["psnr"] - published[0]) <= PSNR_TOL, f"{label}: PSNR {gpu['psnr']:.4f}, published {published[0]}"
    assert abs(gpu["ssim"] - published[1]) <= SSIM_TOL, f"{label}: SSIM {gpu['ssim']:.5f}, published {published[1]}"


@pytest.mark.gpu(limit_s=60)
@pytest.mark.parametrize("model", MODEL_PARAMS)
def test_upscaler_precisions_and_tiles(model: tuple[Any, ...], device: torch.device, record_property: Any) -> None:
    """``Upscaler`` on CUDA against the CPU: fp32 within 1e-4 (TF32 as torch sets it, and off), bf16 within 0.1 max /
    5e-3 mean, fp16 within 1e-2, all finite; 128-pixel tiles against the whole image within 1e-5."""
    from lkdn.upscaler import Upscaler

    label, _, options, checkpoint, _, local = model
    net, trained = gc.load_model(options, checkpoint, "cpu")
    lr_dir = _set5(gc.work_dir())[1]
    images = [gc.smooth_image(32, 32, seed=s) for s in range(2)] if DRY else [  # Set5 LR, as the tolerances were
        torch.from_numpy(cv2.imread(str(p))[..., ::-1].copy()).permute(2, 0, 1)[None] / 255  # measured on
        for p in sorted(lr_dir.glob("*.png"))]
    references = [Upscaler(net, scale=gc.SCALE, device="cpu")(x) for x in images]
    gpu = Upscaler(net, scale=gc.SCALE, device=device)
    errors = []
    settings = [("fp32", gpu, FP32_TOL, None, True)]
    for precision, limit, mean_limit in (("bf16", BF16_TOL, BF16_MEAN_TOL), ("fp16", FP16_TOL, None)):
        runs_as = "bf16" if DRY and precision == "fp16" else precision  # CPU float16 autocast is emulated
        settings.append((precision, Upscaler(net, scale=gc.SCALE, device=device, precision=runs_as), limit,
                         mean_limit, trained))
    if device.type == "cuda":
        settings.insert(1, ("fp32_tf32_off", gpu, FP32_TOL, None, True))
    for name, upscaler, limit, mean_limit, enforced in settings:
        with (torch.backends.cudnn.flags(enabled=True, benchmark=torch.backends.cudnn.benchmark, allow_tf32=False,
                                         fp32_precision=None) if name == "fp32_tf32_off" else contextlib.nullcontext()):
            outputs = [upscaler(x.to(device)).float().cpu() for x in images]
        worst = max(max_abs(o, r) for o, r in zip(outputs, references, strict=True))
        mean = statistics.fmean(float((o - r).abs().mean()) for o, r in zip(outputs, references, strict=True))
        record_property(f"{name}_max_abs", worst)
        if not all(bool(torch.isfinite(o).all()) for o in outputs):
            errors.append(f"{name}: output not finite")
        elif enforced and not (worst <= limit and (mean_limit is None or mean <= mean_limit)):
            errors.append(f"{name}: max abs {worst:.3g} (limit {limit}), mean abs {mean:.3g} (limit {mean_limit})")
    if local:
        x = gc.smooth_image(*((40, 52) if DRY else gc.DIV2K_LR), seed=1, device=device)
        tile = 16 if DRY else 128
        whole, tiled = gpu(x), gpu(x, tile=tile)
        record_property("tiles_max_abs", max_abs(whole, tiled))
        record_property("tiles_bit_identical", bool(torch.equal(whole, tiled)))
        if not max_abs(whole, tiled) <= TILE_TOL:
            errors.append(f"{tile}-pixel tiles vs whole image: max abs {max_abs(whole, tiled):.3g} (limit {TILE_TOL})")
    assert not errors, f"{label}: " + "; ".join(errors)


# --- training


def measure_training(device: torch.device, amp: str | None, channels_last: bool, *, compile: Any = False,
                     warmup: int, steps: int) -> dict[str, Any]:
    """The official LKDN x4 recipe's training step (``SRModel.optimize_parameters``: L1, Adan, EMA 0.999) at its
    batch 64 and HR patch 192 (dry run: LKDN's small configuration, batch 2) on batches already on the device."""
    from lkdn.archs import our_architectures
    from lkdn.models.sr_model import SRModel
    from lkdn.options import load_yaml
    from lkdn.training.state import DistInfo

    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.BATCH, bench.PATCH = (2, 8) if DRY else (64, 48)
    batches = bench.synthetic_batches(2 if DRY else 6, device=device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the trainer sets it
    opt = load_yaml(ROOT / "options/train/LKDN/train_LKDN_x4.yml")
    network = dict(opt["network_g"], **(our_architectures()["LKDN"].test_options if DRY else {}))
    recipe = {"name": "gpu_check_train", "model_type": "SRModel", "scale": gc.SCALE, "num_gpu": int(not DRY),
              "network_g": network, "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
              "train": dict(opt["train"], amp=amp, channels_last=channels_last, compile=compile),
              "logger": {"save_format": "pth"}}
    torch.manual_seed(0)
    if not DRY:
        torch.cuda.reset_peak_memory_stats()
    model = SRModel(recipe, dist_info=DistInfo("none", 0, 1, 0, device, None))
    losses, first_s, start = [], 0.0, time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        step_start = time.perf_counter()
        lr, hr = batches[i % len(batches)]
        model.update_learning_rate(i + 1)
        model.feed_data({"lq": lr, "gt": hr})
        model.optimize_parameters(i + 1)
        losses.append(float(model.log_dict["l_pix"]))  # synchronizes, as the training loop's finiteness check does
        first_s = first_s or time.perf_counter() - step_start
    return {"it_per_s": steps / (time.perf_counter() - start), "loss": statistics.fmean(losses[-5:]),
            "first_step_s": first_s, "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if not DRY else None}


SETTINGS = [("fp32", None, False), ("fp32 channels_last", None, True), ("bf16", "bf16", False),
            ("bf16 channels_last", "bf16", True), ("fp16 GradScaler", "fp16", False),
            ("fp16 GradScaler channels_last", "fp16", True)]


@pytest.mark.gpu(limit_s=120)
def test_amp_and_channels_last_training(device: torch.device, record_property: Any) -> None:
    """fp32 / AMP bf16 / AMP fp16 (GradScaler), channels_last off and on: the loss of the same steps within 1% of
    fp32 NCHW (fp32 rewrites) or 5% (AMP); it/s recorded (goal: bf16 channels_last >= 2x fp32)."""
    rows, errors = {}, []
    for name, amp, channels_last in SETTINGS:
        if DRY and amp:  # CPU: bf16 NCHW stands in (fp16 is CUDA only, bf16 channels_last misreads on the CPU)
            amp, channels_last = "bf16", False
        rows[name] = row = measure_training(device, amp, channels_last, warmup=1 if DRY else 3, steps=4 if DRY else 20)
        record_property(f"{name} it/s", round(row["it_per_s"], 3))
        if row["peak_mb"]:
            record_property(f"{name} MB", round(row["peak_mb"]))
        rel = abs(row["loss"] - rows["fp32"]["loss"]) / rows["fp32"]["loss"]
        record_property(f"{name} loss vs fp32", round(rel, 5))
        if not rel <= TRAIN_LOSS_TOL["amp" if amp else "fp32"]:
            errors.append(f"{name}: loss {row['loss']:.5f} vs fp32 {rows['fp32']['loss']:.5f} ({rel:.2%})")
    speedup = rows["bf16 channels_last"]["it_per_s"] / rows["fp32"]["it_per_s"]
    record_property("bf16 channels_last / fp32 speed (goal >= 2)", round(speedup, 3))
    assert not errors, "; ".join(errors)


# --- the training pipeline on CUDA: resume, torchrun, SIGTERM, the loader


def training_options(name: str, *, lmdb: bool = False, **changes: Any) -> tuple[Path, dict[str, Any]]:
    """The official LKDN x4 recipe on synthetic disk images (or LMDBs made by create_lmdb.py), without validation;
    the options file written under the work folder."""
    import cv2
    import numpy as np
    import yaml

    from lkdn.archs import our_architectures
    from lkdn.options import load_yaml

    work = gc.work_dir()
    count, size = (12, 64) if lmdb and DRY else (160, 480) if lmdb else (8, 32) if DRY else (16, 128)
    folder = work / f"images_{count}x{size}"
    if not folder.is_dir():
        rng = np.random.default_rng(0)
        for sub in ("HR", "LR"):
            (folder.with_suffix(".tmp") / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            hr = cv2.resize(rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8), (size, size))
            hr = np.clip(hr.astype(np.int16) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder.with_suffix(".tmp") / "HR" / f"{i:04d}.png"), hr)
            lr = cv2.resize(hr, (size // gc.SCALE,) * 2, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder.with_suffix(".tmp") / "LR" / f"{i:04d}.png"), lr)
        if lmdb:
            spec = importlib.util.spec_from_file_location("create_lmdb", ROOT / "scripts/data_preparation/create_lmdb.py")
            create = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(create)
            for sub in ("HR", "LR"):
                create.main(["--input", str(folder.with_suffix(".tmp") / sub), "--output",
                             str(folder.with_suffix(".tmp") / f"{sub}.lmdb")])
        os.replace(folder.with_suffix(".tmp"), folder)
    opt = load_yaml(ROOT / "options/train/LKDN/train_LKDN_x4.yml")
    train_set = dict(opt["datasets"]["train"], name="synthetic", io_backend={"type": "lmdb" if lmdb else "disk"},
                     dataroot_gt=str(folder / ("HR.lmdb" if lmdb else "HR")),
                     dataroot_lq=str(folder / ("LR.lmdb" if lmdb else "LR")), gt_size=16 if DRY else 64,
                     batch_size_per_gpu=2 if DRY else 16, num_worker_per_gpu=0 if DRY else 2)
    train_set.update(changes.pop("dataset", {}))
    opt.update(name=name, num_gpu=int(not DRY), manual_seed=0, datasets={"train": train_set})
    opt.pop("val", None)
    if DRY:
        opt["network_g"].update(our_architectures()["LKDN"].test_options)
    opt["train"].update(total_iter=changes.pop("total_iter", 8 if DRY else 12),
                        deterministic=changes.pop("deterministic", False))
    opt["logger"].update(print_freq=1, save_checkpoint_freq=changes.pop("save_every", 10**9), use_tb_logger=False)
    opt["logger"].pop("wandb", None)
    opt.update(changes)
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
    return path, opt


def train_log(name: str) -> list[dict[str, Any]]:
    path = gc.work_dir() / "experiments" / name / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@pytest.mark.gpu(limit_s=90)
def test_exact_resume_under_cudnn(record_property: Any) -> None:
    """Deterministic mode (``train.deterministic``): 6 + 6 iterations resumed from the state equal 12 in one go,
    ``params`` and ``params_ema`` within 1e-6 (bit-identical expected), the logged losses equal."""
    from lkdn.checkpoint import load_file
    from lkdn.training.pipeline import train_pipeline

    work, total = gc.work_dir(), 10 if DRY else 12
    for name in ("resume_full", "resume_part"):
        path, _ = training_options(name, total_iter=total, save_every=total // 2, deterministic=True,
                                   dataset={"dataset_enlarge_ratio": 1 if DRY else 5})
        extra = ["--force_yml", f"train:total_iter={total // 2}"] if name == "resume_part" else []
        assert train_pipeline(argv=["-opt", str(path), "--root_path", str(work), *extra]) == 0
    state = work / "experiments" / "resume_part" / "training_states" / f"{total // 2}.state"
    assert train_pipeline(argv=["-opt", str(path), "--root_path", str(work), "--force_yml",
                                f"path:resume_state={state}"]) == 0
    full, part = (load_file(work / "experiments" / n / "models" / "net_g_latest.pth") for n in ("resume_full",
                                                                                              "resume_part"))
    diff = max(max_abs(full[g][k], part[g][k]) for g in ("params", "params_ema") for k in full[g] if full[g][k].numel())
    record_property("max_abs_weight_diff", diff)
    record_property("bit_identical", all(torch.equal(full[g][k], part[g][k]) for g in ("params", "params_ema")
                                         for k in full[g]))
    assert diff <= RESUME_TOL
    assert [r["l_pix"] for r in train_log("resume_full")] == [r["l_pix"] for r in train_log("resume_part")]


@pytest.mark.gpu(limit_s=90)
def test_torchrun_with_nccl(record_property: Any) -> None:
    """``torchrun --standalone --nproc_per_node=<visible GPUs> lkdn/train.py --launcher pytorch`` with nccl (one
    process per GPU; dry run: one gloo process): exit 0, the log names the world asked for, weights written."""
    procs = 1 if DRY else torch.cuda.device_count()
    backend = "gloo" if DRY else "nccl"
    path, opt = training_options("torchrun", total_iter=4 if DRY else 6, dist_params={"backend": backend, "port": 29511})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               str(ROOT / "lkdn" / "train.py"), "-opt", str(path), "--launcher", "pytorch", "--root_path",
               str(gc.work_dir())]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=80)
    record_property("processes", procs)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    exp = gc.work_dir() / "experiments" / "torchrun"
    logs = "".join(p.read_text(errors="replace") for p in exp.glob("train_*.log"))
    assert f"{procs} process(es), launcher pytorch, backend {backend}" in logs
    assert (exp / "models" / "net_g_latest.pth").is_file()
    if procs < 2:
        record_property("note", f"one {backend} process; the all-reduce between GPUs needs two or more")


@pytest.mark.gpu(limit_s=60)
def test_sigterm_saves_a_state_and_auto_resume_continues(record_property: Any) -> None:
    """SIGTERM after three logged iterations of a CUDA run: exit 143, a state and its network saved;
    ``--auto_resume`` logs the next iterations and ends with 0."""
    from lkdn.training.pipeline import train_pipeline

    path, opt = training_options("sigterm", total_iter=100000)
    done = threading.Event()

    def signal_after_three_iterations() -> None:
        while not done.is_set():
            if len(train_log("sigterm")) >= 3:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    threading.Thread(target=signal_after_three_iterations, daemon=True).start()
    try:
        rc = train_pipeline(argv=["-opt", str(path), "--root_path", str(gc.work_dir())])
    finally:
        done.set()
    exp = gc.work_dir() / "experiments" / "sigterm"
    states = sorted(int(p.stem) for p in (exp / "training_states").glob("*.state"))
    record_property("exit_status", rc)
    assert rc == 128 + signal.SIGTERM and states, (rc, states)
    assert (exp / "models" / f"net_g_{states[-1]}.pth").is_file()
    rc = train_pipeline(argv=["-opt", str(path), "--root_path", str(gc.work_dir()), "--auto_resume", "--force_yml",
                              f"train:total_iter={states[-1] + 2}"])
    assert rc == 0 and [r["iter"] for r in train_log("sigterm")][-2:] == [states[-1] + 1, states[-1] + 2]


@pytest.mark.gpu(limit_s=90)
def test_training_through_the_lmdb_loader(record_property: Any) -> None:
    """``train_pipeline`` with LMDBs from create_lmdb.py, the recipe's batch and patch, 6 loader workers and the
    CUDA prefetcher ends normally; it/s and the data-time share recorded (whether the loader keeps up is an
    observation about the machine)."""
    from lkdn.training.pipeline import train_pipeline

    sizes = {"gt_size": 32, "batch_size_per_gpu": 2, "num_worker_per_gpu": 2} if DRY else {
        "gt_size": 192, "batch_size_per_gpu": 64, "num_worker_per_gpu": 6}
    path, opt = training_options("loader", lmdb=True, total_iter=8 if DRY else 60, dataset=sizes)
    assert train_pipeline(argv=["-opt", str(path), "--root_path", str(gc.work_dir())]) == 0
    lines = train_log("loader")[5:]
    record_property("it_per_s", round(1 / statistics.median(r["time"] for r in lines), 3))
    record_property("data_fraction", round(statistics.median(r["data_time"] / r["time"] for r in lines), 3))
    record_property("prefetch_mode", opt["datasets"]["train"].get("prefetch_mode"))


@pytest.mark.gpu(limit_s=90)
def test_out_of_memory_falls_back_to_tiles(device: torch.device, record_property: Any, request: Any) -> None:
    """LKDN x4 through the ``Upscaler`` on an image needing about 3x the memory the process may use (8 GiB, or the
    GPU): ``lkdn.images.run_network`` retries in tiles; full-size finite output, within 1e-5 of the same tiles asked
    for explicitly (dry run: the forward raises ``torch.OutOfMemoryError`` above a pixel count)."""
    from lkdn import profiling
    from lkdn.upscaler import Upscaler

    net, _ = gc.load_model(gc.MODELS[0][2], gc.MODELS[0][3], "cpu")
    up = Upscaler(net, scale=gc.SCALE, device=device)
    if DRY:
        side, network = 96, up.network

        def limited(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2] * x.shape[-1] > (side // 2 + up.tile_pad) ** 2:
                raise torch.OutOfMemoryError(f"simulated out of memory (dry run): {tuple(x.shape)}")
            return network(x)

        up.network = limited
    else:
        total = torch.cuda.get_device_properties(device).total_memory
        cap = min(total, OOM_CAP_BYTES)
        torch.cuda.set_per_process_memory_fraction(cap / total, device)
        request.addfinalizer(lambda: torch.cuda.set_per_process_memory_fraction(1.0, device))  # for the next tests
        probe = gc.smooth_image(1024, 1024, device=device)
        per_pixel = profiling.peak_memory(up, probe)["delta_mb"] * 2**20 / 1024**2
        del probe
        torch.cuda.empty_cache()
        side = int((OOM_FACTOR * cap / per_pixel) ** 0.5)
    lr = gc.smooth_image(side, side, seed=2, device=device)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record) if "retrying with" in record.getMessage() else None
    logging.getLogger("lkdn.images").addHandler(handler)
    try:
        out = up(lr).cpu()
    finally:
        logging.getLogger("lkdn.images").removeHandler(handler)
    record_property("input", side)
    record_property("retries", len(records))
    assert records, "no out-of-memory retry was logged"
    assert list(out.shape) == [1, 3, side * gc.SCALE, side * gc.SCALE] and bool(torch.isfinite(out).all())
    tile = int(re.findall(r"(\d+)x\1 tiles", records[-1].getMessage())[-1])
    record_property("tile", tile)
    assert max_abs(out, up(lr, tile=tile)) <= TILE_TOL


@pytest.mark.gpu(limit_s=150)
def test_compiled_upscaler(device: torch.device, record_property: Any) -> None:
    """``Upscaler(compile=True)`` (inductor; dry run: ``backend="eager"``) on LKDN x4 at 510x339: within 1e-4 of
    the eager ``Upscaler``; compile time (the first call) and the warmed median recorded."""
    from lkdn import profiling
    from lkdn.upscaler import Upscaler

    net, _ = gc.load_model(gc.MODELS[0][2], gc.MODELS[0][3], "cpu")
    x = gc.smooth_image(*(gc.DRY_LR if DRY else gc.DIV2K_LR), device=device)
    eager = Upscaler(net, scale=gc.SCALE, device=device)
    if DRY:
        compiled = Upscaler(net, scale=gc.SCALE, device=device)
        compiled.network = torch.compile(compiled.network, backend="eager")
    else:
        compiled = Upscaler(net, scale=gc.SCALE, device=device, compile=True)
    start = time.perf_counter()
    out = compiled(x)
    record_property("compile_s", round(time.perf_counter() - start, 2))
    record_property("compiled_ms", profiling.measure_runtime(compiled, x, runs=2 if DRY else 20)["median_ms"])
    record_property("eager_ms", profiling.measure_runtime(eager, x, runs=2 if DRY else 20)["median_ms"])
    assert max_abs(out, eager(x)) <= FP32_TOL


@pytest.mark.gpu(limit_s=150)
def test_compiled_training(device: torch.device, record_property: Any) -> None:
    """``train.compile: true`` with bf16 + channels_last (dry run: bf16 NCHW, ``backend: eager``): the loss within
    5% of the same eager steps; compile time and it/s recorded."""
    amp, channels_last, compile = ("bf16", False, {"backend": "eager"}) if DRY else ("bf16", True, True)
    steps = {"warmup": 2, "steps": 3} if DRY else {"warmup": 3, "steps": 20}
    eager = measure_training(device, amp, channels_last, **steps)
    compiled = measure_training(device, amp, channels_last, compile=compile, **steps)
    record_property("compile_s", round(compiled["first_step_s"], 2))
    record_property("it/s compiled", round(compiled["it_per_s"], 3))
    record_property("it/s eager", round(eager["it_per_s"], 3))
    rel = abs(compiled["loss"] - eager["loss"]) / eager["loss"]
    assert rel <= TRAIN_LOSS_TOL["amp"], f"compiled loss {compiled['loss']:.5f} vs eager {eager['loss']:.5f}"
