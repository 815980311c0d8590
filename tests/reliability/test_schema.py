"""Option validation: unknown keys, wrong types and impossible values name the key and line."""

from __future__ import annotations

import pytest
import yaml
from basicsr.utils.registry import ARCH_REGISTRY

import lkdn  # noqa: F401
from lkdn.options import SchemaError, key_lines, validate_options

GOOD = """\
name: ok
scale: 4
num_gpu: auto
network_g:
  type: LKDN
  upscale: 4
datasets:
  train:
    name: demo
    type: PairedImageDataset
    gt_size: 192
    batch_size_per_gpu: 4
train:
  ema_decay: 0.999
  optim_g: {type: Adan, lr: 5.0e-3}
val:
  val_freq: 100
  metrics:
    psnr: {type: calculate_psnr, crop_border: 4, test_y_channel: true}
"""


def check(text: str) -> str:
    with pytest.raises(SchemaError) as err:
        validate_options(yaml.safe_load(text), source="x.yml", text=text, lookups={"network": ARCH_REGISTRY.get})
    return str(err.value)


def test_valid_file_passes() -> None:
    validate_options(yaml.safe_load(GOOD), source="x.yml", text=GOOD, lookups={"network": ARCH_REGISTRY.get})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("network_g:", "netwrok_g:", "x.yml:4: netwrok_g: unknown key; did you mean 'network_g'?"),
        ("  upscale: 4", "  upscale: 4\n  num_feats: 8", "x.yml:7: network_g.num_feats: unknown key; did you mean 'num_feat'?"),
        ("    batch_size_per_gpu: 4", "    batchsize_per_gpu: 4",
         "x.yml:12: datasets.train.batchsize_per_gpu: unknown key; did you mean 'batch_size_per_gpu'?"),
        ("lr: 5.0e-3", "lr: -1.0e-3", "x.yml:15: train.optim_g.lr: must be positive, got -0.001"),
        ("gt_size: 192", "gt_size: 190", "x.yml:11: datasets.train.gt_size: 190 is not divisible by scale 4"),
        ("  upscale: 4", "  upscale: 2", "x.yml:6: network_g.upscale: 2 differs from the top-level scale 4"),
        ("val_freq: 100", "val_freq: often", "x.yml:17: val.val_freq: expected int or float"),
        ("ema_decay: 0.999", "ema_decay: 1.5", "x.yml:14: train.ema_decay: must be below 1, got 1.5"),
        ("    batch_size_per_gpu: 4", "    batch_size_per_gpu: true", "datasets.train.batch_size_per_gpu: expected int"),
        ("type: LKDN", "type: LKDNN", "network_g.type"),
    ],
)
def test_invalid_option_is_named_with_its_line(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert expected in check(GOOD.replace(old, new, 1))


def test_every_error_is_reported_at_once() -> None:
    text = GOOD.replace("netwo", "netwro").replace("gt_size: 192", "gt_size: 190")
    message = check(text)
    assert "netwro" in message and "gt_size" in message


def test_key_lines_maps_nested_paths() -> None:
    lines = key_lines(GOOD)
    assert lines[("network_g", "type")] == 5
    assert lines[("val", "metrics", "psnr")] == 19


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    batch_size_per_gpu: 4", "    batch_size_per_gpu: 4\n    mean: [0.5, x]",
         "x.yml:13: datasets.train.mean[1]: expected int or float (per-channel mean for normalization), got 'x'"),
        ("  ema_decay: 0.999", "  ema_decay: 0.999\n  amp: fp8", "x.yml:15: train.amp: expected bf16, fp16, fp32, none, "
         "false or ~, got 'fp8'"),
        ("name: ok", "name: ok\n3: three", "x.yml:2: 3: unknown key"),
        ("val_freq: 100", "val_freq: 100\n  tile: 8", "x.yml:18: val.tile: expected a mapping, got int"),
        ("    gt_size: 192", "    gt_size: 192\n    io_backend: {type: disk, db_path: x}",
         "datasets.train.io_backend.db_path: unknown key; did you mean 'db_paths'?"),
    ],
)
def test_declared_types_and_keys_are_named(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert expected in check(GOOD.replace(old, new, 1))


def test_a_wrong_type_does_not_hide_the_checks_across_keys_of_its_section() -> None:
    text = GOOD.replace("    batch_size_per_gpu: 4", "    batch_size_per_gpu: four\n    holdout: 2")
    message = check(text.replace("gt_size: 192", "gt_size: 190"))
    assert "datasets.train.batch_size_per_gpu: expected int" in message
    assert "datasets.train.holdout: only MultiScaleImageDataset" in message
    assert "datasets.train.gt_size: 190 is not divisible by scale 4" in message
    lines = [int(line.split(":")[1]) for line in message.splitlines()[1:]]
    assert lines == sorted(lines)  # in the order of the file
