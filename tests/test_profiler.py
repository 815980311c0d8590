"""lkdn.profiling and scripts/profile_model.py: exact conv Multi-Adds, activations and parameters
against hand counts (a toy net with depthwise, dilated, strided and functional convs; LKDN x4 at
1280x720 output), NTIRE FLOPs through fvcore, runtime and memory records, size parsing errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import load_script
from torch import nn

from lkdn import build_network
from lkdn.profiling import (
    conv_counts,
    count_parameters,
    lr_size_for_output,
    measure_runtime,
    ntire_flops,
    parse_size,
    peak_memory,
    profile_network,
)


class Toy(nn.Module):
    """3 -> 8 (3x3) -> depthwise 3x3 -> dilated 3x3 (d=2) -> functional 1x1 to 12 -> PixelShuffle(2)
    -> 3x3 stride 2 to 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.pw = nn.Conv2d(8, 12, 1)
        self.shuffle = nn.PixelShuffle(2)
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dilated(F.gelu(self.dw(self.conv(x))))
        x = F.conv2d(x, self.pw.weight, self.pw.bias)  # functional call: module hooks would miss it
        return self.down(self.shuffle(x))


H, W = 10, 14
PIXELS = H * W
TOY_MULTI_ADDS = PIXELS * (8 * 3 * 9 + 8 * 1 * 9 + 8 * 8 * 9 + 12 * 8) + PIXELS * 4 * 3 * 9  # 134,400 + 15,120
TOY_ACTIVATIONS = PIXELS * (8 + 8 + 8 + 12) + PIXELS * 4
TOY_PARAMS = (8 * 27 + 8) + (8 * 9 + 8) + (8 * 72 + 8) + (12 * 8 + 12) + (4 * 27 + 4)


def test_toy_counts_match_hand_counts() -> None:
    assert TOY_MULTI_ADDS == 149_520 and TOY_ACTIVATIONS == 5_600 and TOY_PARAMS == 1_108
    net = Toy()
    counts = conv_counts(net, (1, 3, H, W))
    assert (counts.multi_adds, counts.activations, counts.convs) == (TOY_MULTI_ADDS, TOY_ACTIVATIONS, 5)
    assert count_parameters(net) == TOY_PARAMS
    assert conv_counts(net, (2, 3, H, W)).multi_adds == 2 * TOY_MULTI_ADDS  # per batch, linear in N


def test_toy_ntire_flops_are_fvcore_conv_multiply_adds() -> None:
    pytest.importorskip("fvcore")
    # fvcore counts one flop per multiply-add of a conv and nothing for GELU / PixelShuffle.
    assert ntire_flops(Toy(), (1, 3, H, W)) == TOY_MULTI_ADDS


def lkdn_per_pixel() -> tuple[int, int]:
    """LKDN x4 Multi-Adds and conv output channels per LR pixel, written out from the architecture (docs/model_zoo.md)."""
    f, d, blocks, out = 56, 28, 8, 3 * 4 * 4
    bsconv = lambda cin, cout: cin * cout + cout * 9  # noqa: E731 (pw 1x1, then dw 3x3)
    block = (f * d + bsconv(f, f)) * 3 + bsconv(f, d) + 4 * d * f + (f * f + f * 25 + f * 25) + f * f
    macs = bsconv(3 * 4, f) + blocks * block + blocks * f * f + bsconv(f, f) + f * out * 9
    block_channels = (d + 2 * f) * 3 + 2 * d + f + 3 * f + f
    channels = 2 * f + blocks * block_channels + f + 2 * f + out
    return macs, channels


def test_lkdn_x4_at_1280x720_output() -> None:
    net = build_network({"type": "LKDN", "upscale": 4})
    counts = conv_counts(net, (1, 3, 180, 320))
    macs, channels = lkdn_per_pixel()
    assert counts.multi_adds == macs * 180 * 320 == 18_224_640_000
    assert round(counts.multi_adds / 1e9, 2) == 18.22  # the paper rounds to 18.3 G
    assert counts.activations == channels * 180 * 320 == 367_257_600
    assert count_parameters(net) == 321_992


