"""Helpers shared by the training tests (tiny datasets, inline YAML, running the pipeline) and
tests of the exact-resume sampling machinery."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml

import lkdn  # noqa: F401 (registers)
from lkdn.checkpoint import load_file
from lkdn.training.data import PositionSeededDataset, ResumableSampler, sample_seed
from lkdn.training.pipeline import train_pipeline

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE_IMAGES = ("astronaut", "coffee", "rocket", "immunohistochemistry", "chelsea", "hubble_deep_field")


def natural_image(name: str) -> np.ndarray:
    """A uint8 BGR image from ``skimage.data``."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3][..., ::-1])


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style antialiased bicubic downscale of a uint8 image (the benchmark protocol)."""
    from basicsr.utils.matlab_functions import imresize

    lr = imresize(hr.astype(np.float64) / 255.0, 1 / scale)
    return (np.clip(lr, 0, 1) * 255.0).round().astype(np.uint8)


def make_pairs(folder: Path, *, scale: int, size: int, names: tuple[str, ...] = SKIMAGE_IMAGES[:4],
               offset: int = 0) -> tuple[Path, Path]:
    """Write HR crops (``size`` square, from ``offset``) and their LR images; returns (hr_dir, lr_dir)."""
    hr_dir, lr_dir = folder / "HR", folder / f"LRx{scale}"
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        hr = natural_image(name)[offset:offset + size, offset:offset + size]
        cv2.imwrite(str(hr_dir / f"{name}.png"), hr)
        cv2.imwrite(str(lr_dir / f"{name}.png"), bicubic_down(hr, scale))
    return hr_dir, lr_dir


TINY_YAML = """
name: {name}
model_type: SRModel
scale: 2
num_gpu: 0
manual_seed: 7
datasets:
  train:
    name: tiny_train
    type: PairedImageDataset
    dataroot_gt: {hr}
    dataroot_lq: {lr}
    io_backend:
      type: disk
    gt_size: 32
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 4
    dataset_enlarge_ratio: 4
    prefetch_mode: ~
  val:
    name: tiny_val
    type: PairedImageDataset
    dataroot_gt: {hr}
    dataroot_lq: {lr}
    io_backend:
      type: disk
network_g:
  type: LKDN
  num_feat: 8
  num_atten: 8
  num_block: 1
  upscale: 2
  num_in: 1
path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
train:
  ema_decay: 0.999
  optim_g:
    type: Adan
    lr: !!float 5e-3
    betas: [0.98, 0.92, 0.99]
    eps: !!float 1e-8
    weight_decay: 0
    foreach: true
  scheduler:
    type: MultiStepLR
    milestones: [1000]
    gamma: 0.5
  total_iter: 8
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
val:
  val_freq: 4
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 2
      test_y_channel: true
    ssim:
      type: calculate_ssim
      crop_border: 2
      test_y_channel: true
logger:
  print_freq: 1
  save_checkpoint_freq: 4
  use_tb_logger: true
"""


@pytest.fixture(scope="session", name="tiny_data")
def tiny_data_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four 64x64 HR crops of natural images and their x2 bicubic LR images."""
    return make_pairs(tmp_path_factory.mktemp("tiny_data"), scale=2, size=64)


pytestmark = pytest.mark.usefixtures("one_thread")


def apply_changes(opt: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Set ``section__key=value`` entries (``__`` separates nested keys) in ``opt``, in place; returns it."""
    for key, value in changes.items():
        node = opt
        parts = key.split("__")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return opt


def write_options(folder: Path, *, hr: Path, lr: Path, name: str = "tiny", **changes: Any) -> Path:
    """Write the tiny YAML with ``changes`` (``section__key=value`` for nested keys) and return its path."""
    opt = yaml.safe_load(TINY_YAML.format(name=name, hr=hr, lr=lr))
    apply_changes(opt, changes)
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
    return path


def run_training(options: Path, root: Path, *extra: str) -> int:
    """Run the training pipeline in this process with experiments under ``root``."""
    return train_pipeline(argv=["-opt", str(options), "--root_path", str(root), *extra])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def checkpoint(root: Path, name: str, label: int | str) -> dict[str, dict[str, torch.Tensor]]:
    return load_file(root / "experiments" / name / "models" / f"net_g_{label}.pth")


# ---------------------------------------------------------------------------------------- tests
class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[int, float, float]:
        return index, random.random(), float(np.random.rand())


def test_sampler_start_skips_exactly_the_consumed_samples() -> None:
    sampler = ResumableSampler(_Items(), num_replicas=1, rank=0, ratio=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 15 and sorted({i for i, _, _ in full}) == [0, 1, 2, 3, 4]
    assert [p for _, _, p in full] == list(range(15))
    sampler.set_start(6)
    assert list(sampler) == full[6:]
    sampler.set_epoch(3)
    sampler.set_start(0)
    assert [i for i, _, _ in sampler] != [i for i, _, _ in full]  # a new order each epoch


def test_sampler_replicas_partition_the_global_order() -> None:
    single = ResumableSampler(_Items(), num_replicas=1, rank=0, ratio=4)
    ranks = [ResumableSampler(_Items(), num_replicas=2, rank=r, ratio=4) for r in (0, 1)]
    for sampler in (single, *ranks):
        sampler.set_epoch(1)
    merged = sorted([*ranks[0], *ranks[1]], key=lambda item: item[2])
    assert merged == list(single)


def test_samples_are_seeded_by_position_not_by_history() -> None:
    dataset = PositionSeededDataset(_Items(), seed=3)
    first = dataset[(1, 0, 5)]
    random.random(), np.random.rand()  # unrelated draws in between change nothing
    assert dataset[(4, 2, 9)] != dataset[(1, 0, 5)]
    assert dataset[(1, 0, 5)] == first
    assert sample_seed(3, 0, 5) != sample_seed(3, 0, 6) != sample_seed(4, 0, 5)


class _Batched(_Items):
    def __getitems__(self, indices: list[int]) -> list[tuple[int, float, float]]:
        shared = random.random()  # one draw for the whole batch (like a per-batch scale)
        return [(i, shared, float(np.random.rand())) for i in indices]


def test_batch_fetching_datasets_get_whole_batches_seeded_by_the_first_position() -> None:
    keys = [(1, 0, 4), (3, 0, 5), (0, 0, 6)]
    batched = PositionSeededDataset(_Batched(), seed=3).__getitems__(keys)
    assert [b[0] for b in batched] == [1, 3, 0] and len({b[1] for b in batched}) == 1
    assert PositionSeededDataset(_Batched(), seed=3).__getitems__(keys) == batched
    plain = PositionSeededDataset(_Items(), seed=3)
    assert plain.__getitems__(keys) == [plain[k] for k in keys]
