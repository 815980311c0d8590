"""Shared test fixtures: paths to ../shared (skipped cleanly when absent) and the test device."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import lkdn  # noqa: F401 (installs basicsr's torchvision alias before any test imports basicsr)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LKDN_SHARED", ROOT.parent / "shared"))
PRETRAINED = SHARED / "pretrained"
BENCHMARKS = SHARED / "benchmarks"

# Official checkpoints: file -> (network options, scale, Set5 PSNR, Set5 SSIM) from DESIGN.md.
OFFICIAL_LKDN = {
    "LKDN_x2": ({"type": "LKDN", "upscale": 2}, 2, 38.12, 0.9610),
    "LKDN_x3": ({"type": "LKDN", "upscale": 3}, 3, 34.53, 0.9283),
    "LKDN_x4": ({"type": "LKDN", "upscale": 4}, 4, 32.39, 0.8980),
    "LKDN-S_x4": ({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}, 4, 32.11, 0.8938),
    "LKDN-S_del_rep_x4": ({"type": "LKDN_S"}, 4, 32.11, 0.8938),
}


def shared_file(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is absent on a fresh clone; scripts/download.py fetches the weights)")
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
