"""PDS (NTIRE 2026 2nd place): the official checkpoint loads strictly, equals the official code on
Set5 and reproduces its Set5 numbers and the harness's counts; the Conv3XC training form folds exactly
into the deploy form (also through scripts/reparameterize.py); spandrel reads the checkpoint as PDS,
not as PKDSR (the same layout under other key names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cuda_is_a_no_op, official_module, shared_file
from ntire_checks import (
    assert_folds_exactly,
    assert_reparameterize_script_writes_the_deploy_form,
    assert_spandrel_detects,
    max_difference_on_set5,
    option_file,
    set5_numbers,
)

from lkdn import build_network
from lkdn.archs import our_architectures
from lkdn.loading import load_network
from lkdn.profiling import count_parameters, ntire_counts

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "PDS", "feature_channels": 32, "tail_channels": 20, "upscale": 4, "deploy": True}


def official_checkpoint() -> Path:
    return shared_file("pretrained", "PDS", "PDS_NTIRE2026.pth")


def ours() -> torch.nn.Module:
    return load_network(build_network(DEPLOY), official_checkpoint(), strict=True)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    net = ours()
    assert count_parameters(net) == 141_748
    assert net.conv_cat_1.out_channels == 20 and net.conv_2_1.eval_conv.in_channels == 20


def test_equals_the_official_code_on_set5() -> None:
    module = official_module("ntire_esr/2026/models/team01_PDS.py")
    with cuda_is_a_no_op():  # the official constructor moves itself to CUDA and runs a warm-up pass
        official = module.PDS()  # the harness's call: all defaults
    official.load_state_dict(torch.load(official_checkpoint(), map_location="cpu", weights_only=True), strict=True)
    differences = max_difference_on_set5(ours(), official)
    assert max(differences.values()) <= 1e-5, differences


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    psnr, ssim = set5_numbers(tmp_path, option_file("PDS", "PDS_NTIRE2026"), official_checkpoint())
    assert abs(psnr - 31.76) <= 0.01 and abs(ssim - 0.8888) <= 0.0005


def test_ntire_counts_match_the_harness() -> None:
    """results.txt, row 01_PDS: 0.142 M params, 9.25 G FLOPs, 39.06 M activations, 18 convs."""
    pytest.importorskip("fvcore")
    counts = ntire_counts(build_network(DEPLOY))
    assert (counts.params, counts.activations, counts.convs) == (141_748, 39_059_456, 18)
    assert (round(counts.params / 1e6, 3), round(counts.flops / 1e9, 2), round(counts.activations / 1e6, 2)) == (
        0.142, 9.25, 39.06)


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    assert_folds_exactly({"type": "PDS", "feature_channels": 8, "tail_channels": 5, "upscale": 2})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "PDS", "feature_channels": 8,
                                                                   "tail_channels": 5})


def test_spandrel_reads_the_official_checkpoint_as_pds() -> None:
    pytest.importorskip("spandrel")

    def check(options: dict) -> None:
        assert options == {"type": "PDS", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 32,
                           "tail_channels": 20, "upscale": 4, "deploy": True}

    assert_spandrel_detects(official_checkpoint(), "PDS", ours(), check)


def test_pds_and_pkdsr_state_dicts_are_told_apart() -> None:
    detections = {name: entry.spandrel for name, entry in our_architectures().items() if entry.spandrel is not None}
    for arch in ("PDS", "PKDSR"):
        for deploy in (False, True):
            state = build_network({"type": arch, "feature_channels": 8, "tail_channels": 6, "deploy": deploy}).state_dict()
            assert [name for name, detection in detections.items() if detection.matches(state)] == [arch]
