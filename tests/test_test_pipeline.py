"""lkdn/test.py reproduces the published Set5 numbers from the shipped option files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY
from conftest import OFFICIAL_LKDN, ROOT, shared_file

from lkdn import build_network
from lkdn import test as test_entry
from lkdn.images import tile_context
from lkdn.options import SchemaError, parse_options, validate_options

OPTIONS = sorted((ROOT / "options" / "test").rglob("*.yml"))
LKDN_OPTIONS = sorted((ROOT / "options" / "test" / "LKDN").glob("*.yml"))
RESULTS: dict[str, dict[str, Any]] = {}  # checkpoint name -> Set5 entry of metrics.json, reused below


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """main() configures the loggers: every test here puts them back (conftest's ``restore_logging``)."""


def set5_yaml(tmp_path: Path, checkpoint: str, *, keep_optional: bool = False) -> Path:
    """The shipped test YAML of ``checkpoint`` with its Set5 entry only (and Set14, optional, if asked)."""
    opt = yaml.safe_load((ROOT / "options" / "test" / "LKDN" / f"test_{checkpoint}.yml").read_text())
    opt["datasets"] = {k: v for k, v in opt["datasets"].items() if k == "test_1" or (keep_optional and k == "test_2")}
    path = tmp_path / f"{checkpoint}.yml"
    path.write_text(yaml.safe_dump(opt))
    return path


def set5_overrides(checkpoint: str) -> list[str]:
    scale = OFFICIAL_LKDN[checkpoint][1]
    set5 = shared_file("benchmarks", "Set5", f"x{scale}")
    return [
        "num_gpu=0", "val:save_img=false",
        f"datasets:test_1:dataroot_gt={set5 / 'HR'}", f"datasets:test_1:dataroot_lq={set5 / 'LR'}",
        f"path:pretrain_network_g={shared_file('pretrained', 'LKDN', f'{checkpoint}.pth')}",
    ]


def run_set5(tmp_path: Path, checkpoint: str, *extra: str) -> dict[str, Any]:
    overrides = set5_overrides(checkpoint)  # first: skips cleanly when the reference files are absent
    tmp_path.mkdir(parents=True, exist_ok=True)
    argv = ["-opt", str(set5_yaml(tmp_path, checkpoint)), "--root", str(tmp_path), "--force_yml"]
    return test_entry.score([*argv, *overrides, *extra])


@pytest.mark.parametrize("path", OPTIONS, ids=[str(p.relative_to(ROOT / "options" / "test")) for p in OPTIONS])
def test_every_test_yaml_parses_validates_and_builds(path: Path) -> None:
    opt = parse_options(path, is_train=False, overrides=["num_gpu=0"])
    validate_options(opt, source=str(path), text=path.read_text(), lookups={"network": ARCH_REGISTRY.get})
    net = build_network(opt["network_g"])
    assert opt["network_g"].get("upscale", opt["scale"]) == opt["scale"]
    assert sum(p.numel() for p in net.parameters()) > 0
    assert opt["datasets"] and all(d["type"] in DATASET_REGISTRY for d in opt["datasets"].values())


@pytest.mark.parametrize("path", LKDN_OPTIONS, ids=[p.name for p in LKDN_OPTIONS])
def test_lkdn_test_yaml_layout(path: Path) -> None:
    opt = parse_options(path, is_train=False, overrides=["num_gpu=0"])
    assert [d["name"] for d in opt["datasets"].values()] == ["Set5", "Set14", "B100", "Urban100", "Manga109"]
    assert [bool(d.get("optional")) for d in opt["datasets"].values()] == [False, True, True, True, True]
    for dataset in opt["datasets"].values():
        assert dataset["dataroot_gt"] == f"datasets/{dataset['name']}/GTmod{opt['scale']}"
        assert dataset["dataroot_lq"] == f"datasets/{dataset['name']}/LRbicx{opt['scale']}"
    for metric in opt["val"]["metrics"].values():
        assert metric["crop_border"] == opt["scale"] and metric["test_y_channel"] is True
    checkpoint = path.stem.removeprefix("test_")
    assert opt["path"]["pretrain_network_g"] == f"experiments/pretrained_models/LKDN/{checkpoint}.pth"
    network, scale, _, _ = OFFICIAL_LKDN[checkpoint]
    assert scale == opt["scale"]
    assert {k: opt["network_g"][k] for k in network} == network


def test_shipped_lkdn_options_cover_the_official_checkpoints() -> None:
    assert sorted(p.stem.removeprefix("test_") for p in LKDN_OPTIONS) == sorted(OFFICIAL_LKDN)


@pytest.mark.parametrize("checkpoint", list(OFFICIAL_LKDN))
def test_set5_reproduces_the_published_numbers(tmp_path: Path, checkpoint: str) -> None:
    _, _, psnr, ssim = OFFICIAL_LKDN[checkpoint]
    results = run_set5(tmp_path, checkpoint)
    written = json.loads((tmp_path / "results" / f"test_{checkpoint}" / "metrics.json").read_text())
    assert written == results
    set5 = written["Set5"]
    assert set5["num_images"] == 5
    assert sorted(set5["per_image"]) == ["baby", "bird", "butterfly", "head", "woman"]
    assert abs(set5["psnr"] - psnr) <= 0.01
    assert abs(set5["ssim"] - ssim) <= 0.0005
    assert set5["psnr"] == pytest.approx(sum(m["psnr"] for m in set5["per_image"].values()) / 5)
    RESULTS[checkpoint] = set5


def test_self_ensemble_improves_lkdn_x4(tmp_path: Path) -> None:
    plain = RESULTS.get("LKDN_x4") or run_set5(tmp_path / "plain", "LKDN_x4")["Set5"]
    ensemble = run_set5(tmp_path, "LKDN_x4", "val:self_ensemble=true")["Set5"]
    assert ensemble["num_images"] == 5
    assert ensemble["psnr"] >= plain["psnr"]
    assert ensemble["psnr"] - plain["psnr"] < 0.3  # an ensemble of the same network, not another one


def test_lkdn_tile_pad_is_its_receptive_radius() -> None:
    assert tile_context(build_network({"type": "LKDN", "upscale": 4})).pad == 99
    assert tile_context(build_network({"type": "LKDN_S"})).pad == 63


def test_missing_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_set" / "GTmod4"
    argv = ["-opt", str(set5_yaml(tmp_path, "LKDN_x4")), "--root", str(tmp_path), "--force_yml", "num_gpu=0",
            f"datasets:test_1:dataroot_gt={missing}", "path:pretrain_network_g=/nonexistent.pth"]
    with pytest.raises(test_entry.DatasetMissingError) as info:
        test_entry.score(argv)  # fails on the folder, before loading weights
    assert str(missing) in str(info.value)
    assert "datasets.test_1.dataroot_gt" in str(info.value)


def test_invalid_options_are_reported_before_work(tmp_path: Path) -> None:
    argv = ["-opt", str(set5_yaml(tmp_path, "LKDN_x4")), "--root", str(tmp_path), "--force_yml", "num_gpu=0",
            "val:tile={size: 64, padding: 8}"]
    with pytest.raises(SchemaError, match="val.tile.padding"):
        test_entry.score(argv)


def test_script_skips_optional_sets_and_saves_images(tmp_path: Path) -> None:
    """``python lkdn/test.py`` as a user runs it: optional Set14 absent -> warning, Set5 scored (tiled) and saved."""
    checkpoint = "LKDN-S_del_rep_x4"
    overrides = [o for o in set5_overrides(checkpoint) if not o.startswith("val:save_img")]
    overrides += [f"datasets:test_2:dataroot_gt={tmp_path / 'Set14' / 'GTmod4'}", "val:suffix=sr", "val:tile={size: 64}"]
    command = [sys.executable, str(ROOT / "lkdn" / "test.py"), "-opt", str(set5_yaml(tmp_path, checkpoint, keep_optional=True)),
               "--root", str(tmp_path), "--force_yml", *overrides]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results_dir = tmp_path / "results" / f"test_{checkpoint}"
    metrics = json.loads((results_dir / "metrics.json").read_text())
    assert list(metrics) == ["Set5"]
    assert abs(metrics["Set5"]["psnr"] - OFFICIAL_LKDN[checkpoint][2]) <= 0.01
    if checkpoint in RESULTS:  # tiles of 64 LR pixels padded by the receptive radius: the untiled numbers
        for image, scores in RESULTS[checkpoint]["per_image"].items():
            assert metrics["Set5"]["per_image"][image]["psnr"] == pytest.approx(scores["psnr"], abs=1e-3)
    saved = sorted(p.name for p in (results_dir / "visualization" / "Set5").iterdir())
    assert saved == [f"{n}_sr.png" for n in ("baby", "bird", "butterfly", "head", "woman")]
    (log_file,) = results_dir.glob("test_*.log")
    warning = f"skipping optional dataset Set14: datasets.test_2.dataroot_gt: folder not found: {tmp_path / 'Set14' / 'GTmod4'}"
    assert warning in log_file.read_text()
    table = [line.split() for line in done.stdout.splitlines()]
    assert ["Set5", "5", f"{metrics['Set5']['psnr']:.2f}", f"{metrics['Set5']['ssim']:.4f}"] in table
    assert ["Set14", "skipped", "-", "-"] in table
