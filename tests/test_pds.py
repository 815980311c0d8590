"""PDS (NTIRE 2026 2nd place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form folds exactly
into the deploy form (also through scripts/reparameterize.py); spandrel reads the checkpoint as PDS,
not as PKDSR (the same layout under other key names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cuda_is_a_no_op, official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_harness_counts,
    assert_reparameterize_script_writes_the_deploy_form,
    claims,
)

from lkdn import build_network

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "PDS", "feature_channels": 32, "tail_channels": 20, "upscale": 4, "deploy": True}
PDS = Entry("PDS", "PDS_NTIRE2026", DEPLOY)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    net = PDS.assert_loads_strictly_with(141_748)
    assert net.conv_cat_1.out_channels == 20 and net.conv_2_1.eval_conv.in_channels == 20


def test_equals_the_official_code_on_set5() -> None:
    module = official_module("ntire_esr/2026/models/team01_PDS.py")
    with cuda_is_a_no_op():  # the official constructor moves itself to CUDA and runs a warm-up pass
        official = module.PDS()  # the harness's call: all defaults
    PDS.assert_equals_the_official_on_set5(official)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    PDS.assert_set5_numbers(tmp_path, 31.76, 0.8888)


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 01_PDS: 0.142 M params, 9.25 G FLOPs, 39.06 M activations, 18 convs."""
    assert_harness_counts(DEPLOY, params=141_748, activations=39_059_456, convs=18, published=(0.142, 9.25, 39.06))


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    assert_folds_exactly({"type": "PDS", "feature_channels": 8, "tail_channels": 5, "upscale": 2})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "PDS", "feature_channels": 8,
                                                                   "tail_channels": 5})


def test_spandrel_reads_the_official_checkpoint_as_pds() -> None:
    PDS.assert_spandrel_reads("PDS", {"type": "PDS", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 32,
                                      "tail_channels": 20, "upscale": 4, "deploy": True})


def test_pds_and_pkdsr_state_dicts_are_told_apart() -> None:
    for arch in ("PDS", "PKDSR"):
        for deploy in (False, True):
            state = build_network({"type": arch, "feature_channels": 8, "tail_channels": 6, "deploy": deploy}).state_dict()
            assert claims(state) == [arch]
