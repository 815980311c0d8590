"""Fill a folder with the wheels a GPU machine without network needs beside its own torch (``make gpu-wheels``).

The GPU machine (docs/gpu_check.md) has Python 3.12 with its own torch, torchvision, timm,
opencv-python-headless, scikit-image, onnxruntime, safetensors, tensorboard and pytest, and no
network. What ``lkdn`` imports beyond those travels as wheels, one version of each (the versions
this project's venv is tested with):

* binary or pure-Python wheels from the package index, for CPython 3.12 on manylinux x86_64::

      pip download --only-binary=:all: --python-version 3.12 --implementation cp \\
          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \\
          --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --no-deps NAME==VERSION

* wheels built here from source distributions that have no wheel on the index (all pure Python):
  ``pip wheel --no-deps --no-build-isolation NAME==VERSION``; basicsr 1.4.2's ``setup.py``
  imports torch, hence no build isolation (its C++/CUDA extensions are off unless
  ``BASICSR_EXT`` is set, so the wheel is pure Python).

Usage::

    python scripts/make_gpu_wheels.py [--dest .whl]

Prints each wheel and the total, which must stay under 64 MiB (what travels to the GPU
machine with the working tree); other ``*.whl`` files in the folder are removed. On the GPU
machine (the command of ``benchmarks/gpu_check.py``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")

# name -> (version, how: "download" a wheel from the index or "build" one from the sdist, why it travels)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "basicsr": ("1.4.2", "build", "registries, datasets, metrics, losses (sdist only; setup imports torch)"),
    "lmdb": ("3.0.0", "download", "basicsr's LMDB file client (binary, cp312)"),
    "addict": ("2.4.0", "download", "basicsr requirement"),
    "yapf": ("0.43.0", "download", "basicsr requirement"),
    "platformdirs": ("4.14.9", "download", "yapf requirement"),
    "fvcore": ("0.1.5.post20221221", "build", "NTIRE FLOPs (lkdn.profiling.ntire_flops; sdist only)"),
    "iopath": ("0.1.10", "build", "fvcore requirement (sdist only)"),
    "yacs": ("0.1.8", "download", "fvcore requirement"),
    "portalocker": ("4.4.2", "download", "iopath requirement"),
    "tabulate": ("0.10.0", "download", "fvcore requirement"),
    "termcolor": ("3.3.0", "download", "fvcore requirement"),
}

_PURE = re.compile(r"-(py3|py2\.py3)-none-any\.whl$")
_CP312 = re.compile(r"-cp312-(cp312|abi3|none)-[^-]*(manylinux)[^-]*x86_64[^-]*\.whl$")


def wheel_name(path: Path) -> str:
    """The normalized project name of a wheel file (``portalocker-4.4.2-py3-none-any.whl`` -> ``portalocker``)."""
    return re.sub(r"[-_.]+", "-", path.name.split("-", 1)[0]).lower()


def fits_gpu_machine(path: Path) -> bool:
    """Whether a wheel installs on CPython 3.12, manylinux x86_64 (pure Python or a cp312 build)."""
    return bool(_PURE.search(path.name) or _CP312.search(path.name) or re.search(r"-cp312-abi3-", path.name))


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def fetch(name: str, version: str, how: str, into: Path) -> Path:
    """Download or build the wheel of ``name==version`` into ``into``; return its path."""
    before = set(into.glob("*.whl"))
    spec = f"{name}=={version}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    if how == "download":
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        run([*pip, "download", "-q", "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation",
             "cp", *platforms, "--no-deps", "-d", str(into), spec])
    else:
        run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into), spec])
    new = [p for p in set(into.glob("*.whl")) - before if wheel_name(p) == re.sub(r"[-_.]+", "-", name).lower()]
    if len(new) != 1:
        raise SystemExit(f"error: expected one wheel of {spec}, got {[p.name for p in new] or 'none'}")
    if not fits_gpu_machine(new[0]):
        raise SystemExit(f"error: {new[0].name} does not install on CPython {PYTHON_VERSION} manylinux x86_64")
    return new[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl", help="folder of the wheels (default .whl/)")
    args = parser.parse_args(argv)
    for name, (version, _, _) in PACKAGES.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            print(f"note: {name} {version} is packed; this environment has {installed or 'none'}", file=sys.stderr)
    args.dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_wheels_") as tmp:
        built = [fetch(name, version, how, Path(tmp)) for name, (version, how, _) in PACKAGES.items()]
        for old in args.dest.glob("*.whl"):
            if old.name not in {p.name for p in built}:
                print(f"removing {old.name} (not in the list)")
                old.unlink()
        wheels = [Path(shutil.copy2(p, args.dest / p.name)) for p in built]
    total = 0
    print(f"\n{len(wheels)} wheels in {args.dest}:")
    for wheel in sorted(wheels):
        size = wheel.stat().st_size
        total += size
        print(f"  {wheel.name:60s} {size / 2**10:9.1f} KiB   {PACKAGES[wheel_name(wheel)][2]}")
    print(f"total {total / 2**20:.2f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    if total > LIMIT_BYTES:
        print(f"error: the wheels take {total / 2**20:.1f} MiB, more than {LIMIT_BYTES / 2**20:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
