"""DISP (NTIRE 2026 4th place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form (ours: DISP
is published in deploy form only) folds exactly into the deploy form (also through
scripts/reparameterize.py); spandrel reads the checkpoint and the block counts from its keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import official_module, shared_file
from ntire_checks import (
    assert_folds_exactly,
    assert_reparameterize_script_writes_the_deploy_form,
    assert_spandrel_detects,
    max_difference_on_set5,
    option_file,
    set5_numbers,
)

from lkdn import build_network
from lkdn.archs.disp_arch import disp_options_from_state
from lkdn.loading import load_network
from lkdn.profiling import count_parameters, ntire_counts

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "DISP", "feature_channels": 32, "upscale": 4, "num_block": 4, "extern_convs": 1, "deploy": True}


def official_checkpoint() -> Path:
    return shared_file("pretrained", "DISP", "DISP_NTIRE2026.pth")


def ours() -> torch.nn.Module:
    return load_network(build_network(DEPLOY), official_checkpoint(), strict=True)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    assert count_parameters(ours()) == 163_792


def test_equals_the_official_code_on_set5() -> None:
    official = official_module("ntire_esr/2026/models/team18_DISP.py").DISP()  # the harness's call: all defaults
    official.load_state_dict(torch.load(official_checkpoint(), map_location="cpu", weights_only=True), strict=True)
    differences = max_difference_on_set5(ours(), official)
    assert max(differences.values()) <= 1e-5, differences


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    psnr, ssim = set5_numbers(tmp_path, option_file("DISP", "DISP_NTIRE2026"), official_checkpoint())
    assert abs(psnr - 31.94) <= 0.01 and abs(ssim - 0.8918) <= 0.0005


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 18_DISP: 0.164 M params, 10.69 G FLOPs, 40.89 M activations, 19 convs."""
    pytest.importorskip("fvcore")
    counts = ntire_counts(build_network(DEPLOY))
    assert (counts.params, counts.activations, counts.convs) == (163_792, 40_894_464, 19)
    assert (round(counts.params / 1e6, 3), round(counts.flops / 1e9, 2), round(counts.activations / 1e6, 2)) == (
        0.164, 10.69, 40.89)


@pytest.mark.parametrize("extern_convs", [0, 2])
def test_the_training_form_folds_exactly_into_the_deploy_form(extern_convs: int) -> None:
    assert_folds_exactly({"type": "DISP", "feature_channels": 8, "num_block": 2, "extern_convs": extern_convs,
                          "upscale": 3})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "DISP", "feature_channels": 8, "num_block": 2})


def test_spandrel_reads_the_official_checkpoint_as_disp() -> None:
    pytest.importorskip("spandrel")

    def check(options: dict) -> None:
        assert options == {"type": "DISP", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 32, "upscale": 4,
                           "num_block": 4, "extern_convs": 1, "deploy": True}

    assert_spandrel_detects(official_checkpoint(), "DISP", ours(), check)


def test_depth_and_form_read_back_from_a_training_state_dict() -> None:
    options = {"type": "DISP", "num_in_ch": 3, "num_out_ch": 1, "feature_channels": 8, "upscale": 2, "num_block": 3,
               "extern_convs": 2}
    assert disp_options_from_state(build_network(options).state_dict()) == options
    with pytest.raises(ValueError, match="num_block: expected a positive integer, got 0"):
        build_network({"type": "DISP", "num_block": 0})
    with pytest.raises(ValueError, match="extern_convs: expected a non-negative integer, got -1"):
        build_network({"type": "DISP", "extern_convs": -1})
