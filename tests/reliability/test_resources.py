"""Out of memory during inference falls back to tiles (exactly, for LKDN); the fallback is logged."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_common import make_images, write_yaml
from torch import nn

from lkdn import build_network
from lkdn import test as test_entry
from lkdn.checkpoint import save_file
from lkdn.images import APPROXIMATE_TILE_PAD, InferenceMemoryError, run_network, tile_context
from lkdn.upscaler import Upscaler

TINY_NET = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1}

ERRORS = {
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                                "you tried to allocate 8589934592 bytes"),
    "python": lambda: MemoryError(),
}


class MemoryLimited(nn.Module):
    """Runs ``net``, but raises an out-of-memory error for inputs of more than ``limit`` pixels."""

    def __init__(self, net: nn.Module, *, limit: int, error: str = "cuda") -> None:
        super().__init__()
        self.net, self.limit, self.error = net, limit, error
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > self.limit:
            raise ERRORS[self.error]()
        return self.net(x)


pytestmark = pytest.mark.usefixtures("one_thread")


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[_Messages]:
    """Warnings of lkdn.images, caught by a handler of its own (entry points stop lkdn's propagation)."""
    handler = _Messages()
    log = logging.getLogger("lkdn.images")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return build_network(TINY_NET).eval()


@pytest.mark.parametrize("error", list(ERRORS))
def test_out_of_memory_falls_back_to_exact_tiles(net: nn.Module, error: str, warnings: _Messages) -> None:
    x = torch.rand(1, 3, 70, 90)
    expected = run_network(net, x)
    radius = tile_context(net).pad  # LKDN is translation-local: its receptive radius makes tiles exact
    out = run_network(MemoryLimited(net, limit=50 * 50, error=error), x, tile_pad=radius)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)  # tiles padded by the receptive radius: exact
    # the whole image, then tiles of 45 and 23 (with 15 pixels of context on each side) are too big; 16 fit
    assert len(warnings.messages) == 3
    assert warnings.messages[0].startswith(f"out of memory on a 70x90 input ({type(ERRORS[error]()).__name__}")
    assert [w.rsplit("retrying with ", 1)[1] for w in warnings.messages] == [
        f"{t}x{t} tiles and {radius} pixels of context" for t in (45, 23, 16)]


def test_fallback_keeps_the_self_ensemble_and_a_given_tile(net: nn.Module, warnings: _Messages) -> None:
    x = torch.rand(1, 3, 40, 40)
    expected = run_network(net, x, self_ensemble=True, tile=18, tile_pad=8)
    out = run_network(MemoryLimited(net, limit=39 * 39), x, self_ensemble=True, tile=36, tile_pad=8)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert len(warnings.messages) == 1 and warnings.messages[0].endswith("retrying with 18x18 tiles and 8 pixels of context")


def test_no_memory_even_for_small_tiles_is_a_clear_error(net: nn.Module) -> None:
    with pytest.raises(InferenceMemoryError, match=r"out of memory on a 64x64 input even with 16x16 tiles .*--device cpu"):
        run_network(MemoryLimited(net, limit=10), torch.rand(1, 3, 64, 64))


def test_other_errors_are_not_retried(net: nn.Module) -> None:
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes do not match"):
        run_network(Broken(), torch.rand(1, 3, 8, 8))
    with pytest.raises(torch.OutOfMemoryError):
        run_network(MemoryLimited(net, limit=10), torch.rand(1, 3, 8, 8), oom_fallback=False)


def test_callables_fall_back_with_the_default_context(net: nn.Module, warnings: _Messages) -> None:
    limited = MemoryLimited(net, limit=100 * 100)
    out = run_network(lambda x: limited(x), torch.rand(1, 3, 200, 200))
    assert out.shape == (1, 3, 400, 400)
    assert [w.rsplit("retrying with ", 1)[1] for w in warnings.messages] == [
        f"{t}x{t} tiles and {APPROXIMATE_TILE_PAD} pixels of context" for t in (100, 50, 25)]


def test_the_test_pipeline_survives_an_image_too_large_for_memory(tmp_path: Path, net: nn.Module,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               warnings: _Messages) -> None:
    hr, lr = make_images(tmp_path / "data", size=128)
    save_file({"params": net.state_dict()}, tmp_path / "w.pth")
    opt = {"name": "oom", "scale": 2, "num_gpu": 0, "network_g": TINY_NET,
           "datasets": {"test_1": {"name": "x", "type": "PairedImageDataset", "dataroot_gt": str(hr),
                                   "dataroot_lq": str(lr)}},
           "path": {"pretrain_network_g": str(tmp_path / "w.pth")},
           "val": {"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}}}}
    argv = ["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path)]
    plain = test_entry.score(argv)
    forward = Upscaler._forward

    def limited(self: Upscaler, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] > 50 * 50:
            raise ERRORS["cuda"]()
        return forward(self, x)

    monkeypatch.setattr(Upscaler, "_forward", limited)
    assert test_entry.score(argv) == plain  # LR images are 64x64: each one falls back to tiles, exactly
    assert warnings.messages == ["out of memory on a 64x64 input (OutOfMemoryError: CUDA out of memory. Tried to allocate "
                        "2.00 GiB); retrying with 32x32 tiles and 15 pixels of context"] * 4


def test_an_output_too_large_for_memory_is_said_at_once(net: nn.Module, monkeypatch: pytest.MonkeyPatch,
                                                        warnings: _Messages) -> None:
    """An 8000x8000 LR image at x2: the 16000x16000 output itself does not fit, so no tile size is tried."""
    limited = MemoryLimited(net, limit=10, error="cpu")
    empty = torch.empty

    def no_room_for_big_buffers(*shape: Any, **kwargs: Any) -> torch.Tensor:
        dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if math.prod(dims) > 10**8:
            raise ERRORS["cpu"]()
        return empty(*shape, **kwargs)

    monkeypatch.setattr(torch, "empty", no_room_for_big_buffers)
    lr = torch.rand(1, 3, 8000, 8000)  # 768 MB of LR input; the network sees only its tiles
    with pytest.raises(InferenceMemoryError, match=r"out of memory on a 8000x8000 input .*: the 16000x16000 output alone "
                                                   r"needs 2\.9 GiB on cpu; no tile size helps"):
        run_network(limited, lr, scale=2)
    assert len(limited.sizes) == 1 and warnings.messages == []  # one attempt, no retries


def test_the_inference_script_goes_on_with_the_next_image(tmp_path: Path, net: nn.Module,
                                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import importlib.util
    import sys

    import cv2
    import numpy as np

    spec = importlib.util.spec_from_file_location("inference_script", Path(__file__).parents[2] / "scripts" / "inference.py")
    inference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inference
    spec.loader.exec_module(inference)
    save_file({"params": net.state_dict()}, tmp_path / "w.pth")
    yml = write_yaml(tmp_path, {"name": "big", "scale": 2, "network_g": TINY_NET,
                                "path": {"pretrain_network_g": str(tmp_path / "w.pth")}})
    (tmp_path / "in").mkdir()
    for name, size in (("a_big", 40), ("b_small", 8)):
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), np.full((size, size, 3), 128, np.uint8))
    call = Upscaler.__call__

    def big_fails(self: Upscaler, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if x.shape[-1] >= 40:
            raise InferenceMemoryError("out of memory on a 40x40 input: the 80x80 output alone needs 0.0 GiB on cpu")
        return call(self, x, **kwargs)

    monkeypatch.setattr(Upscaler, "__call__", big_fails)
    assert inference.main(["-opt", str(yml), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "a_big.png: out of memory on a 40x40 input" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_small.png"]
