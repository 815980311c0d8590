"""A network the project has never seen is one file and one YAML: every entry point takes it.

A scratch checkout (this project's ``lkdn/``, ``scripts/``, ``options/`` and registry tests) gets
``tests/data/tinyrep_arch.py`` as ``lkdn/archs/tinyrep_arch.py`` and nothing else; the YAML is
written here. Then, each as a user runs it: the registry-driven tests, ``lkdn/train.py``,
``lkdn/test.py``, ``scripts/reparameterize.py`` and ``lkdn/test.py`` on the deploy YAML it wrote
(same PSNR), ``scripts/export_onnx.py``, ``scripts/profile_model.py`` and ``Upscaler`` with tiles
(exact: the network declares itself translation-local).

``tests/data/tinycopy_arch.py`` is a second such network whose ``fuse()`` builds ``nn.Conv2d`` in the
default dtype and copies the folded weights in: ``scripts/reparameterize.py`` accepts its exact fold
(the deploy output matches) and refuses a fold that is wrong by 1e-6.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow

SCALE = 2
NETWORK = {"type": "TinyRepNet", "num_feat": 8, "num_block": 2, "upscale": SCALE}
METRICS = {"psnr": {"type": "calculate_psnr", "crop_border": SCALE, "test_y_channel": True}}


def run(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the scratch checkout's lkdn, as the editable install of a clone puts its own lkdn first
    env = {**os.environ, "LKDN_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, *args], cwd=checkout, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def images(folder: Path, count: int, size: int, seed: int) -> tuple[Path, Path]:
    """Smooth random HR images and their x2 area downscales."""
    rng = np.random.default_rng(seed)
    hr_dir, lr_dir = folder / "HR", folder / "LR"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    for i in range(count):
        coarse = rng.random((size // 8, size // 8, 3)).astype(np.float32)
        hr = (cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).round().astype(np.uint8)
        cv2.imwrite(str(hr_dir / f"img{i}.png"), hr)
        cv2.imwrite(str(lr_dir / f"img{i}.png"), cv2.resize(hr, (size // 2, size // 2), interpolation=cv2.INTER_AREA))
    return hr_dir, lr_dir


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("lkdn", "scripts", "options"):
        shutil.copytree(ROOT / folder, root / folder, ignore=ignore)
    (root / "tests").mkdir()
    for name in ("conftest.py", "test_archs_registry.py", "test_upscaler.py"):
        shutil.copy(ROOT / "tests" / name, root / "tests" / name)
    for name in ("tinyrep_arch.py", "tinycopy_arch.py"):
        shutil.copy(ROOT / "tests" / "data" / name, root / "lkdn" / "archs" / name)
    return root


@pytest.fixture(scope="module")
def trained(checkout: Path) -> dict:
    train_hr, train_lr = images(checkout / "data" / "train", 4, 64, seed=0)
    val_hr, val_lr = images(checkout / "data" / "val", 2, 48, seed=1)
    val_set = {"name": "val", "type": "PairedImageDataset", "dataroot_gt": str(val_hr), "dataroot_lq": str(val_lr),
               "io_backend": {"type": "disk"}}
    train_opt = {
        "name": "tiny", "model_type": "SRModel", "scale": SCALE, "num_gpu": 0, "manual_seed": 0,
        "datasets": {
            "train": {"name": "train", "type": "PairedImageDataset", "dataroot_gt": str(train_hr),
                      "dataroot_lq": str(train_lr), "io_backend": {"type": "disk"}, "gt_size": 32, "use_hflip": True,
                      "use_rot": True, "num_worker_per_gpu": 0, "batch_size_per_gpu": 2, "dataset_enlarge_ratio": 2},
            "val": val_set,
        },
        "network_g": NETWORK,
        "train": {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 4, "warmup_iter": -1,
                  "pixel_opt": {"type": "L1Loss"}},
        "val": {"val_freq": 4, "metrics": METRICS},
        "logger": {"print_freq": 2, "save_checkpoint_freq": 4},
    }
    train_yml = checkout / "train_tiny.yml"
    train_yml.write_text(yaml.safe_dump(train_opt, sort_keys=False))
    run(checkout, "lkdn/train.py", "-opt", str(train_yml))
    weights = checkout / "experiments" / "tiny" / "models" / "net_g_latest.pth"
    test_opt = {"name": "tiny_test", "scale": SCALE, "num_gpu": 0, "datasets": {"test_1": val_set},
                "network_g": NETWORK, "path": {"pretrain_network_g": str(weights)}, "val": {"metrics": METRICS}}
    test_yml = checkout / "test_tiny.yml"
    test_yml.write_text(yaml.safe_dump(test_opt, sort_keys=False))
    return {"train_yml": train_yml, "test_yml": test_yml, "weights": weights}


def test_registry_driven_tests_pick_the_new_network_up(checkout: Path) -> None:
    done = run(checkout, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_archs_registry.py",
               "tests/test_upscaler.py", "-k", "Tiny")
    summary = done.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "skipped" not in summary, done.stdout[-2000:]
    assert int(summary.split()[0]) >= 8  # shapes and gradients at x2/x3/x4 for both, and the inference paths


def test_train_test_reparameterize_and_test_the_deploy_form(checkout: Path, trained: dict) -> None:
    run(checkout, "lkdn/test.py", "-opt", str(trained["test_yml"]), "--root", str(checkout))
    trained_psnr = json.loads((checkout / "results" / "tiny_test" / "metrics.json").read_text())["val"]["psnr"]
    deploy, deploy_yml = checkout / "deploy.pth", checkout / "test_tiny_deploy.yml"
    done = run(checkout, "scripts/reparameterize.py", "-opt", str(trained["train_yml"]), "--input",
               str(trained["weights"]), "--output", str(deploy), "--output-opt", str(deploy_yml))
    assert "folded: 2 RepBlock" in done.stdout
    deploy_opt = yaml.safe_load(deploy_yml.read_text())
    assert deploy_opt["network_g"] == {**NETWORK, "reparameterized": True}  # no deploy rule registered anywhere
    assert deploy_opt["path"]["strict_load_g"] is True
    run(checkout, "lkdn/test.py", "-opt", str(deploy_yml), "--root", str(checkout))
    deploy_name = deploy_opt["name"]  # the training run's name: tiny_deploy
    deploy_psnr = json.loads((checkout / "results" / deploy_name / "metrics.json").read_text())["val"]["psnr"]
    assert abs(deploy_psnr - trained_psnr) <= 0.01


def test_export_profile_and_tiles(checkout: Path, trained: dict) -> None:
    onnx = pytest.importorskip("onnxruntime")  # noqa: F841 (the export checks with it)
    done = run(checkout, "scripts/export_onnx.py", "-opt", str(trained["test_yml"]), "--output",
               str(checkout / "tiny.onnx"))
    assert "max |onnxruntime - pytorch|" in done.stdout and (checkout / "tiny.onnx").is_file()
    done = run(checkout, "scripts/profile_model.py", "-opt", str(trained["train_yml"]), "--lr-size", "40x32",
               "--runs", "1", "--json")
    profiles = json.loads(done.stdout)["profiles"]
    assert profiles[0]["params"] > profiles[1]["params"]  # the deploy row is the folded network
    code = (
        "import torch, lkdn; from lkdn import Upscaler\n"
        f"up = Upscaler.from_config({str(trained['test_yml'])!r}, device='cpu')\n"
        "x = torch.rand(1, 3, 70, 58)\n"
        "print(up.tiling.exact, float((up(x, tile=16) - up(x)).abs().max()))\n"
    )
    exact, diff = run(checkout, "-c", code).stdout.split()
    assert exact == "True" and float(diff) <= 1e-5


@pytest.mark.parametrize("fold_error", [0.0, 1e-6])
def test_reparameterize_a_fuse_that_builds_modules_in_the_default_dtype(checkout: Path, fold_error: float) -> None:
    work = checkout / f"copy_{fold_error}"
    val_hr, val_lr = images(work / "val", 1, 32, seed=2)
    network = {"type": "TinyCopyNet", "num_feat": 8, "num_block": 2, "upscale": SCALE, "fold_error": fold_error}
    weights, deploy, deploy_yml = work / "net.pth", work / "deploy.pth", work / "test_deploy.yml"
    code = (
        "import torch, lkdn; from lkdn import build_network\n"
        "torch.manual_seed(0)\n"
        f"net = build_network({network!r})\n"
        f"torch.save({{'params': net.state_dict()}}, {str(weights)!r})\n"
    )
    run(checkout, "-c", code)
    opt = {"name": "copy", "scale": SCALE, "num_gpu": 0, "network_g": network, "path": {"pretrain_network_g": str(weights)},
           "datasets": {"test_1": {"name": "val", "type": "PairedImageDataset", "dataroot_gt": str(val_hr),
                                   "dataroot_lq": str(val_lr), "io_backend": {"type": "disk"}}},
           "val": {"metrics": METRICS}}
    test_yml = work / "test.yml"
    test_yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    args = ["scripts/reparameterize.py", "-opt", str(test_yml), "--input", str(weights), "--output", str(deploy),
            "--output-opt", str(deploy_yml)]
    if fold_error:
        env = {**os.environ, "LKDN_OFFLINE": "1", "PYTHONPATH": str(checkout)}
        done = subprocess.run([sys.executable, *args], cwd=checkout, capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "verification failed" in done.stderr and "nothing written" in done.stderr
        assert not deploy.exists() and not deploy_yml.exists()
        return
    done = run(checkout, *args)
    assert "folded: 2 CopyBlock" in done.stdout
    code = (
        "import torch, lkdn; from lkdn import Upscaler\n"
        f"a = Upscaler.from_config({str(test_yml)!r}, device='cpu', optimize=False)\n"
        f"b = Upscaler.from_config({str(deploy_yml)!r}, device='cpu', optimize=False)\n"
        "x = torch.rand(1, 3, 21, 17, generator=torch.Generator().manual_seed(0))\n"
        "print(sum(p.numel() for p in a.network.parameters()), sum(p.numel() for p in b.network.parameters()),"
        " float((a(x) - b(x)).abs().max()))\n"
    )
    before, after, diff = run(checkout, "-c", code).stdout.split()
    assert int(after) < int(before) and float(diff) <= 1e-5
