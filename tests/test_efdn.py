"""EFDN: the NTIRE 2025 baseline checkpoint (deploy form) loads strictly, equals the official code on Set5
and reproduces its Set5 numbers through lkdn/test.py; the training form's EDBB equals the official EDBB
and folds exactly (float64, random weights, non-zero biases), the whole network and
scripts/reparameterize.py give a deploy form that loads strictly; the harness counts; spandrel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_our_counts,
    assert_reparameterize_script_writes_the_deploy_form,
    randomize,
    reference,
)

from lkdn import build_network
from lkdn.archs.contract import foldable_modules, is_foldable
from lkdn.archs.efdn_arch import EDBB, Cell, FoldedEDBB, efdn_options_from_state
from lkdn.loading import deploy_form

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "EFDN", "num_feat": 48, "upscale": 4, "deploy": True}
EFDN = Entry("EFDN", "EFDN_NTIRE2025", DEPLOY)


def test_checkpoint_is_the_deploy_form_and_loads_strictly_with_its_parameter_count() -> None:
    state = EFDN.state()
    assert "cells.0.conv2.rep_conv.weight" in state and not any("conv1x1_sbx" in k for k in state)
    EFDN.assert_loads_strictly_with(276_192)


def test_equals_the_official_code_on_set5() -> None:
    official = official_module("ntire_esr/2025/models/team00_EFDN.py").EFDN()  # as the 2025 test_demo.py
    EFDN.assert_equals_the_official_on_set5(official)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    EFDN.assert_set5_numbers(tmp_path, 32.08, 0.8931)


def test_ntire_counts_equal_the_official_networks() -> None:
    """The 2025 harness publishes no count row for its baseline: our counts, and the official network's."""
    assert_our_counts(DEPLOY, params=276_192, flops=16_703_470_848, activations=111_116_736, convs=65,
                      official=official_module("ntire_esr/2025/models/team00_EFDN.py").EFDN)


# --- the training form -------------------------------------------------------------------------


@pytest.mark.parametrize("with_13", [False, True])
@pytest.mark.parametrize(("c_in", "c_out"), [(8, 8), (6, 10)])
def test_edbb_folds_exactly(c_in: int, c_out: int, with_13: bool) -> None:
    block = randomize(EDBB(c_in, c_out, with_13=with_13).double(), seed=c_in + c_out + with_13)
    assert {"conv1x1_sbx.k0", "conv1x1_sbx.b0", "conv1x1_sbx.scale", "conv1x1_sbx.bias", "conv1x1_lpl.mask"} <= set(
        block.state_dict())
    assert ("conv1x1_3x3.k1" in block.state_dict()) is with_13
    fused = block.fuse()
    assert isinstance(fused, FoldedEDBB) and fused.rep_conv.weight.dtype == torch.float64
    x = torch.rand(2, c_in, 11, 9, dtype=torch.float64)
    expected = reference(block, x)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(reference(fused, x), expected, atol=1e-10 * expected.abs().max().item(), rtol=0)


@pytest.mark.parametrize("with_13", [False, True])
def test_edbb_equals_the_official_training_block_and_its_fold(with_13: bool) -> None:
    """The official EDBB (training form) with our weights; its own switch_to_deploy agrees with our fuse."""
    module = official_module("ntire_esr/2025/models/team00_EFDN.py")
    torch.manual_seed(1)
    official = module.EDBB(8, 8, with_13=with_13).eval()
    block = randomize(EDBB(8, 8, with_13=with_13), seed=3)
    official.load_state_dict(block.state_dict(), strict=with_13)  # the official block always holds conv1x1_3x3
    x = torch.rand(1, 8, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), official(x), atol=1e-5, rtol=0)
        official.switch_to_deploy()
        torch.testing.assert_close(block.fuse()(x), official(x), atol=1e-5, rtol=0)


def test_the_whole_network_folds_exactly_and_the_deploy_options_load_strictly() -> None:
    options = {"type": "EFDN", "num_feat": 8, "upscale": 3, "with_13": True, "clamp": False}
    _, deploy_options = deploy_form(build_network(options), options)
    assert deploy_options == {"type": "EFDN", "num_feat": 8, "upscale": 3, "clamp": False, "deploy": True}
    assert_folds_exactly(options, size=(17, 15))  # ESA's strided conv and 7x7 pool need 15 pixels
    assert_folds_exactly(options | {"with_13": False, "upscale": 4}, size=(16, 18))


def test_a_cells_fusion_conv_named_fuse_is_not_a_deploy_form() -> None:
    """``Cell.fuse`` is the official key of a 1x1 conv: only the eight EDBBs are folded."""
    net = build_network({"type": "EFDN", "num_feat": 8})
    assert not is_foldable(net.cells[0]) and not is_foldable(Cell(8, deploy=True))
    names = [name for name, _ in foldable_modules(net)]
    assert names == [f"cells.{i}.conv{j}" for i in range(4) for j in (2, 3)]


def test_reparameterize_script_folds_a_training_checkpoint_into_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "EFDN", "num_feat": 8, "clamp": False},
                                                        size=(16, 18))


def test_bad_num_feat_is_reported() -> None:
    with pytest.raises(ValueError, match="num_feat must be even .*, got 15"):
        build_network({"type": "EFDN", "num_feat": 15})


# --- spandrel ----------------------------------------------------------------------------------


def test_spandrel_detects_the_checkpoint_as_efdn_only() -> None:
    EFDN.assert_spandrel_reads("EFDN", DEPLOY | {"num_in_ch": 3, "num_out_ch": 3})


@pytest.mark.parametrize("options", [
    {"type": "EFDN", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 12, "upscale": 2},
    {"type": "EFDN", "num_in_ch": 1, "num_out_ch": 1, "num_feat": 8, "upscale": 3, "with_13": True},
    {"type": "EFDN", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 16, "upscale": 4, "deploy": True},
])
def test_options_are_read_back_from_shapes(options: dict) -> None:
    assert efdn_options_from_state(build_network(options).state_dict()) == options
