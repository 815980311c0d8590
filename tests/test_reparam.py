"""Re-parameterization is exact: every foldable block, random LKDN configs, the official checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.archs.bsconv import RBSB, BSConvU
from lkdn.archs.contract import deploy_options, foldable_modules
from lkdn.archs.upsamplers import PixelShuffleDirect, PixelShuffleRep
from lkdn.checkpoint import load_state_dict
from lkdn.profiling import count_parameters
from lkdn.reparam import fold_summary, reparameterize_model, verify_reparameterization

TRAIN_FORM = {"conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}
LKDN_S_TRAIN = {"type": "LKDN_S", **TRAIN_FORM}
PROPERTY = settings(max_examples=25)  # no deadline, derandomized: the suite-wide profile (conftest.py)


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_(net: nn.Module, seed: int) -> nn.Module:
    """Re-initialize every parameter (weights, biases, LayerNorm affine) with non-zero values.

    Magnitudes in [0.2, 1] / sqrt(fan_in) with random signs: no parameter is zero or one, so a
    fold that drops a bias, an identity or a branch changes the output.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 1
            magnitude = torch.empty(param.shape).uniform_(0.2, 1.0, generator=generator)
            sign = torch.randint(0, 2, param.shape, generator=generator) * 2 - 1
            param.copy_((magnitude * sign / math.sqrt(fan_in)).to(param))
    return net


def odd_input(channels: int, height: int, width: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, height, width, generator=generator, dtype=torch.float64).to(dtype)


def outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


# ---------------------------------------------------------------- each foldable block alone


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("channels", "kernel"), [(1, 3), (5, 3), (8, 3), (6, 5)])
def test_rbsb_fuses_into_bsconvu(channels: int, kernel: int, dtype: torch.dtype) -> None:
    block = randomize_(RBSB(channels, channels, kernel_size=kernel), seed=channels).to(dtype)
    fused = block.fuse()
    assert type(fused) is BSConvU
    assert set(fused.state_dict()) == {"pw.weight", "dw.weight", "dw.bias"}
    assert fused.dw.weight.dtype == dtype
    x = odd_input(channels, 13, 9, seed=kernel, dtype=dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(outputs(fused, x), outputs(block, x), atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("num_feat", "num_out_ch", "scale"), [(4, 3, 2), (7, 3, 3), (6, 1, 4), (1, 3, 4)])
def test_pixelshuffle_rep_fuses_into_pixelshuffledirect(num_feat: int, num_out_ch: int, scale: int, dtype: torch.dtype) -> None:
    block = randomize_(PixelShuffleRep(num_feat, num_out_ch, scale), seed=scale).to(dtype)
    fused = block.fuse()
    assert type(fused) is PixelShuffleDirect
    assert set(fused.state_dict()) == {"0.weight", "0.bias"}
    x = odd_input(num_feat, 11, 7, seed=num_feat, dtype=dtype)
    out = outputs(fused, x)
    assert out.shape == (2, num_out_ch, 11 * scale, 7 * scale)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, outputs(block, x), atol=atol, rtol=0)


