"""DISP (NTIRE 2026 4th place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form (ours: DISP
is published in deploy form only) folds exactly into the deploy form (also through
scripts/reparameterize.py); spandrel reads the checkpoint and the block counts from its keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_harness_counts,
    assert_reparameterize_script_writes_the_deploy_form,
)

from lkdn import build_network
from lkdn.archs.disp_arch import disp_options_from_state

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "DISP", "feature_channels": 32, "upscale": 4, "num_block": 4, "extern_convs": 1, "deploy": True}
DISP = Entry("DISP", "DISP_NTIRE2026", DEPLOY)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    DISP.assert_loads_strictly_with(163_792)


def test_equals_the_official_code_on_set5() -> None:
    official = official_module("ntire_esr/2026/models/team18_DISP.py").DISP()  # the harness's call: all defaults
    DISP.assert_equals_the_official_on_set5(official)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    DISP.assert_set5_numbers(tmp_path, 31.94, 0.8918)


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 18_DISP: 0.164 M params, 10.69 G FLOPs, 40.89 M activations, 19 convs."""
    assert_harness_counts(DEPLOY, params=163_792, activations=40_894_464, convs=19, published=(0.164, 10.69, 40.89))


@pytest.mark.parametrize("extern_convs", [0, 2])
def test_the_training_form_folds_exactly_into_the_deploy_form(extern_convs: int) -> None:
    assert_folds_exactly({"type": "DISP", "feature_channels": 8, "num_block": 2, "extern_convs": extern_convs,
                          "upscale": 3})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "DISP", "feature_channels": 8, "num_block": 2})


def test_spandrel_reads_the_official_checkpoint_as_disp() -> None:
    DISP.assert_spandrel_reads("DISP", {"type": "DISP", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 32,
                                        "upscale": 4, "num_block": 4, "extern_convs": 1, "deploy": True})


def test_depth_and_form_read_back_from_a_training_state_dict() -> None:
    options = {"type": "DISP", "num_in_ch": 3, "num_out_ch": 1, "feature_channels": 8, "upscale": 2, "num_block": 3,
               "extern_convs": 2}
    assert disp_options_from_state(build_network(options).state_dict()) == options
    with pytest.raises(ValueError, match="num_block: expected a positive integer, got 0"):
        build_network({"type": "DISP", "num_block": 0})
    with pytest.raises(ValueError, match="extern_convs: expected a non-negative integer, got -1"):
        build_network({"type": "DISP", "extern_convs": -1})
