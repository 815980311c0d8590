"""RLFN: the NTIRE 2022 winner's checkpoint loads strictly, equals the official code of 2022 (RLFN_cut) and
of the 2024 baseline (RLFN_Prune, its own key names) on Set5, reproduces the Set5 numbers through
lkdn/test.py and the NTIRE 2024 harness counts, and is detected by spandrel as RLFN only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import official_module
from ntire_checks import Entry, assert_harness_counts, assert_spandrel_detects, max_difference_on_set5

from lkdn import build_network
from lkdn.archs import contract
from lkdn.archs.rlfn_arch import rlfn_options_from_state

pytestmark = pytest.mark.usefixtures("one_thread")

RLFN = {"type": "RLFN", "num_feat": 46, "mid_feat": 48, "num_block": 4, "upscale": 4, "img_range": 255.0}
ENTRY = Entry("RLFN", "RLFN_NTIRE2022", RLFN)


class PixelRange(torch.nn.Module):
    """An official network run as the harness runs it with data_range 255: [0, 1] in and out."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 255.0) / 255.0


def test_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    ENTRY.assert_loads_strictly_with(317_218)


def names_of_2024(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the NTIRE 2024 baseline's names (``conv_1``, ``block_1..4``, ``conv_2``)."""
    renamed = {}
    for key, value in state.items():
        head, rest = key.split(".", 1)
        head = {"fea_conv": "conv_1", "LR_conv": "conv_2"}.get(head, re.sub(r"^B(\d+)$", r"block_\1", head))
        renamed[f"{head}.{rest}"] = value
    return renamed


def test_equals_the_official_code_of_2022_and_2024_on_set5() -> None:
    """Both official networks take pixel values in [0, 255] (the harness's data_range 255)."""
    state = ENTRY.state()
    cut = official_module("ntire_esr/2022/models/team04_rlfn.py").RLFN_cut(in_nc=3, out_nc=3).eval()
    cut.load_state_dict(state, strict=True)
    prune = official_module("ntire_esr/2024/models/team00_RLFN.py").RLFN_Prune().eval()
    prune.load_state_dict(names_of_2024(state), strict=True)
    for official in (cut, prune):
        differences = max_difference_on_set5(ENTRY.ours(), PixelRange(official))
        assert max(differences.values()) <= 1e-5, differences


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    ENTRY.assert_set5_numbers(tmp_path, 32.10, 0.8939)


def test_ntire_counts_match_the_2024_harness() -> None:
    """ntire_esr/2024/results.txt, 00_RLFN_baseline: 0.317 M params, 19.67 GFLOPs, 80.05 M activations, 39 convs."""
    assert_harness_counts(RLFN, params=317_218, activations=80_045_184, convs=39, published=(0.317, 19.67, 80.05))


def test_the_attention_is_not_translation_local() -> None:
    net = build_network({"type": "RLFN", "num_feat": 12, "mid_feat": 8, "num_block": 1, "esa_channels": 4})
    assert contract("RLFN").radius(net) is None  # strided conv, max-pool and bilinear resize back


def test_spandrel_detects_the_checkpoint_as_rlfn_only() -> None:
    pytest.importorskip("spandrel")

    def check(options: dict) -> None:
        shapes = {k: v for k, v in RLFN.items() if k != "img_range"}  # the range is not in the weights
        assert options == shapes | {"num_in_ch": 3, "num_out_ch": 3, "esa_channels": 16}
        assert build_network(options).img_range == 255.0  # the official range is the default

    assert_spandrel_detects(ENTRY.checkpoint(), "RLFN", ENTRY.ours(), check)


def test_options_are_read_back_from_shapes() -> None:
    options = {"type": "RLFN", "num_in_ch": 1, "num_out_ch": 1, "num_feat": 20, "mid_feat": 12, "num_block": 3,
               "esa_channels": 8, "upscale": 3}
    assert rlfn_options_from_state(build_network(options).state_dict()) == options


def test_bad_img_range_is_reported() -> None:
    with pytest.raises(ValueError, match="img_range must be positive, got 0"):
        build_network({"type": "RLFN", "img_range": 0})
