"""DSCF_Fused (NTIRE 2026 5th place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form folds exactly
into the deploy form (also through scripts/reparameterize.py); spandrel reads the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cuda_is_a_no_op, official_module
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_harness_counts,
    assert_reparameterize_script_writes_the_deploy_form,
    claims,
    set5_lr,
)

from lkdn import build_network
from lkdn.archs.span_arch import Conv3XC, FoldedConv3XC

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "DSCF_Fused", "feature_channels": 26, "upscale": 4, "deploy": True}
DSCF = Entry("DSCF", "DSCF_Fused_NTIRE2026", DEPLOY)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    DSCF.assert_loads_strictly_with(125_992)


def test_equals_the_official_code_on_set5() -> None:
    module = official_module("ntire_esr/2026/models/team15_DSCF_Fused.py")
    with cuda_is_a_no_op():
        official = module.DSCF_Fused(num_in_ch=3, num_out_ch=3, feature_channels=26, upscale=4)
    DSCF.assert_equals_the_official_on_set5(official)


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    DSCF.assert_set5_numbers(tmp_path, 31.74, 0.8891)


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 15_DSCF_Fused: 0.126 M params, 8.22 G FLOPs, 38.93 M activations, 22 convs."""
    assert_harness_counts(DEPLOY, params=125_992, activations=38_928_384, convs=22, published=(0.126, 8.22, 38.93))


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    training = build_network({"type": "DSCF_Fused", "feature_channels": 8})
    assert sum(isinstance(m, Conv3XC) for m in training.modules()) == 18  # conv_1, 2 + 5 x 3 block convs
    assert_folds_exactly({"type": "DSCF_Fused", "feature_channels": 8, "upscale": 3})
    deploy = build_network({"type": "DSCF_Fused", "feature_channels": 8, "deploy": True})
    assert sum(isinstance(m, FoldedConv3XC) for m in deploy.modules()) == 18


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "DSCF_Fused", "feature_channels": 8,
                                                                   "img_range": 1.0})


def test_rgb_mean_needs_one_value_per_channel() -> None:
    with pytest.raises(ValueError, match=r"rgb_mean needs one value per input channel \(1\), got \[0\.5, 0\.5\]"):
        build_network({"type": "DSCF_Fused", "num_in_ch": 1, "num_out_ch": 1, "rgb_mean": [0.5, 0.5]})


def test_float16_inference_stays_within_a_hundredth_of_float32() -> None:
    """What the spandrel detection's supports_half declares (SPAN c28 differs by the same 0.006)."""
    net = DSCF.ours()
    x = set5_lr()[-1][1]  # woman
    with torch.no_grad():
        single = net(x)
        half = net.half()(x.half()).float()
    assert torch.isfinite(half).all() and (half - single).abs().max().item() <= 0.01


def test_spandrel_reads_the_official_checkpoint() -> None:
    DSCF.assert_spandrel_reads("DSCF_Fused", {"type": "DSCF_Fused", "num_in_ch": 3, "num_out_ch": 3,
                                              "feature_channels": 26, "upscale": 4, "deploy": True})


def test_one_detection_of_ours_claims_the_checkpoint_and_the_training_form() -> None:
    assert claims(DSCF.state()) == ["DSCF_Fused"]
    assert claims(build_network({"type": "DSCF_Fused", "feature_channels": 4}).state_dict()) == ["DSCF_Fused"]
