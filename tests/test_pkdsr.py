"""PKDSR (NTIRE 2026 3rd place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form folds exactly
into the deploy form (also through scripts/reparameterize.py); spandrel reads the checkpoint."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import cuda_is_a_no_op, official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_harness_counts,
    assert_reparameterize_script_writes_the_deploy_form,
)

from lkdn import build_network
from lkdn.archs.span_arch import Conv3XC, FoldedConv3XC

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "PKDSR", "feature_channels": 32, "tail_channels": 24, "upscale": 4, "deploy": True}
PKDSR_ENTRY = Entry("PKDSR", "PKDSR_NTIRE2026", DEPLOY)  # params_ema preferred


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    net = PKDSR_ENTRY.assert_loads_strictly_with(143_928)
    assert net.conv_cat.out_channels == 24 and net.conv_2.eval_conv.in_channels == 24


def test_equals_the_official_code_on_set5() -> None:
    module = official_module("ntire_esr/2026/models/team16_PKDSR.py")
    # the official constructor moves itself to CUDA and runs 16 warm-up passes on torch.randn(1, 3, 256, 256):
    # on the CPU they run on a small input instead (they compute nothing that is kept)
    small = torch.randn(1, 3, 8, 8)
    with cuda_is_a_no_op(), mock.patch.object(torch, "randn", lambda *args, **kwargs: small):
        official = module.SPANFPrunedKD(3, 3, upscale=4, tail_channels=24, feature_channels=32)
    PKDSR_ENTRY.assert_equals_the_official_on_set5(official, PKDSR_ENTRY.state()["params_ema"])


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    PKDSR_ENTRY.assert_set5_numbers(tmp_path, 31.77, 0.8895)


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 16_PKDSR_FINAL_CKPT: 0.144 M params, 9.40 G FLOPs, 39.32 M activations, 18 convs."""
    assert_harness_counts(DEPLOY, params=143_928, activations=39_321_600, convs=18, published=(0.144, 9.40, 39.32))


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    training = build_network({"type": "PKDSR", "feature_channels": 8, "tail_channels": 6})
    assert sum(isinstance(m, Conv3XC) for m in training.modules()) == 16  # 5 blocks x 3 + conv_2
    assert_folds_exactly({"type": "PKDSR", "feature_channels": 8, "tail_channels": 6, "upscale": 3})
    deploy = build_network({"type": "PKDSR", "feature_channels": 8, "tail_channels": 6, "deploy": True})
    assert sum(isinstance(m, FoldedConv3XC) for m in deploy.modules()) == 16


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "PKDSR", "feature_channels": 8,
                                                                   "tail_channels": 6})


def test_spandrel_reads_the_official_checkpoint_as_pkdsr() -> None:
    PKDSR_ENTRY.assert_spandrel_reads("PKDSR", {"type": "PKDSR", "num_in_ch": 3, "num_out_ch": 3,
                                                "feature_channels": 32, "tail_channels": 24, "upscale": 4,
                                                "deploy": True})


def test_a_training_form_state_dict_reads_back_its_options() -> None:
    from lkdn.archs.pkdsr_arch import PKDSR, trunk_options_from_state

    net = build_network({"type": "PKDSR", "feature_channels": 8, "tail_channels": 6, "upscale": 2, "num_out_ch": 1})
    assert trunk_options_from_state(net.state_dict(), PKDSR) == {
        "type": "PKDSR", "num_in_ch": 3, "num_out_ch": 1, "feature_channels": 8, "tail_channels": 6, "upscale": 2}


@pytest.mark.parametrize(("arch", "key", "value"), [("PKDSR", "tail_channels", 0), ("PDS", "upscale", 0),
                                                    ("SPANV2", "feature_channels", -1), ("DISP", "num_in_ch", 1.5)])
def test_sizes_that_make_no_network_are_named(arch: str, key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^network_g \({arch}\): {key}: expected a positive integer, got {value}"):
        build_network({"type": arch, key: value})
