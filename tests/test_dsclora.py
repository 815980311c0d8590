"""DSCLoRA (NTIRE 2025 1st place): the official checkpoint loads strictly (the harness's strict=False
hides nothing), equals the official code on Set5 and reproduces its Set5 numbers; ConvLoRA computes the
official low-rank layout and folds exactly, the training form folds into the deploy form (also through
scripts/reparameterize.py) and starts as the checkpoint it fine-tunes; spandrel tells the forms apart."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import ROOT, cuda_is_a_no_op, official_module, shared_file
from ntire_checks import (
    Entry,
    assert_folds_exactly,
    assert_our_counts,
    assert_reparameterize_script_writes_the_deploy_form,
    assert_spandrel_detects,
    claims,
    randomize,
    reference,
)
from test_train_common import checkpoint, make_pairs, run_training

from lkdn import build_network
from lkdn.archs.dsclora_arch import ConvLoRA, LoRAConv3XC, dsclora_options_from_state
from lkdn.archs.span_arch import FoldedConv3XC
from lkdn.loading import load_network_from_options
from lkdn.options import load_options

pytestmark = pytest.mark.usefixtures("one_thread")

DEPLOY = {"type": "DSCLoRA", "feature_channels": 26, "upscale": 4, "deploy": True}
DSCLORA = Entry("DSCLoRA", "DSCLoRA_NTIRE2025", DEPLOY)


def official_network() -> torch.nn.Module:
    module = official_module("ntire_esr/2025/models/team23_DSCF.py")
    with cuda_is_a_no_op():  # the official constructor moves itself to CUDA and runs a warm-up pass
        return module.DSCF(3, 3, feature_channels=26, upscale=4)


def test_official_checkpoint_loads_strictly_with_its_parameter_count() -> None:
    DSCLORA.assert_loads_strictly_with(130_828)


def test_the_harness_non_strict_load_hides_no_key() -> None:
    """The harness loads with strict=False; the checkpoint has exactly the official network's keys and
    shapes (the low-rank updates are merged, the official file's LoRA layers are not built)."""
    official = official_network()
    state = DSCLORA.state()
    assert {k: tuple(v.shape) for k, v in official.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert not any("lora" in k for k in state)


def test_equals_the_official_code_on_set5() -> None:
    DSCLORA.assert_equals_the_official_on_set5(official_network())


def test_set5_reproduces_the_official_numbers(tmp_path: Path) -> None:
    DSCLORA.assert_set5_numbers(tmp_path, 31.75, 0.8892)


def test_ntire_counts() -> None:
    """No harness row for 2025 entries here: our counts (SPAN c26's layout: 22 convs)."""
    assert_our_counts(DEPLOY, params=130_828, flops=8_535_015_424, activations=38_928_384, convs=22)


def test_conv_lora_computes_the_official_low_rank_layout() -> None:
    """The official Lora_Conv2d (unmerged, training mode) with our tensors gives our output."""
    module = official_module("ntire_esr/2025/models/team23_DSCF.py")
    conv = ConvLoRA(5, 7, 3, rank=2, scaling=2.0, init_std=0.3)
    official = module.Lora_Conv2d(5, 7, kernel_size=3, r=2, lora_alpha=4, padding=1)
    official.load_state_dict(conv.state_dict(), strict=True)
    assert not official.merged  # training mode: the update is added in every forward
    x = torch.rand(2, 5, 9, 8)
    with torch.no_grad():
        assert (conv.delta().abs() > 0).any()
        torch.testing.assert_close(conv(x), official(x), atol=1e-6, rtol=0)


def test_conv_lora_folds_exactly_and_only_its_update_trains() -> None:
    conv = randomize(ConvLoRA(4, 6, 3, rank=2, scaling=2.0).double(), seed=3)
    conv.weight.normal_()  # the frozen kernel (a buffer)
    assert [n for n, _ in conv.named_parameters()] == ["bias", "lora_A", "lora_B"]
    fused = conv.fuse()
    assert type(fused) is torch.nn.Conv2d and fused.weight.dtype == torch.float64
    x = torch.rand(1, 4, 10, 7, dtype=torch.float64)
    expected = reference(conv, x)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, atol=1e-12 * expected.abs().max().item(), rtol=0)
    wrapped = LoRAConv3XC(4, 6, rank=1)
    assert isinstance(wrapped.fuse(), FoldedConv3XC) and set(wrapped.fuse().state_dict()) == {"eval_conv.weight",
                                                                                                "eval_conv.bias"}


def test_the_training_recipe_starts_as_the_checkpoint_it_fine_tunes() -> None:
    """options/train/DSCLoRA: the published network is the frozen base (non-strict: only the low-rank keys
    are new), the fresh updates are zero, and only they train."""
    opt = load_options(ROOT / "options" / "train" / "DSCLoRA" / "train_DSCLoRA_x4.yml")
    training = load_network_from_options(opt, weights=DSCLORA.checkpoint())
    state = DSCLORA.state()
    new_keys = set(training.state_dict()) - set(state)
    assert set(state) <= set(training.state_dict())
    assert len(new_keys) == 2 * (18 + 2) and all(k.endswith(("lora_A", "lora_B")) for k in new_keys)
    assert sorted(n for n, p in training.named_parameters() if p.requires_grad) == sorted(new_keys)
    x = torch.rand(1, 3, 12, 10, dtype=torch.float64)
    with torch.no_grad():  # float64: the unfused and fused convs of the two forms round alike
        torch.testing.assert_close(training.double()(x), DSCLORA.ours().double()(x), atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_the_training_recipe_trains_only_the_updates(tmp_path: Path) -> None:
    """Two iterations of options/train/DSCLoRA with only data, weights, batch and length changed: the frozen
    kernels, biases, conv_1 and conv_cat are the checkpoint's; the updates moved."""
    set5 = shared_file("benchmarks", "Set5", "x4")
    hr_dir, lr_dir = make_pairs(tmp_path / "pairs", scale=4, size=256, names=("astronaut", "rocket"))
    assert run_training(ROOT / "options" / "train" / "DSCLoRA" / "train_DSCLoRA_x4.yml", tmp_path, "--force_yml",
                        "num_gpu=0", f"path:pretrain_network_g={DSCLORA.checkpoint()}", "train:total_iter=2",
                        "datasets:train:batch_size_per_gpu=2", "datasets:train:num_worker_per_gpu=0",
                        "datasets:train:io_backend:type=disk", f"datasets:train:dataroot_gt={hr_dir}",
                        f"datasets:train:dataroot_lq={lr_dir}", f"datasets:val:dataroot_gt={set5 / 'HR'}",
                        f"datasets:val:dataroot_lq={set5 / 'LR'}") == 0
    trained = checkpoint(tmp_path, "DSCLoRA_x4_DF2K_200k", "latest")["params"]
    base = DSCLORA.state()
    for key, value in base.items():
        torch.testing.assert_close(trained[key], value, atol=0, rtol=0, msg=key)
    assert all(trained[k].abs().max() > 0 for k in trained if k.endswith("lora_B"))  # started at zero


def test_train_only_lora_leaves_only_the_updates_trainable() -> None:
    net = build_network({"type": "DSCLoRA", "feature_channels": 6, "lora_init_std": 0.01, "train_only_lora": True})
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * (18 + 2) and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    net(torch.rand(1, 3, 9, 8)).mean().backward()
    assert all((p.grad is not None) == p.requires_grad for p in net.parameters())
    assert all(p.requires_grad for p in build_network({"type": "DSCLoRA", "feature_channels": 6}).parameters())


def test_the_training_form_folds_exactly_into_the_deploy_form() -> None:
    training = build_network({"type": "DSCLoRA", "feature_channels": 8})
    assert sum(isinstance(m, LoRAConv3XC) for m in training.modules()) == 19  # 18 block convs + conv_2
    assert isinstance(training.upsampler[0], ConvLoRA) and not isinstance(training.conv_1.eval_conv, ConvLoRA)
    assert_folds_exactly({"type": "DSCLoRA", "feature_channels": 8, "upscale": 3})
    assert_folds_exactly({"type": "DSCLoRA", "feature_channels": 6, "lora_rank": 3, "tail_lora_rank": 0})


def test_reparameterize_script_writes_a_checkpoint_of_the_deploy_form(tmp_path: Path) -> None:
    assert_reparameterize_script_writes_the_deploy_form(tmp_path, {"type": "DSCLoRA", "feature_channels": 8,
                                                                   "img_range": 1.0})


@pytest.mark.parametrize(("options", "message"), [
    ({"lora_rank": -1}, r"lora_rank: expected a rank of 0 or more, got -1"),
    ({"tail_lora_rank": 1.5}, r"tail_lora_rank: expected a rank of 0 or more, got 1\.5"),
    ({"lora_rank": 0, "tail_lora_rank": 0}, r"lora_rank, tail_lora_rank: both 0 leave no update"),
])
def test_bad_ranks_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_network({"type": "DSCLoRA", "feature_channels": 4, **options})


def test_spandrel_reads_the_official_checkpoint_as_span_c26() -> None:
    """The merged checkpoint has SPAN's keys and function: it is read as SPAN with 26 channels."""
    DSCLORA.assert_spandrel_reads("SPAN", {"type": "SPAN", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 26,
                                           "upscale": 4, "deploy": True})


@pytest.mark.parametrize("ranks", [(2, 8), (3, 0), (0, 5)])
def test_spandrel_reads_training_forms_as_dsclora_with_their_ranks(ranks: tuple[int, int], tmp_path: Path) -> None:
    pytest.importorskip("spandrel")
    from lkdn.checkpoint import save_file

    options = {"type": "DSCLoRA", "num_in_ch": 3, "num_out_ch": 3, "feature_channels": 6, "upscale": 4,
               "lora_rank": ranks[0], "tail_lora_rank": ranks[1]}
    net = randomize(build_network(options | {"lora_init_std": 0.01}), std=0.02)
    assert dsclora_options_from_state(net.state_dict()) == options
    path = save_file({"params": copy.deepcopy(net.state_dict())}, tmp_path / "train.pth")

    def check(found: dict) -> None:
        assert found == options

    assert_spandrel_detects(path, "DSCLoRA", net, check)


def test_one_detection_of_ours_claims_each_form() -> None:
    """The merged checkpoint is SPAN's; a training form, with SPAN's keys and low-rank ones, is DSCLoRA's only."""
    assert claims(DSCLORA.state()) == ["SPAN"]
    for ranks in ((2, 8), (1, 0), (0, 1)):
        net = build_network({"type": "DSCLoRA", "feature_channels": 4, "lora_rank": ranks[0], "tail_lora_rank": ranks[1]})
        assert claims(net.state_dict()) == ["DSCLoRA"], ranks
