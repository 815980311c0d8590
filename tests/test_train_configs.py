"""Every training YAML parses and builds; the official LKDN x4 recipe runs with only its data paths changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from basicsr.losses import build_loss
from conftest import shared_file
from test_train_common import make_pairs, read_jsonl, run_training  # noqa: F401 (fixture)

from lkdn import build_network
from lkdn.checkpoint import load_file
from lkdn.options import parse_options
from lkdn.training.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TRAIN_OPTIONS = sorted((ROOT / "options" / "train").rglob("*.yml"))
OURS = {f"train_LKDN_x{s}.yml" for s in (2, 3, 4)} | {"train_LKDN-S_x4_from_scratch.yml", "train_LKDN-S_x4_fine_tune.yml"}


def test_the_official_recipes_are_present() -> None:
    assert OURS <= {p.name for p in TRAIN_OPTIONS}


@pytest.mark.parametrize("path", TRAIN_OPTIONS, ids=[str(p.relative_to(ROOT / "options" / "train")) for p in TRAIN_OPTIONS])
def test_training_options_parse_and_build(path: Path, tmp_path: Path) -> None:
    opt = parse_options(path, is_train=True, root_path=tmp_path)
    net = build_network(opt["network_g"])
    train = opt["train"]
    optimizer = build_optimizer(net.parameters(), train["optim_g"])
    if train.get("scheduler"):
        build_scheduler(optimizer, train["scheduler"])
    assert train.get("pixel_opt") or train.get("perceptual_opt")
    if train.get("pixel_opt"):
        build_loss(dict(train["pixel_opt"]))
    assert int(train["total_iter"]) > 0
    assert "train" in opt["datasets"]
    assert any(phase.startswith("val") for phase in opt["datasets"]), "validate on a benchmark set"


@pytest.mark.parametrize("name", sorted(OURS))
def test_official_recipes_follow_the_paper(name: str) -> None:
    opt = yaml.safe_load((ROOT / "options" / "train" / "LKDN" / name).read_text())
    scale, train, data = opt["scale"], opt["train"], opt["datasets"]["train"]
    assert opt["num_gpu"] == "auto" and train["ema_decay"] == 0.999
    assert data["gt_size"] % scale == 0 and data["use_hflip"] and data["use_rot"]
    assert opt["datasets"]["val"]["dataroot_gt"] == f"datasets/Set5/GTmod{scale}"
    assert opt["datasets"]["val"]["dataroot_lq"] == f"datasets/Set5/LRbicx{scale}"
    for metric in opt["val"]["metrics"].values():
        assert metric["crop_border"] == scale and metric["test_y_channel"] is True
    if name.startswith("train_LKDN_x"):
        assert data["gt_size"] == 48 * scale and data["batch_size_per_gpu"] == 64
        assert train["optim_g"] == {"type": "Adan", "lr": 5e-3, "betas": [0.98, 0.92, 0.99], "eps": 1e-8,
                                    "weight_decay": 0, "foreach": True}
        assert train["total_iter"] == 1_000_000 and train["pixel_opt"]["type"] == "L1Loss"
    elif "from_scratch" in name:
        assert (data["gt_size"], data["batch_size_per_gpu"], train["total_iter"]) == (256, 128, 950_000)
        assert train["pixel_opt"]["type"] == "L1Loss" and opt["network_g"]["conv"] == "BSConvU_rep"
    else:
        assert (data["gt_size"], data["batch_size_per_gpu"], train["total_iter"]) == (480, 64, 100_000)
        assert train["pixel_opt"]["type"] == "MSELoss" and train["optim_g"]["lr"] == 2e-5
        assert opt["path"]["pretrain_network_g"].startswith("experiments/LKDN-S_C42_A42_adam_ema_x4_DF2K_from_scratch")
        assert opt["path"]["param_key_g"] == "params_ema" and opt["path"]["strict_load_g"] is True


def _create_lmdb():
    from lkdn.commands.create_lmdb import create_lmdb

    return create_lmdb


@pytest.mark.filterwarnings("ignore:This DataLoader will create 6 worker processes")
def test_official_lkdn_x4_recipe_runs_with_only_data_paths_changed(tmp_path: Path) -> None:
    set5_hr, set5_lr = shared_file("benchmarks", "Set5", "x4", "HR"), shared_file("benchmarks", "Set5", "x4", "LR")
    hr_dir, lr_dir = make_pairs(tmp_path / "DF2K", scale=4, size=240, names=("astronaut", "rocket"))
    create_lmdb = _create_lmdb()
    create_lmdb(hr_dir, tmp_path / "DF2K_train_HR_sub.lmdb", n_thread=1)
    create_lmdb(lr_dir, tmp_path / "DF2K_train_LR_bicubic_X4_sub.lmdb", n_thread=1)

    text = (ROOT / "options" / "train" / "LKDN" / "train_LKDN_x4.yml").read_text()
    for old, new in (("datasets/DF2K/DF2K_train_HR_sub.lmdb", tmp_path / "DF2K_train_HR_sub.lmdb"),
                     ("datasets/DF2K/DF2K_train_LR_bicubic_X4_sub.lmdb", tmp_path / "DF2K_train_LR_bicubic_X4_sub.lmdb"),
                     ("datasets/Set5/GTmod4", set5_hr), ("datasets/Set5/LRbicx4", set5_lr)):
        assert old in text
        text = text.replace(old, str(new))
    options = tmp_path / "train_LKDN_x4.yml"
    options.write_text(text)
    # only the length and the batch are cut, for the CPU: 2 iterations of batch 2 (6 loader workers as configured)
    assert run_training(options, tmp_path, "--force_yml", "train:total_iter=2", "datasets:train:batch_size_per_gpu=2") == 0

    name = "LKDN_C56_A56_BSConvU_adan_ema_x4_DF2K_1000k"
    exp = tmp_path / "experiments" / name
    ckpt = load_file(exp / "models" / "net_g_latest.pth")
    assert sum(t.numel() for t in ckpt["params_ema"].values()) == 321_992
    assert not (exp / "train_log.jsonl").exists()  # print_freq 100: no training line yet
    (record,) = read_jsonl(exp / "metrics.jsonl")  # the validation at the end of training
    assert record["dataset"] == "Set5" and record["iter"] == 2 and set(record) >= {"psnr", "ssim"}
    assert (tmp_path / "tb_logger" / name).is_dir()
    saved = yaml.safe_load((exp / f"{name}_options.yml").read_text())
    assert saved["train"]["total_iter"] == 2 and saved["train"]["optim_g"]["type"] == "Adan"
