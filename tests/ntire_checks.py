"""Checks shared by the tests of the NTIRE entries: the published checkpoint loaded strictly, our network
against the official module on Set5, Set5 through ``lkdn/test.py``, the harness counts, exact folds,
``scripts/reparameterize.py`` and spandrel detection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, shared_file

from lkdn import build_network
from lkdn import test as test_entry
from lkdn.archs import our_architectures
from lkdn.checkpoint import load_file, save_file
from lkdn.loading import deploy_form, load_network
from lkdn.profiling import count_parameters, ntire_counts


@dataclass(frozen=True)
class Entry:
    """A published checkpoint, ``pretrained/<family>/<name>.pth``, and the network options it loads into;
    its test option file is ``options/test/<family>/test_<name>.yml``."""

    family: str
    name: str
    options: Mapping[str, Any]

    def checkpoint(self) -> Path:
        return shared_file("pretrained", self.family, f"{self.name}.pth")

    def state(self) -> dict[str, torch.Tensor]:
        """The checkpoint file's tensors as stored (no key chosen, no prefix removed)."""
        return torch.load(self.checkpoint(), map_location="cpu", weights_only=True)

    def ours(self) -> torch.nn.Module:
        """Our network with the checkpoint loaded strictly (``params_ema`` preferred), in eval mode."""
        return load_network(build_network(dict(self.options)), self.checkpoint(), strict=True).eval()

    def option_file(self) -> Path:
        return option_file(self.family, self.name)

    def assert_loads_strictly_with(self, parameters: int) -> torch.nn.Module:
        """The checkpoint loads strictly into our network, which has exactly ``parameters`` parameters."""
        net = self.ours()
        assert count_parameters(net) == parameters
        return net

    def assert_equals_the_official_on_set5(self, official: torch.nn.Module,
                                           state: Mapping[str, torch.Tensor] | None = None) -> None:
        """The official network, with the checkpoint (or ``state``) loaded strictly, gives our output on
        every Set5 image within 1e-5."""
        official.load_state_dict(self.state() if state is None else state, strict=True)
        differences = max_difference_on_set5(self.ours(), official)
        assert max(differences.values()) <= 1e-5, differences

    def assert_set5_numbers(self, tmp_path: Path, psnr: float, ssim: float) -> None:
        """Set5 x4 through ``lkdn/test.py`` with the option file and the checkpoint gives the published
        PSNR within 0.01 dB and SSIM within 0.0005."""
        got = set5_numbers(tmp_path, self.option_file(), self.checkpoint())
        assert abs(got[0] - psnr) <= 0.01 and abs(got[1] - ssim) <= 0.0005, got

    def assert_spandrel_reads(self, architecture: str, options: Mapping[str, Any]) -> None:
        """``assert_spandrel_detects`` for the checkpoint, the options read back being exactly ``options``."""
        pytest.importorskip("spandrel")

        def check(read: dict[str, Any]) -> None:
            assert read == dict(options)

        assert_spandrel_detects(self.checkpoint(), architecture, self.ours(), check)


@torch.no_grad()
def randomize(net: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Random weights and non-zero biases everywhere."""
    generator = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return net


def reference(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Autograd on: every branch computed out of place, as in training."""
    with torch.enable_grad():
        return net.eval()(x.clone().requires_grad_(True)).detach()


def set5_lr() -> list[tuple[str, torch.Tensor]]:
    """Every Set5 x4 LR image as a 1x3xHxW float32 RGB tensor in [0, 1], by name."""
    images = []
    for path in sorted((shared_file("benchmarks", "Set5", "x4") / "LR").glob("*.png")):
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0
        images.append((path.stem, torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]))
    assert len(images) == 5
    return images


def max_difference_on_set5(ours: torch.nn.Module, official: torch.nn.Module) -> dict[str, float]:
    """max |ours - official| per Set5 image, both fed the same [0, 1] input (the harness's data_range 1.0)."""
    differences = {}
    with torch.no_grad():
        for name, x in set5_lr():
            expected = official.eval()(x.clone())
            got = ours.eval()(x.clone())
            assert got.shape == expected.shape == (1, 3, x.shape[2] * 4, x.shape[3] * 4)
            differences[name] = (got - expected).abs().max().item()
    return differences


def set5_numbers(tmp_path: Path, yml: Path, weights: Path, *, scale: int = 4) -> tuple[float, float]:
    """(PSNR, SSIM) of Set5 x``scale`` through ``lkdn/test.py`` with the option file ``yml`` and the checkpoint ``weights``."""
    set5 = shared_file("benchmarks", "Set5", f"x{scale}")
    results = test_entry.score(["-opt", str(yml), "--root", str(tmp_path), "--force_yml", "num_gpu=0",
                               "val:save_img=false", f"datasets:test_1:dataroot_gt={set5 / 'HR'}",
                               f"datasets:test_1:dataroot_lq={set5 / 'LR'}", f"path:pretrain_network_g={weights}"])
    return results["Set5"]["psnr"], results["Set5"]["ssim"]


