"""RepSR: each block folds into one 3x3 conv (BN on running statistics), the folded network is
a plain VGG net equal to the training form, and a deploy checkpoint loads into ``deploy: true``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from lkdn import build_network
from lkdn.archs.contract import deploy_options
from lkdn.archs.repsr_arch import RepSRBlock
from lkdn.reparam import reparameterize_model

SMALL = {"type": "RepSR", "num_feat": 8, "num_block": 3, "expand": 2}


def randomize(net: nn.Module) -> nn.Module:
    """Random weights, biases, BN affine parameters and BN running statistics (outputs of order 1)."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, module.weight[0].numel() ** -0.5)
                module.bias.uniform_(-0.2, 0.2)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.2, 2)
            elif isinstance(module, nn.PReLU):
                module.weight.uniform_(0, 0.5)
    return net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_fuses_into_one_conv(dtype: torch.dtype) -> None:
    block = randomize(RepSRBlock(6, expand=3)).to(dtype).eval()
    conv = block.fuse()
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.in_channels == conv.out_channels == 6
    x = torch.randn(2, 6, 13, 11, dtype=dtype)
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(conv(x), block(x), atol=atol, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fused_network_equals_training_form_in_eval_mode(scale: int) -> None:
    net = randomize(build_network(SMALL | {"upscale": scale})).eval()
    fused = reparameterize_model(net)
    assert not any(isinstance(m, (nn.BatchNorm2d, RepSRBlock)) for m in fused.modules())
    assert all(isinstance(m, nn.Conv2d) for m in fused.body[::2])
    x = torch.rand(2, 3, 15, 17)
    torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=0)
    net64 = net.double()
    torch.testing.assert_close(reparameterize_model(net64)(x.double()), net64(x.double()), atol=1e-11, rtol=0)


def test_deploy_checkpoint_loads_strictly_into_deploy_form() -> None:
    net = randomize(build_network(SMALL)).eval()
    fused = reparameterize_model(net)
    assert deploy_options(SMALL) == SMALL | {"deploy": True}
    deploy = build_network(deploy_options(SMALL)).eval()
    deploy.load_state_dict(fused.state_dict(), strict=True)
    assert set(deploy.state_dict()) == set(fused.state_dict())
    x = torch.rand(1, 3, 16, 15)
    torch.testing.assert_close(deploy(x), net(x), atol=1e-5, rtol=0)
    n_params = sum(p.numel() for p in deploy.parameters())
    plain = 3 * 8 * 9 + 8 + 8 + 3 * (8 * 8 * 9 + 8 + 8) + 8 * 48 * 9 + 48  # head, PReLUs, body, tail
    assert n_params == plain


def test_global_skip_is_nearest_upsampled_input() -> None:
    net = build_network(SMALL | {"upscale": 3}).eval()
    with torch.no_grad():
        net.tail[0].weight.zero_()
        net.tail[0].bias.zero_()
    x = torch.rand(1, 3, 5, 4)
    torch.testing.assert_close(net(x), x.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3))


def test_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match=r"num_in_ch \(1\) must equal num_out_ch \(3\)"):
        build_network({"type": "RepSR", "num_in_ch": 1, "num_out_ch": 3})


TRAIN_YAML = """
name: repsr_bn_switch
model_type: SRModel
scale: 2
num_gpu: 0
manual_seed: 3
datasets:
  train:
    name: noise
    type: PairedImageDataset
    dataroot_gt: {hr}
    dataroot_lq: {lr}
    io_backend: {{type: disk}}
    gt_size: 16
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 4
    prefetch_mode: ~
  val:
    name: noise_val
    type: PairedImageDataset
    dataroot_gt: {hr}
    dataroot_lq: {lr}
    io_backend: {{type: disk}}
network_g: {{type: RepSR, num_feat: 4, num_block: 2, expand: 2, upscale: 2}}
path: {{pretrain_network_g: ~, strict_load_g: true, resume_state: ~}}
train:
  ema_decay: 0
  optim_g: {{type: Adam, lr: !!float 1e-3, betas: [0.9, 0.99]}}
  total_iter: 4
  warmup_iter: -1
  bn_population_after: 2
  pixel_opt: {{type: L1Loss, loss_weight: 1.0, reduction: mean}}
val:
  val_freq: 100
  save_img: false
  metrics:
    psnr: {{type: calculate_psnr, crop_border: 2, test_y_channel: true}}
logger: {{print_freq: 1, save_checkpoint_freq: 2, use_tb_logger: false}}
"""


def test_training_switches_batchnorm_to_population_statistics(tmp_path: Path) -> None:
    """Four CPU iterations with ``bn_population_after: 2``: the running statistics move during
    iterations 1-2 (batch statistics) and stay fixed during 3-4 while the weights keep learning."""
    pipeline = pytest.importorskip("lkdn.training.pipeline")
    from basicsr.utils.matlab_functions import imresize

    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    hr_dir.mkdir(), lr_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        hr = cv2.GaussianBlur(rng.uniform(0, 1, (32, 32, 3)), (5, 5), 1.0)
        cv2.imwrite(str(hr_dir / f"{i}.png"), np.round(hr * 255).astype(np.uint8))
        cv2.imwrite(str(lr_dir / f"{i}.png"), np.round(np.clip(imresize(hr, 0.5), 0, 1) * 255).astype(np.uint8))
    options = tmp_path / "repsr.yml"
    options.write_text(TRAIN_YAML.format(hr=hr_dir, lr=lr_dir))
    assert yaml.safe_load(options.read_text())["train"]["bn_population_after"] == 2
    assert pipeline.train_pipeline(argv=["-opt", str(options), "--root_path", str(tmp_path)]) == 0
    models = tmp_path / "experiments" / "repsr_bn_switch" / "models"
    at2, at4 = (torch.load(models / f"net_g_{i}.pth", weights_only=True)["params"] for i in (2, 4))
    stats = [k for k in at2 if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 2 * 2  # 2 blocks x 2 paths x (mean, var)
    assert all(not torch.equal(at2[k], torch.zeros_like(at2[k])) for k in stats if k.endswith("running_mean"))
    assert all(torch.equal(at2[k], at4[k]) for k in stats)
    assert not torch.equal(at2["body.0.path1.expand.weight"], at4["body.0.path1.expand.weight"])
