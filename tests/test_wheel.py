"""The wheel: built from the clone, installed aside, every command runs from it with no clone on the path.

The package's files (``setup.py``, ``pyproject.toml``, ``README.md``, ``requirements.txt``, ``lkdn/``) are
copied to a scratch folder and built there (``pip wheel --no-deps --no-build-isolation``), so the clone
gets no build output; the wheel is installed with ``pip install --no-deps --target``. Then, from a folder
outside the clone: every console command's ``--help`` (the installed ``bin/`` scripts), and one real
upscale by ``lkdn-infer`` with a tiny LKDN saved here, from the wheel's code.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT

from lkdn import build_network
from lkdn.commands import COMMANDS

SCALE = 2
TINY = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": SCALE}


def pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the package's files and installed into a folder of its own."""
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.py", "pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lkdn", source / "lkdn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist, site = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    pip("wheel", ".", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q", "-w", str(dist), cwd=source)
    wheel = next(dist.glob("lkdn_sr-*.whl"))
    packages = {str(p.parent.relative_to(ROOT)).replace(os.sep, "/") for p in (ROOT / "lkdn").rglob("__init__.py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"{package}/__init__.py" for package in packages} <= names  # every package, lkdn.commands among them
    modules = {str(p.relative_to(ROOT)).replace(os.sep, "/") for p in (ROOT / "lkdn").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    pip("install", "--no-deps", "--no-compile", "-q", "--target", str(site), str(wheel), cwd=source)
    return site


def environment(site: Path) -> dict[str, str]:
    """The wheel's folder first on the path, and nothing of the clone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(site), "LKDN_OFFLINE": "1"}


def test_the_wheel_is_what_runs_outside_the_clone(site: Path, tmp_path: Path) -> None:
    code = "import lkdn, lkdn.commands.inference as c, sys; print(lkdn.__file__); print(c.__file__); print(repr(sys.path))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(site), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    package, command, path = done.stdout.splitlines()
    assert Path(package).is_relative_to(site) and Path(command).is_relative_to(site), done.stdout
    environment_folder = Path(sys.prefix).resolve()  # the virtual environment may live inside the clone
    clone = [p for p in ast.literal_eval(path) if (tmp_path / p).resolve().is_relative_to(ROOT)  # "": the cwd
             and not (tmp_path / p).resolve().is_relative_to(environment_folder)]
    assert clone == [], clone


def test_every_command_answers_help_from_the_wheel(site: Path, tmp_path: Path) -> None:
    for command in COMMANDS:
        script = site / "bin" / command
        assert script.is_file(), command
        done = subprocess.run([str(script), "--help"], cwd=tmp_path, env=environment(site), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert done.stdout.startswith(f"usage: {command} "), command


def test_lkdn_infer_from_the_wheel_upscales_an_image(site: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save({"params": build_network(TINY).state_dict()}, weights)
    options = tmp_path / "tiny.yml"
    options.write_text(yaml.safe_dump({"name": "tiny", "scale": SCALE, "num_gpu": 0, "network_g": TINY,
                                       "path": {"pretrain_network_g": str(weights)}}), encoding="utf-8")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "x.png"), np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    out = tmp_path / "out"
    done = subprocess.run([str(site / "bin" / "lkdn-infer"), "-opt", str(options), "--input", str(photos), "--output",
                           str(out), "--device", "cpu"], cwd=tmp_path, env=environment(site), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    image = cv2.imread(str(out / "x.png"), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape == (12 * SCALE, 16 * SCALE, 3)


def test_the_wheel_keeps_downloads_in_the_user_cache_not_the_installation(site: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**environment(site), "XDG_CACHE_HOME": str(cache)}
    env.pop("LKDN_SHARED", None)
    done = subprocess.run([str(site / "bin" / "lkdn-download"), "--list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"downloads it to {cache / 'lkdn' / 'pretrained_models' / 'LKDN' / 'LKDN_x4.pth'}" in done.stdout
    assert str(site) not in done.stdout