def assert_harness_counts(options: Mapping[str, Any], *, params: int, activations: int, convs: int,
                          published: tuple[float, float, float]) -> None:
    """``ntire_counts`` of the network: exact parameters, activations and convs, and the harness's row
    ``published`` = (M params to 3 decimals, G FLOPs to 2, M activations to 2)."""
    pytest.importorskip("fvcore")
    counts = ntire_counts(build_network(dict(options)))
    assert (counts.params, counts.activations, counts.convs) == (params, activations, convs)
    assert (round(counts.params / 1e6, 3), round(counts.flops / 1e9, 2), round(counts.activations / 1e6, 2)) == (
        published)


def assert_our_counts(options: Mapping[str, Any], *, params: int, flops: int, activations: int, convs: int,
                      official: Callable[[], torch.nn.Module] | None = None) -> None:
    """``ntire_counts`` of the network, every figure exact (entries with no harness row), and, given
    ``official`` (a constructor), the official network's counts equal to ours."""
    pytest.importorskip("fvcore")
    counts = ntire_counts(build_network(dict(options)))
    ours = (counts.params, counts.flops, counts.activations, counts.convs)
    assert ours == (params, flops, activations, convs)
    if official is not None:
        theirs = ntire_counts(official())
        assert (theirs.params, theirs.flops, theirs.activations, theirs.convs) == ours


def assert_folds_exactly(options: Mapping[str, Any], *, size: tuple[int, int] = (11, 14)) -> None:
    """The float64 training form with random weights folds into its deploy options' network, which loads
    the folded state dict strictly and gives the same output within 1e-10 of the output scale."""
    net = randomize(build_network(dict(options)).double())
    folded, deploy_options = deploy_form(net, dict(options))
    assert deploy_options["deploy"] is True
    deploy = build_network(deploy_options).double()
    deploy.load_state_dict(folded.state_dict(), strict=True)
    x = torch.rand(1, deploy_options.get("num_in_ch", 3), *size, dtype=torch.float64)
    expected = reference(net, x)
    scale = expected.abs().max().item()
    assert scale > 0.1  # a non-trivial output
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), expected, atol=1e-10 * scale, rtol=0)


def assert_reparameterize_script_writes_the_deploy_form(tmp_path: Path, options: Mapping[str, Any], *,
                                                        size: tuple[int, int] = (10, 12)) -> None:
    """``scripts/reparameterize.py`` folds a training checkpoint into one that loads strictly into the deploy form."""
    net = randomize(build_network(dict(options)), std=0.05)
    save_file({"params": net.state_dict()}, tmp_path / "train.pth")
    yml = tmp_path / "train.yml"
    network = ", ".join(f"{k}: {v}" for k, v in options.items())
    yml.write_text(f"name: folded\nscale: {options.get('upscale', 4)}\nnetwork_g: {{{network}}}\n")
    out = tmp_path / "deploy.pth"
    script = load_script("scripts/reparameterize.py")
    assert script.main(["-opt", str(yml), "--input", str(tmp_path / "train.pth"), "--output", str(out),
                        "--output-opt", str(tmp_path / "deploy.yml")]) == 0
    deploy = load_network(build_network(dict(options) | {"deploy": True}), out, strict=True)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), reference(net, x), atol=1e-5, rtol=1e-5)


def claims(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Our architectures whose spandrel detection matches ``state``, sorted."""
    return sorted(name for name, entry in our_architectures().items()
                  if entry.spandrel is not None and entry.spandrel.matches(state))


def assert_spandrel_detects(path: Path, architecture: str, ours: torch.nn.Module,
                            check: Callable[[dict[str, Any]], None] | None = None) -> None:
    """spandrel (with our architectures installed) reads ``path`` as ``architecture`` with our output, and no
    other architecture of ours claims the state dict (so the order of detection does not matter)."""
    import spandrel

    import lkdn.integrations.spandrel as lkdn_spandrel

    state = load_file(path)
    assert claims(state.get("params_ema", state.get("params", state))) == [architecture]
    lkdn_spandrel.install()
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == f"lkdn:{architecture}"
    assert descriptor.scale == 4 and (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    if check is not None:
        check(descriptor.architecture.options(descriptor.model.state_dict()))
    x = torch.rand(1, 3, 23, 20)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model.eval()(x), ours.eval()(x), atol=0, rtol=0)


def option_file(family: str, name: str) -> Path:
    """``options/test/<family>/test_<name>.yml``."""
    return ROOT / "options" / "test" / family / f"test_{name}.yml"

