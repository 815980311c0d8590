"""SPANF (NTIRE 2025 2nd place): the official checkpoint loads strictly, equals the official code on Set5
and reproduces its Set5 numbers; the Conv3XC training form folds exactly into the deploy form (also through
scripts/reparameterize.py); spandrel reads the checkpoint as PKDSR with a full-width fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cuda_is_a_no_op, official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_our_counts,
    assert_reparameterize_script_writes_the_deploy_form,
    assert_spandrel_detects,
    claims,
)

from lkdn import build_network
from lkdn.archs.pkdsr_arch import PKDSR
from lkdn.archs.span_arch import Conv3XC

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "SPANF", "feature_channels": 32, "upscale": 4, "deploy": True}
SPANF = Entry("SPANF", "SPANF_NTIRE2025", DEPLOY)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    net = SPANF.assert_loads_strictly_with(148_288)
    assert isinstance(net, PKDSR) and net.conv_cat.out_channels == net.conv_2.eval_conv.in_channels == 32


def test_equals_the_official_code_on_set5() -> None:
    module = official_module("ntire_esr/2025/models/team24_SPANF.py")
    with cuda_is_a_no_op():  # the official constructor moves itself to CUDA and runs a warm-up pass
        official = module.SPANF(3, 3, upscale=4, feature_channels=32)
    SPANF.assert_equals_the_official_on_set5(official)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    SPANF.assert_set5_numbers(tmp_path, 31.77, 0.8896)


def test_ntire_counts() -> None:
    """No harness row for 2025 entries here: our counts (15 block convs, conv_near, conv_cat, conv_2)."""
    assert_our_counts(DEPLOY, params=148_288, flops=9_681_502_208, activations=39_845_888, convs=18)


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    training = build_network({"type": "SPANF", "feature_channels": 8})
    assert sum(isinstance(m, Conv3XC) for m in training.modules()) == 16  # 5 blocks x 3 + conv_2
    assert training.conv_cat.out_channels == 8
    assert_folds_exactly({"type": "SPANF", "feature_channels": 8, "upscale": 3})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "SPANF", "feature_channels": 8})


def test_spandrel_reads_the_official_checkpoint_as_pkdsr_with_a_full_width_fusion() -> None:
    pytest.importorskip("spandrel")

    def check(options: dict) -> None:
        assert options["type"] == "PKDSR" and options["feature_channels"] == options["tail_channels"] == 32

    assert_spandrel_detects(SPANF.checkpoint(), "PKDSR", SPANF.ours(), check)


def test_one_detection_of_ours_claims_the_checkpoint_and_the_training_form() -> None:
    assert claims(SPANF.state()) == ["PKDSR"]
    assert claims(build_network({"type": "SPANF", "feature_channels": 4}).state_dict()) == ["PKDSR"]