def test_training_form_costs_more_than_deploy_form() -> None:
    from lkdn.reparam import reparameterize_model

    net = build_network({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"})
    train = conv_counts(net, (1, 3, 18, 32))
    deploy = conv_counts(reparameterize_model(net, fold_num_in=True), (1, 3, 18, 32))
    assert count_parameters(net) == 172_449
    # deploy: RBSB -> BSConvU (no rep1x1), one upsampler conv, fea_conv on 3 channels instead of 12
    assert deploy.multi_adds < train.multi_adds and deploy.convs < train.convs


def test_runtime_and_memory_records() -> None:
    x = torch.rand(1, 1, 512, 512)  # 1 MiB of float32
    timing = measure_runtime(lambda t: t * 2, x, runs=3, warmup=1)
    assert set(timing) == {"median_ms", "mean_ms", "min_ms", "runs"} and timing["runs"] == 3
    assert 0 < timing["min_ms"] <= timing["median_ms"]
    assert measure_runtime(lambda t: t * 2, x, runs=2, ntire=True)["runs"] == 2
    memory = peak_memory(lambda t: t * 2, x)
    assert memory["peak_mb"] == pytest.approx(1.0, abs=0.01)  # exactly the one output tensor


def test_profile_network_row() -> None:
    profile = profile_network(Toy(), form="toy", lr_size=(H, W), runs=1, warmup=0, flops=False)
    assert (profile.params, profile.convs) == (TOY_PARAMS, 5)
    assert profile.multi_adds_g == TOY_MULTI_ADDS / 1e9 and profile.activations_m == TOY_ACTIVATIONS / 1e6
    assert profile.runtime_ms is not None and profile.runtime_ms > 0 and profile.memory_mb is not None


def test_sizes() -> None:
    assert parse_size("1280x720") == (720, 1280)
    assert lr_size_for_output((720, 1280), 4) == (180, 320)
    with pytest.raises(ValueError, match="expected a size WIDTHxHEIGHT such as 1280x720, got '720p'"):
        parse_size("720p")
    with pytest.raises(ValueError, match="output size 1280x722 is not a multiple of the scale 4"):
        lr_size_for_output((722, 1280), 4)


def _script():
    return load_script("scripts/profile_model.py")


def test_script_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yml = tmp_path / "tiny.yml"
    yml.write_text(
        "name: tiny\nscale: 2\nnetwork_g:\n  type: LKDN_S\n  num_feat: 8\n  num_atten: 8\n  num_block: 1\n"
        "  upscale: 2\n  conv: BSConvU_rep\n  upsampler: pixelshuffle_rep\n"
    )
    code = _script().main(["-opt", str(yml), "--output-size", "64x48", "--runs", "1", "--no-flops", "--json",
                           "--device", "cpu"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lr_size"] == {"height": 24, "width": 32} and report["scale"] == 2
    forms = [p["form"] for p in report["profiles"]]
    assert forms == ["as configured", "deploy (re-parameterized)", "deploy + optimize_network"]
    configured, deploy, optimized = report["profiles"]
    net = build_network({"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2,
                         "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"})
    assert configured["params"] == count_parameters(net)
    assert configured["multi_adds_g"] == conv_counts(net, (1, 3, 24, 32)).multi_adds / 1e9
    assert deploy["params"] < configured["params"] and optimized["multi_adds_g"] == deploy["multi_adds_g"]
    assert all(p["runtime_ms"] > 0 for p in report["profiles"])


def test_script_rejects_a_size_that_is_not_a_multiple_of_the_scale(tmp_path: Path, capsys) -> None:
    yml = tmp_path / "tiny.yml"
    yml.write_text("name: tiny\nscale: 4\nnetwork_g:\n  type: LKDN\n  num_feat: 8\n  num_atten: 8\n  num_block: 1\n")
    assert _script().main(["-opt", str(yml), "--output-size", "1281x720", "--no-timing"]) == 2
    assert "output size 1281x720 is not a multiple of the scale 4" in capsys.readouterr().err
