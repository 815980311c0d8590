"""Shared test fixtures: reference files (skipped cleanly when absent) and the test device.

Reference files (official checkpoints, Set5) are looked for as the scripts look for them
(:mod:`lkdn.zoo`, README "Data and weights"): ``$LKDN_SHARED``, then this checkout's
``experiments/pretrained_models/`` and ``datasets/``, then ``../shared``.
``LKDN_SHARED=/nonexistent make test`` runs the suite as on a fresh clone. Downloads are off
(``LKDN_OFFLINE=1``): a test never reaches the network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("LKDN_OFFLINE", "1")

import lkdn  # noqa: E402,F401 (installs basicsr's torchvision alias before any test imports basicsr)
from lkdn.zoo import find_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]



def load_script(relative: str) -> ModuleType:
    """A script of the checkout (``"scripts/export_onnx.py"``) as a fresh module, to call its ``main`` in-process.

    It is registered in ``sys.modules`` under a name of its own (``lkdn_test_<path>``): dataclasses
    and forked worker processes look their module up there.
    """
    path = ROOT / relative
    name = "lkdn_test_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Official checkpoints: file -> (network options, scale, Set5 PSNR, Set5 SSIM), measured with the official code.
OFFICIAL_LKDN = {
    "LKDN_x2": ({"type": "LKDN", "upscale": 2}, 2, 38.12, 0.9610),
    "LKDN_x3": ({"type": "LKDN", "upscale": 3}, 3, 34.53, 0.9283),
    "LKDN_x4": ({"type": "LKDN", "upscale": 4}, 4, 32.39, 0.8980),
    "LKDN-S_x4": ({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}, 4, 32.11, 0.8938),
    "LKDN-S_del_rep_x4": ({"type": "LKDN_S"}, 4, 32.11, 0.8938),
}


def shared_file(kind: str, *parts: str) -> Path:
    """A reference file (``kind``: pretrained or benchmarks) from the lookup order, or skip the test saying how to get it."""
    path = find_reference(kind, *parts)
    if path is None:
        where = "/".join(parts)
        how = ("python scripts/download.py --names " + Path(parts[-1]).stem if kind == "pretrained"
               else "the sources and layout in datasets/README.md")
        pytest.skip(f"needs the reference file {kind}/{where}, not found in $LKDN_SHARED, experiments/pretrained_models/, "
                    f"datasets/ or ../shared; get it with {how} (README 'Data and weights')")
    return path


@pytest.fixture
def device() -> torch.device:
    """Test device from LKDN_TEST_DEVICE (cpu by default)."""
    return torch.device(os.environ.get("LKDN_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread (restored after): tiny tensors on shared cores run faster
    without OpenMP start-up and contention. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """An entry point's main() configures the lkdn/basicsr loggers for a process; put them back afterwards."""
    saved = {}
    for name in ("lkdn", "basicsr"):
        log = logging.getLogger(name)
        saved[name] = (list(log.handlers), log.level, log.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if handler not in handlers:
                log.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in log.handlers:
                log.addHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
