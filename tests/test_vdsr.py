"""VDSR and multi-scale data: residual learning on the bicubic-upsampled input, one scale per
batch, the pre-upsampled form equal to the LR form, and a multi-scale training run on the CPU."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data.transforms import mod_crop
from basicsr.utils import img2tensor
from basicsr.utils.matlab_functions import imresize
from torch.utils.data import DataLoader

from lkdn import build_network
from lkdn.archs.vdsr_arch import upsample_bicubic
from lkdn.data.multiscale_dataset import MultiScaleImageDataset, MultiScaleUpsampledImageDataset

SMALL = {"type": "VDSR", "num_in_ch": 3, "num_feat": 8, "num_layer": 4}


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    """Three smooth random 8-bit HR images of different sizes."""
    folder = tmp_path / "HR"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(50, 61), (49, 48), (60, 55)]):
        img = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)), (7, 7), 1.5)
        cv2.imwrite(str(folder / f"img{i}.png"), np.round(img * 255).astype(np.uint8))
    return folder


def test_paper_network_has_20_layers_and_665k_parameters() -> None:
    net = build_network({"type": "VDSR"})
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and {c.out_channels for c in convs[:-1]} == {64}
    assert sum(isinstance(m, torch.nn.ReLU) for m in net.modules()) == 19
    assert sum(p.numel() for p in net.parameters()) == 665_921


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_bicubic_upsampled_input_plus_residual(scale: int) -> None:
    net = build_network(SMALL | {"upscale": scale}).eval()
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        residual = net.body(upsample_bicubic(x, scale))
        torch.testing.assert_close(net(x), upsample_bicubic(x, scale) + residual)
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
        torch.testing.assert_close(net(x), torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic"))


def test_same_weights_at_every_scale_and_in_pre_upsampled_form() -> None:
    net1 = build_network(SMALL | {"upscale": 1}).eval()
    x = torch.rand(2, 3, 11, 10)
    for scale in (2, 3, 4):
        net = build_network(SMALL | {"upscale": scale}).eval()
        net.load_state_dict(net1.state_dict(), strict=True)
        with torch.no_grad():
            out = net(x)
            assert out.shape == (2, 3, 11 * scale, 10 * scale)
            torch.testing.assert_close(net1(upsample_bicubic(x, scale)), out, rtol=0, atol=0)
            torch.testing.assert_close(net1(x, scale=scale), out, rtol=0, atol=0)


def train_opt(folder: Path, **extra) -> dict:
    return {"name": "t", "phase": "train", "dataroot_gt": str(folder), "io_backend": {"type": "disk"},
            "scales": [2, 3, 4], "gt_size": 24, "use_hflip": True, "use_rot": True} | extra


def test_one_scale_per_batch(hr_folder: Path) -> None:
    random.seed(0)
    loader = DataLoader(MultiScaleImageDataset(train_opt(hr_folder)), batch_size=3, shuffle=True)
    seen = set()
    for _ in range(8):
        for batch in loader:
            scale = int(batch["scale"][0])
            assert batch["scale"].tolist() == [scale] * 3
            assert batch["gt"].shape == (3, 3, 24, 24) and batch["lq"].shape == (3, 3, 24 // scale, 24 // scale)
            seen.add(scale)
    assert seen == {2, 3, 4}


def test_upsampled_form_mixes_scales_in_a_batch(hr_folder: Path) -> None:
    dataset = MultiScaleUpsampledImageDataset(train_opt(hr_folder, color="y"))
    random.seed(1)
    items = [dataset[i % 3] for i in range(12)]
    assert {item["scale"] for item in items} == {2, 3, 4}
    batch = torch.utils.data.default_collate(items)
    assert batch["lq"].shape == batch["gt"].shape == (12, 1, 24, 24)


def test_validation_lr_is_matlab_bicubic_of_the_mod_cropped_hr(hr_folder: Path) -> None:
    opt = {"name": "v", "phase": "val", "dataroot_gt": str(hr_folder), "scales": [3]}
    plain, upsampled = MultiScaleImageDataset(opt)[0], MultiScaleUpsampledImageDataset(opt)[0]
    hr = mod_crop(cv2.imread(str(hr_folder / "img0.png")).astype(np.float32) / 255.0, 3)
    lr = np.clip(np.round(imresize(hr, 1 / 3) * 255), 0, 255) / 255
    torch.testing.assert_close(plain["lq"], img2tensor(lr.astype(np.float32), bgr2rgb=True), atol=1e-6, rtol=0)
    assert plain["gt"].shape == (3, 48, 60) and plain["scale"] == 3
    torch.testing.assert_close(upsampled["lq"], upsample_bicubic(plain["lq"][None], 3)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gt_size": 20}, r"gt_size: 20 must be an integer multiple of every scale in \[2, 3, 4\]"),
        ({"scales": [2, 0]}, r"scales: 0 is not a positive integer scale"),
        ({"phase": "val"}, r"scales: validation and testing need exactly one scale, got \[2, 3, 4\]"),
        ({"color": "rgb"}, r"color: expected 'y' or no key, got 'rgb'"),
    ],
)
def test_bad_options_name_the_key(hr_folder: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"datasets\.t\." + message):
        MultiScaleImageDataset(train_opt(hr_folder) | change)


MULTISCALE_YAML = """
name: vdsr_multiscale
model_type: SRModel
scale: 1
num_gpu: 0
manual_seed: 5
datasets:
  train:
    name: noise
    type: MultiScaleUpsampledImageDataset
    dataroot_gt: {hr}
    io_backend: {{type: disk}}
    scales: [2, 3, 4]
    gt_size: 24
    color: y
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 3
    dataset_enlarge_ratio: 2
    prefetch_mode: ~
  val:
    name: noise_val_x3
    type: MultiScaleUpsampledImageDataset
    dataroot_gt: {hr}
    io_backend: {{type: disk}}
    scales: [3]
    color: y
network_g: {{type: VDSR, num_in_ch: 1, num_feat: 4, num_layer: 3, upscale: 1}}
path: {{pretrain_network_g: ~, strict_load_g: true, resume_state: ~}}
train:
  ema_decay: 0
  optim_g: {{type: SGD, lr: 0.01, momentum: 0.9, weight_decay: !!float 1e-4}}
  total_iter: 2
  warmup_iter: -1
  grad_clip: 0.4
  pixel_opt: {{type: MSELoss, loss_weight: 1.0, reduction: mean}}
val:
  val_freq: 2
  save_img: false
  metrics:
    psnr: {{type: calculate_psnr, crop_border: 3, test_y_channel: true}}
logger: {{print_freq: 1, save_checkpoint_freq: 2, use_tb_logger: false}}
"""


def test_multiscale_training_runs_on_cpu(hr_folder: Path, tmp_path: Path) -> None:
    pipeline = pytest.importorskip("lkdn.training.pipeline")
    options = tmp_path / "vdsr.yml"
    options.write_text(MULTISCALE_YAML.format(hr=hr_folder))
    assert pipeline.train_pipeline(argv=["-opt", str(options), "--root_path", str(tmp_path)]) == 0
    state = torch.load(tmp_path / "experiments" / "vdsr_multiscale" / "models" / "net_g_2.pth", weights_only=True)
    net = build_network({"type": "VDSR", "num_in_ch": 1, "num_feat": 4, "num_layer": 3, "upscale": 4})
    net.load_state_dict(state["params"], strict=True)
    assert net(torch.rand(1, 1, 7, 9)).shape == (1, 1, 28, 36)
