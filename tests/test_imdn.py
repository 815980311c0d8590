"""IMDN: the paper's parameter counts, the progressive-refinement block computed by hand, the official
weights (x2/x3/x4) and the NTIRE 2022 baseline (IMDN_AIM): strict loads, outputs equal to the official
code on Set5, the published Set5 numbers through lkdn/test.py, the harness counts, spandrel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import official_module, shared_file
from ntire_checks import Entry, assert_our_counts, assert_spandrel_detects, option_file, set5_numbers

from lkdn import Upscaler, build_network
from lkdn.archs.imdn_arch import IMDB, imdn_aim_options_from_state
from lkdn.loading import load_network

pytestmark = pytest.mark.usefixtures("one_thread")

AIM = {"type": "IMDN_AIM", "num_feat": 64, "num_block": 8, "upscale": 4}
NTIRE2022 = Entry("IMDN", "IMDN_NTIRE2022", AIM)


def official_weights(scale: int) -> Entry:
    return Entry("IMDN", f"IMDN_x{scale}", {"type": "IMDN", "upscale": scale})


@pytest.mark.parametrize(("scale", "count"), [(2, 694_404), (3, 703_059), (4, 715_176)])
def test_paper_parameter_counts(scale: int, count: int) -> None:
    """Hui et al. 2019, Table: IMDN has 694K / 703K / 715K parameters at x2 / x3 / x4."""
    net = build_network({"type": "IMDN", "upscale": scale})
    assert sum(p.numel() for p in net.parameters()) == count
    assert [name for name, _ in net.named_children()][:7] == ["fea_conv"] + [f"IMDB{i}" for i in range(1, 7)]


def test_block_keeps_a_quarter_and_refines_the_rest() -> None:
    block = IMDB(32).eval()
    assert (block.dc, block.rc) == (8, 24)
    assert block.c2.in_channels == block.c3.in_channels == block.c4.in_channels == 24
    assert block.c4.out_channels == 8 and block.cca.conv_du[0].in_channels == 32

    x = torch.randn(2, 32, 9, 11)
    act = lambda t: F.leaky_relu(t, 0.05)  # noqa: E731
    out1 = act(block.c1(x))
    out2 = act(block.c2(out1[:, 8:]))
    out3 = act(block.c3(out2[:, 8:]))
    out4 = block.c4(out3[:, 8:])
    distilled = torch.cat([out1[:, :8], out2[:, :8], out3[:, :8], out4], dim=1)
    mean = distilled.mean(dim=(2, 3), keepdim=True)
    contrast = (distilled - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt() + mean
    expected = block.c5(distilled * block.cca.conv_du(contrast)) + x
    torch.testing.assert_close(block(x), expected)


def test_bad_distillation_rate_is_reported() -> None:
    with pytest.raises(ValueError, match="distillation_rate 0.01 leaves no distilled or remaining channels of 16"):
        build_network({"type": "IMDN", "num_feat": 16, "distillation_rate": 0.01})


def test_aim_block_has_no_attention_and_adds_its_input() -> None:
    net = build_network({"type": "IMDN_AIM", "num_feat": 16, "num_block": 2, "upscale": 2}).eval()
    block = net.model[1].sub[0]
    x = torch.randn(1, 16, 7, 9)
    act = lambda t: F.leaky_relu(t, 0.05)  # noqa: E731
    out1 = act(block.conv1[0](x))
    out2 = act(block.conv2[0](out1[:, 4:]))
    out3 = act(block.conv3[0](out2[:, 4:]))
    distilled = torch.cat([out1[:, :4], out2[:, :4], out3[:, :4], block.conv4(out3[:, 4:])], dim=1)
    torch.testing.assert_close(block(x), x + block.conv1x1(distilled))
    with pytest.raises(ValueError, match="distillation_rate 0.01 leaves no distilled or remaining channels of 16"):
        build_network({"type": "IMDN_AIM", "num_feat": 16, "distillation_rate": 0.01})


# --- the official weights and the NTIRE 2022 baseline ------------------------------------------


def official_state(family: str, name: str) -> dict[str, torch.Tensor]:
    state = torch.load(shared_file("pretrained", family, f"{name}.pth"), map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in state.items()}


@pytest.mark.parametrize(("scale", "count"), [(2, 694_404), (3, 703_059), (4, 715_176)])
def test_official_weights_load_strictly(scale: int, count: int) -> None:
    assert all(k.startswith("module.") for k in official_weights(scale).state())
    official_weights(scale).assert_loads_strictly_with(count)


def test_ntire2022_baseline_loads_strictly_with_its_parameter_count() -> None:
    NTIRE2022.assert_loads_strictly_with(893_936)


def test_official_x4_equals_the_official_code_on_set5() -> None:
    official = official_module("IMDN/model/architecture.py").IMDN(upscale=4)
    official_weights(4).assert_equals_the_official_on_set5(official, official_state("IMDN", "IMDN_x4"))


def test_ntire2022_baseline_equals_the_official_code_on_set5() -> None:
    baseline = official_module("ntire_esr/2022/models/imdn_baseline.py")
    official = baseline.IMDN(in_nc=3, out_nc=3, nc=64, nb=8, upscale=4)  # as the 2022 test_demo.py
    NTIRE2022.assert_equals_the_official_on_set5(official, official_state("IMDN", "IMDN_NTIRE2022"))


@pytest.mark.parametrize(("name", "scale", "psnr", "ssim"), [
    ("IMDN_x4", 4, 32.21, 0.8948),  # the official code
    ("IMDN_NTIRE2022", 4, 32.25, 0.8959),  # the NTIRE 2022 code
    pytest.param("IMDN_x2", 2, 38.00, 0.9605, marks=pytest.mark.slow),  # the paper
    pytest.param("IMDN_x3", 3, 34.36, 0.9270, marks=pytest.mark.slow),  # the paper
])
def test_set5_reproduces_the_published_numbers(name: str, scale: int, psnr: float, ssim: float, tmp_path: Path) -> None:
    weights = shared_file("pretrained", "IMDN", f"{name}.pth")
    measured = set5_numbers(tmp_path, option_file("IMDN", name), weights, scale=scale)
    assert abs(measured[0] - psnr) <= 0.01 and abs(measured[1] - ssim) <= 0.0005, measured


def test_ntire2022_baseline_counts_equal_the_official_networks() -> None:
    """The NTIRE 2022 report has no fvcore row: our counts, and the official network counted the same way."""
    baseline = official_module("ntire_esr/2022/models/imdn_baseline.py")
    assert_our_counts(AIM, params=893_936, flops=58_430_849_024, activations=154_140_672, convs=43,
                      official=lambda: baseline.IMDN(in_nc=3, out_nc=3, nc=64, nb=8, upscale=4))


def test_spandrel_detects_the_official_weights_with_their_module_prefix() -> None:
    pytest.importorskip("spandrel")
    from lkdn.integrations.spandrel import load_model

    path = shared_file("pretrained", "IMDN", "IMDN_x3.pth")
    descriptor = load_model(path)
    assert descriptor.architecture.id == "lkdn:IMDN" and descriptor.scale == 3
    ours = load_network(build_network({"type": "IMDN", "upscale": 3}), path, strict=True).eval()
    x = torch.rand(1, 3, 17, 14)
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model.eval()(x), ours(x), atol=0, rtol=0)


def test_spandrel_detects_the_ntire2022_baseline_as_imdn_aim_only() -> None:
    pytest.importorskip("spandrel")

    def check(read: dict) -> None:
        assert {k: read[k] for k in AIM} == AIM and read["distillation_rate"] * 64 == 16

    assert_spandrel_detects(NTIRE2022.checkpoint(), "IMDN_AIM", NTIRE2022.ours(), check)


def test_aim_options_are_read_back_from_shapes() -> None:
    options = {"type": "IMDN_AIM", "num_in_ch": 1, "num_feat": 20, "num_block": 3, "num_out_ch": 1, "upscale": 3,
               "distillation_rate": 0.25}
    read = imdn_aim_options_from_state(build_network(options).state_dict())
    assert build_network(read).state_dict().keys() == build_network(options).state_dict().keys()
    assert {k: read[k] for k in options if k != "distillation_rate"} == {k: v for k, v in options.items()
                                                                          if k != "distillation_rate"}
    assert int(20 * read["distillation_rate"]) == 5


def test_aim_tiles_are_exact() -> None:
    """Stride-1 convs only: tiles with the receptive radius as context equal the whole image."""
    net = build_network({"type": "IMDN_AIM", "num_feat": 16, "num_block": 2, "upscale": 2})
    up = Upscaler(net, device="cpu")
    assert up.tiling.exact and up.tile_pad == 11  # head, 2 blocks of 4 chained 3x3 convs, trunk and upsampler convs
    x = torch.rand(1, 3, 50, 40) * 0.2 + 0.4
    torch.testing.assert_close(up(x, tile=16), up(x), atol=1e-5, rtol=0)