@pytest.mark.parametrize("num_in", [2, 4])
def test_fold_num_in_alone(num_in: int) -> None:
    opt = {"type": "LKDN", "num_feat": 6, "num_atten": 6, "num_block": 1, "num_in": num_in}
    net = randomize_(build_network(opt), 3).double()
    folded = reparameterize_model(net, fold_num_in=True)
    assert folded.num_in == 1 and folded.fea_conv.pw.in_channels == 3
    assert count_parameters(net) - count_parameters(folded) == (num_in - 1) * 3 * 6
    x = odd_input(3, 9, 7, seed=1, dtype=torch.float64)
    torch.testing.assert_close(outputs(folded, x), outputs(net, x), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- the walker


def test_walker_replaces_nested_foldables_and_keeps_the_original() -> None:
    model = nn.Sequential(RBSB(4, 4), nn.GELU(), nn.ModuleList([nn.Sequential(RBSB(4, 4)), PixelShuffleRep(4, 3, 2)]))
    model.eval()
    assert [name for name, _ in foldable_modules(model)] == ["0", "2.0.0", "2.1"]
    assert fold_summary(model) == {"RBSB": 2, "PixelShuffleRep": 1}
    deploy = reparameterize_model(model)
    assert [type(m).__name__ for m in (deploy[0], deploy[2][0][0], deploy[2][1])] == [
        "BSConvU", "BSConvU", "PixelShuffleDirect",
    ]
    assert type(model[0]) is RBSB, "inplace=False must leave the input model unchanged"
    assert not any(m.training for m in deploy.modules()), "fused modules keep the eval mode"
    assert fold_summary(deploy) == {}


def test_walker_inplace_and_top_level_foldable() -> None:
    model = nn.Sequential(RBSB(3, 3)).train()
    same = reparameterize_model(model, inplace=True)
    assert same is model and type(model[0]) is BSConvU and model[0].training
    assert type(reparameterize_model(RBSB(3, 3))) is BSConvU


def test_fold_num_in_is_ignored_for_networks_without_it(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(RBSB(3, 3))
    with caplog.at_level("WARNING", logger="lkdn.reparam"):
        reparameterize_model(model, fold_num_in=True)
    assert "has no fold_num_in()" in caplog.text


def test_deploy_options_maps_training_values_without_mutating() -> None:
    opt = {"type": "LKDN_S", "num_feat": 8, "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "num_in": 4}
    before = dict(opt)
    assert deploy_options(opt) == opt | {"conv": "BSConvU", "upsampler": "pixelshuffledirect"}
    assert deploy_options(opt, fold_num_in=True)["num_in"] == 1
    assert deploy_options({"type": "LKDN", "conv": "RBSB"}, fold_num_in=True) == {
        "type": "LKDN", "conv": "BSConvU", "num_in": 1,
    }
    assert deploy_options({"type": "LKDN", "conv": "BSConvU_idt"}) == {"type": "LKDN", "conv": "BSConvU_idt"}
    assert opt == before


def test_verification_catches_a_wrong_fold() -> None:
    net = randomize_(build_network(LKDN_S_TRAIN | {"num_feat": 6, "num_atten": 6, "num_block": 1, "upscale": 2}), 5)
    deploy = reparameterize_model(net)
    good = verify_reparameterization(net, deploy, input_shape=(1, 3, 11, 9))
    assert good.ok and good.max_diff32 < 1e-5 and good.max_diff64 < 1e-12
    assert good.output_shape == (1, 3, 22, 18)
    with torch.no_grad():
        deploy.upsampler[0].bias[0] += 1e-3
    bad = verify_reparameterization(net, deploy, input_shape=(1, 3, 11, 9))
    assert not bad.ok and bad.max_diff32 == pytest.approx(1e-3, rel=1e-2)
    assert "float32" in bad.describe() and f"{bad.max_diff32:.3g}" in bad.describe()


class DefaultDtypeFuse(nn.Module):
    """``conv3(x) + conv1(x) + x`` whose ``fuse`` builds ``nn.Conv2d`` in the default dtype and copies
    the folded weights in, as most public code writes it; ``error`` is added to the folded bias."""

    def __init__(self, channels: int, error: float = 0.0) -> None:
        super().__init__()
        self.error = error
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(x) + self.conv1(x) + x

    def fuse(self) -> nn.Conv2d:
        channels = self.conv3.in_channels
        fused = nn.Conv2d(channels, channels, 3, padding=1)
        identity = torch.zeros_like(self.conv3.weight)
        identity[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0
        fused.weight.copy_(self.conv3.weight + nn.functional.pad(self.conv1.weight, [1, 1, 1, 1]) + identity)
        fused.bias.copy_(self.conv3.bias + self.conv1.bias + self.error)
        return fused


def default_dtype_net(error: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DefaultDtypeFuse(8, error), nn.ReLU(),
                        DefaultDtypeFuse(8, error), nn.Conv2d(8, 3, 3, padding=1))
    return randomize_(net, 11)


def test_verification_folds_in_float64_a_fuse_that_builds_modules_in_the_default_dtype() -> None:
    net = default_dtype_net(0.0)
    deploy = reparameterize_model(net)
    assert deploy[1].weight.dtype == torch.float32  # the written weights are unchanged
    check = verify_reparameterization(net, deploy, input_shape=(1, 3, 13, 11))
    # folded in float32 inside the float64 check, the fold's own rounding is about 1e-8, over atol64 = 1e-9
    assert check.ok and check.max_diff64 < 1e-12, check.describe()
    assert torch.get_default_dtype() == torch.float32


def test_verification_still_refuses_a_wrong_fold_that_builds_modules_in_the_default_dtype() -> None:
    net = default_dtype_net(1e-6)  # small enough to pass float32's atol 1e-5: only float64 sees it
    check = verify_reparameterization(net, reparameterize_model(net), input_shape=(1, 3, 13, 11))
    assert not check.ok and check.max_diff32 <= check.atol
    assert check.max_diff64 > 1e-7 and check.max_diff64 > check.atol64
    assert torch.get_default_dtype() == torch.float32


def test_default_dtype_is_restored_when_a_fuse_fails() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def fuse(self) -> nn.Module:
            raise RuntimeError("Broken.fuse failed")

    with pytest.raises(RuntimeError, match="Broken.fuse failed"):
        verify_reparameterization(nn.Sequential(nn.Conv2d(3, 3, 1), Broken()), nn.Conv2d(3, 3, 1))
    assert torch.get_default_dtype() == torch.float32


# ---------------------------------------------------------------- random LKDN configs, random weights

CONFIGS = st.fixed_dictionaries(
    {
        "num_feat": st.integers(2, 12),
        "num_atten": st.integers(2, 12),
        "num_block": st.integers(1, 3),
        "upscale": st.sampled_from([2, 3, 4]),
        "num_in": st.sampled_from([1, 4]),
    }
)
ODD = st.integers(2, 8).map(lambda n: 2 * n + 1)


@PROPERTY
@given(config=CONFIGS, fold_num_in=st.booleans(), height=ODD, width=ODD, seed=st.integers(0, 2**16))
def test_folded_lkdn_equals_original(config: dict, fold_num_in: bool, height: int, width: int, seed: int) -> None:
    opt = {"type": "LKDN", **config, **TRAIN_FORM}
    net = randomize_(build_network(opt), seed).eval()
    folded = reparameterize_model(net, fold_num_in=fold_num_in)
    assert fold_summary(folded) == {}
    # the deploy options build a network the folded weights load into strictly
    deploy = build_network(deploy_options(opt, fold_num_in=fold_num_in))
    deploy.load_state_dict(folded.state_dict(), strict=True)
    x = odd_input(3, height, width, seed)
    torch.testing.assert_close(outputs(deploy, x), outputs(net, x), atol=1e-5, rtol=0)
    # float64: the fold itself is exact up to float64 rounding
    net64 = net.double()
    x64 = x.double()
    torch.testing.assert_close(
        outputs(reparameterize_model(net64, fold_num_in=fold_num_in), x64), outputs(net64, x64), atol=1e-10, rtol=0
    )


# ---------------------------------------------------------------- the official LKDN-S checkpoints


@pytest.fixture(scope="module")
def official_lkdn_s() -> nn.Module:
    net = build_network(LKDN_S_TRAIN).eval()
    net.load_state_dict(load_state_dict(shared_file("pretrained", "LKDN", "LKDN-S_x4.pth"), param_key="params_ema"))
    return net


def test_folding_official_lkdn_s_reproduces_official_deploy_checkpoint(official_lkdn_s: nn.Module) -> None:
    official = load_state_dict(shared_file("pretrained", "LKDN", "LKDN-S_del_rep_x4.pth"))
    folded = reparameterize_model(official_lkdn_s)
    assert count_parameters(folded) == 129_177
    ours = folded.state_dict()
    assert set(ours) == set(official)
    for key, value in official.items():
        torch.testing.assert_close(ours[key], value, atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


def test_folding_official_lkdn_s_with_num_in(official_lkdn_s: nn.Module) -> None:
    folded = reparameterize_model(official_lkdn_s, fold_num_in=True)
    assert count_parameters(folded) == 128_799
    deploy = build_network(deploy_options(LKDN_S_TRAIN, fold_num_in=True))
    deploy.load_state_dict(folded.state_dict(), strict=True)
    check = verify_reparameterization(official_lkdn_s, deploy, fold_num_in=True, input_shape=(1, 3, 17, 13))
    assert check.ok, check.describe()
