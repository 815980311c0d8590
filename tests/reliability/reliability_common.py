"""Helpers of the reliability tests: tiny data and options, running and killing training runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from conftest import load_script
from test_train_common import apply_changes  # noqa: E402 (tests/ is on the path, as for conftest)

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.checkpoint import load_file, save_file
from lkdn.training.pipeline import train_pipeline

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = ROOT / "lkdn" / "train.py"
TEST_SCRIPT = ROOT / "lkdn" / "test.py"
SCALE = 2
NAMES = ("a", "b", "c", "d")

TINY = {
    "name": "tiny",
    "model_type": "SRModel",
    "scale": SCALE,
    "num_gpu": 0,
    "manual_seed": 11,
    "datasets": {
        "train": {
            "name": "tiny_train", "type": "PairedImageDataset", "dataroot_gt": None, "dataroot_lq": None,
            "io_backend": {"type": "disk"}, "gt_size": 16, "use_hflip": True, "use_rot": True,
            "num_worker_per_gpu": 0, "batch_size_per_gpu": 2, "dataset_enlarge_ratio": 2, "prefetch_mode": None,
        },
    },
    "network_g": {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": SCALE, "num_in": 1},
    "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
    "train": {
        "ema_decay": 0.9,
        "optim_g": {"type": "Adam", "lr": 2e-3, "betas": [0.9, 0.99]},
        "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
        "total_iter": 12, "warmup_iter": -1,
        "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
    },
    "logger": {"print_freq": 1, "save_checkpoint_freq": 4, "use_tb_logger": False},
}

VAL = {"name": "tiny_val", "type": "PairedImageDataset", "dataroot_gt": None, "dataroot_lq": None,
       "io_backend": {"type": "disk"}}
METRICS = {"psnr": {"type": "calculate_psnr", "crop_border": SCALE, "test_y_channel": True}}


def make_images(folder: Path, *, size: int = 32, names: tuple[str, ...] = NAMES, seed: int = 0) -> tuple[Path, Path]:
    """Smooth random HR images (``size`` square) and their x2 LR images (area down-sampling); (hr_dir, lr_dir)."""
    rng = np.random.default_rng(seed)
    hr_dir, lr_dir = folder / "HR", folder / f"LRx{SCALE}"
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        hr = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(hr_dir / f"{name}.png"), hr)
        cv2.imwrite(str(lr_dir / f"{name}.png"), cv2.resize(hr, (size // SCALE, size // SCALE),
                                                            interpolation=cv2.INTER_AREA))
    return hr_dir, lr_dir


def options(hr: Path, lr: Path, *, name: str = "tiny", val: bool = False, **changes: Any) -> dict[str, Any]:
    """The tiny training options on ``hr``/``lr`` with ``changes`` (``section__key=value`` for nested keys)."""
    opt = json.loads(json.dumps(TINY))
    opt["name"] = name
    opt["datasets"]["train"].update(dataroot_gt=str(hr), dataroot_lq=str(lr))
    if val:
        opt["datasets"]["val"] = dict(VAL, dataroot_gt=str(hr), dataroot_lq=str(lr))
        opt["val"] = {"val_freq": 1000, "metrics": METRICS}
    return apply_changes(opt, changes)


def write_yaml(folder: Path, opt: dict[str, Any]) -> Path:
    path = folder / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
    return path


TINY_NET = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": SCALE, "num_in": 1}


def script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module, its ``main`` to run in this process."""
    return load_script(f"scripts/{name}.py")


def tiny_weights(folder: Path) -> Path:
    """``TINY_NET`` with seed-0 weights, saved as ``folder/tiny.pth``."""
    torch.manual_seed(0)
    return save_file({"params": build_network(TINY_NET).state_dict()}, folder / "tiny.pth")


def test_set_options(folder: Path, data: tuple[Path, Path], weights: Path, *, name: str,
                     network: dict[str, Any] | None = None, val: dict[str, Any] | None = None,
                     **changes: Any) -> Path:
    """Options of lkdn/test.py (and of the scripts) on the tiny pairs ``data`` = (hr, lr) with ``weights``,
    written to ``folder/<name>.yml``: ``network`` (``TINY_NET`` by default), images saved, ``METRICS``,
    ``val`` added to the val section and ``changes`` at the top level."""
    hr, lr = data
    opt = {"name": name, "scale": SCALE, "num_gpu": 0, "network_g": network or TINY_NET,
           "datasets": {"test_1": {**VAL, "name": "set", "dataroot_gt": str(hr), "dataroot_lq": str(lr)}},
           "path": {"pretrain_network_g": str(weights)},
           "val": {"save_img": True, "metrics": METRICS, **(val or {})}}
    opt.update(changes)
    return write_yaml(folder, opt)


test_set_options.__test__ = False  # a helper, not a test


def one_line(stderr: str) -> str:
    """The one ``error: ...`` line of a command's stderr (log lines aside); fails on a traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    return errors[0]


def train(options_file: Path, root: Path, *extra: str) -> int:
    """The training pipeline in this process (experiments under ``root``)."""
    return train_pipeline(argv=["-opt", str(options_file), "--root_path", str(root), *extra])


def experiment(root: Path, name: str) -> Path:
    return root / "experiments" / name


def weights(root: Path, name: str, label: int | str = "latest") -> dict[str, dict[str, torch.Tensor]]:
    return load_file(experiment(root, name) / "models" / f"net_g_{label}.pth")


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_weights(a[key], b[key])
        else:
            assert torch.equal(a[key], b[key]), f"{key} differs"


def logged_iters(root: Path, name: str) -> list[int]:
    """Iterations of the complete lines of ``train_log.jsonl`` (a line cut by a kill is ignored)."""
    path = experiment(root, name) / "train_log.jsonl"
    if not path.is_file():
        return []
    iters = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            iters.append(int(json.loads(line)["iter"]))
        except (json.JSONDecodeError, KeyError):
            continue
    return iters


def losses(root: Path, name: str) -> list[tuple[int, float]]:
    path = experiment(root, name) / "train_log.jsonl"
    return [(r["iter"], r["l_pix"]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


def state_iters(root: Path, name: str) -> list[int]:
    folder = experiment(root, name) / "training_states"
    return sorted(int(p.stem) for p in folder.glob("*.state")) if folder.is_dir() else []


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool]) -> None:
    """Poll ``condition`` every 2 ms; fail when ``timeout`` passes or the process dies first."""
    end = time.monotonic() + timeout
    while not condition():
        if not alive():
            raise AssertionError(f"the process ended before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def cli_env() -> dict[str, str]:
    """Environment of a training subprocess: one thread (as the in-process tests), repository importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("LKDN_TRACEBACK", None)
    return env


def start_cli(script: Path, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_cli(script: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)
