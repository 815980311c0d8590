"""Training on a folder of HR images only: LR made on the fly (MATLAB bicubic), validation on a
held-out split chosen by name hash (options/train/own_images/train_LKDN-S_x4_own_images.yml)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from basicsr.utils.matlab_functions import imresize
from test_train_common import ROOT, SKIMAGE_IMAGES, natural_image, read_jsonl, run_training

from lkdn.data.multiscale_dataset import MultiScaleImageDataset, split_holdout
from lkdn.options import SchemaError

TEMPLATE = ROOT / "options" / "train" / "own_images" / "train_LKDN-S_x4_own_images.yml"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_split_is_disjoint_complete_and_stable() -> None:
    paths = [f"/data/img_{i:03d}.png" for i in range(40)]
    held = split_holdout(paths, 5, "holdout", "datasets.val")
    train = split_holdout(paths, 5, "train", "datasets.train")
    assert len(held) == 5 and set(held) | set(train) == set(paths) and not set(held) & set(train)
    assert train == [p for p in paths if p not in held]  # folder order kept
    assert split_holdout([p.replace("/data", "/elsewhere") for p in paths], 5, "holdout", "x") == [
        p.replace("/data", "/elsewhere") for p in held]  # by file name, not by location
    more = split_holdout(paths + [f"/data/new_{i}.png" for i in range(4)], 5, "holdout", "x")
    assert len(set(more) & set(held)) >= 3  # adding 10% more images changes few of the held-out ones


@pytest.mark.parametrize(("holdout", "subset", "expected"), [
    (-1, "train", "holdout: expected a number of images"),
    (4, "train", "holdout: 4 of 4 images would leave none to train on"),
    (0, "holdout", "subset: holdout needs holdout: N"),
    (1, "val", "subset: expected train or holdout, got 'val'"),
])
def test_bad_splits_are_named(holdout: int, subset: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        split_holdout(["a.png", "b.png", "c.png", "d.png"], holdout, subset, "datasets.x")


def test_holdout_on_a_paired_dataset_is_refused(tmp_path: Path) -> None:
    text = TEMPLATE.read_text().replace("type: MultiScaleImageDataset\n    dataroot_gt: datasets/my_images\n    io_backend:\n"
                                        "      type: disk\n    scales: [4]\n    holdout: 5        # the same",
                                        "type: PairedImageDataset\n    dataroot_gt: datasets/my_images\n    io_backend:\n"
                                        "      type: disk\n    scales: [4]\n    holdout: 5        # the same")
    (tmp_path / "t.yml").write_text(text)
    with pytest.raises(SchemaError, match="datasets.val.holdout: only MultiScaleImageDataset"):
        run_training(tmp_path / "t.yml", tmp_path)


def image_folder(folder: Path, height: int, width: int) -> Path:
    """``folder`` with every image of ``SKIMAGE_IMAGES``, its top-left ``height`` x ``width``, as PNG."""
    folder.mkdir()
    for name in SKIMAGE_IMAGES:
        cv2.imwrite(str(folder / f"{name}.png"), natural_image(name)[:height, :width])
    return folder


def short_run(folder: Path, *, gt_size: int, iters: int) -> list[str]:
    """Overrides of an own-images template: train and validate on ``folder`` (2 images held out), CPU, a
    tiny LKDN-S, ``iters`` iterations of batch 2 validated at the last, a checkpoint every 2."""
    return [f"datasets:train:dataroot_gt={folder}", f"datasets:val:dataroot_gt={folder}", "num_gpu=0",
            "datasets:train:holdout=2", "datasets:val:holdout=2", f"datasets:train:gt_size={gt_size}",
            "datasets:train:batch_size_per_gpu=2", "datasets:train:dataset_enlarge_ratio=1",
            "network_g:num_feat=8", "network_g:num_atten=8", "network_g:num_block=1", f"train:total_iter={iters}",
            f"val:val_freq={iters}", "logger:print_freq=1", "logger:save_checkpoint_freq=2",
            "logger:use_tb_logger=false"]


def test_the_template_trains_on_a_folder_and_validates_on_held_out_images(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "my_images", 96, 100)
    overrides = short_run(folder, gt_size=48, iters=2)
    assert run_training(TEMPLATE, tmp_path, "--force_yml", *overrides, "datasets:train:num_worker_per_gpu=0") == 0
    run = tmp_path / "experiments" / "LKDN-S_x4_own_images"
    (record,) = read_jsonl(run / "metrics.jsonl")
    assert record["dataset"] == "my_images_holdout" and record["psnr"] > 15
    shown = sorted(p.stem.rsplit("_", 1)[0] for p in (run / "visualization").rglob("*.png"))
    held = sorted(Path(p).stem for p in split_holdout(sorted(str(p) for p in folder.iterdir()), 2, "holdout", "x"))
    assert shown == held


def test_lr_is_matlab_bicubic_of_the_hr_patch(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), natural_image("astronaut")[:64, :64])
    dataset = MultiScaleImageDataset({"name": "v", "phase": "val", "dataroot_gt": str(tmp_path), "scales": [4]})
    sample = dataset[0]
    gt = sample["gt"].numpy().transpose(1, 2, 0)[..., ::-1]
    expected = np.clip(np.round(imresize(np.ascontiguousarray(gt), 1 / 4) * 255), 0, 255) / 255
    np.testing.assert_allclose(sample["lq"].numpy().transpose(1, 2, 0)[..., ::-1], expected, atol=1e-6)


# --- the own-images workflow to its end: fold the run, test the deploy form -----------------------

TEMPLATE_X2 = ROOT / "options" / "train" / "own_images" / "train_LKDN-S_x2_own_images.yml"


@pytest.fixture(scope="module")
def x2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short x2 run of the template on a folder outside datasets/ (root, image folder)."""
    root = tmp_path_factory.mktemp("own_x2")
    folder = image_folder(root / "photos", 64, 72)
    assert run_training(TEMPLATE_X2, root, "--force_yml", *short_run(folder, gt_size=32, iters=4)) == 0
    return root, folder


def reparameterize(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from conftest import load_script

    code = load_script("scripts/reparameterize.py").main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_x2_template_folds_and_tests_with_the_run_s_own_options(x2_run, tmp_path: Path, capsys) -> None:
    from lkdn import test as test_entry

    root, folder = x2_run
    run = root / "experiments" / "LKDN-S_x2_own_images"
    deploy_yml = tmp_path / "deploy.yml"
    code, out, err = reparameterize(["--input", str(run), "--fold-num-in", "--output", str(tmp_path / "deploy.pth"),
                                     "--output-opt", str(deploy_yml)], capsys)
    assert code == 0, err
    assert f"loaded {run / 'models' / 'net_g_latest.pth'} (params_ema" in out
    assert f"options: {run / 'LKDN-S_x2_own_images_options.yml'} (the training run's saved options)" in out
    written = yaml.safe_load(deploy_yml.read_text())
    assert written["datasets"]["test_1"]["dataroot_gt"] == str(folder)  # the run's folder, not datasets/my_images
    results = test_entry.score(["-opt", str(deploy_yml), "--root", str(tmp_path)])
    (record,) = read_jsonl(run / "metrics.jsonl")  # the run's validation of the same EMA weights at iteration 4
    assert results["my_images_holdout"]["num_images"] == 2
    assert results["my_images_holdout"]["psnr"] == pytest.approx(record["psnr"], abs=1e-4)


def test_a_short_run_s_ema_is_said_to_be_nearly_untrained(x2_run, tmp_path: Path, capsys) -> None:
    root, _ = x2_run
    run = root / "experiments" / "LKDN-S_x2_own_images"
    code, out, err = reparameterize(["--input", str(run / "models" / "net_g_2.pth"), "--output",
                                     str(tmp_path / "d.pth")], capsys)
    assert code == 0
    assert ("warning: params_ema has seen 2 update(s) at train.ema_decay 0.999: 100% of it is still the initial "
            "(random) weights") in err
    assert "--param-key params, or train for at least 2302 iterations" in err
    code, out, err = reparameterize(["--input", str(run / "models" / "net_g_2.pth"), "--param-key", "params",
                                     "--output", str(tmp_path / "p.pth")], capsys)
    assert code == 0 and "warning" not in err and "(params): " in out


def test_the_template_given_as_opt_gives_way_to_the_run_s_saved_options(x2_run, tmp_path: Path, capsys) -> None:
    root, folder = x2_run
    run = root / "experiments" / "LKDN-S_x2_own_images"
    argv = ["-opt", str(TEMPLATE_X2), "--input", str(run / "models" / "net_g_4.pth"), "--output", str(tmp_path / "d.pth"),
            "--output-opt", str(tmp_path / "d.yml")]
    code, out, err = reparameterize([*argv, "--force-yml", "datasets:val:name=mine"], capsys)
    assert code == 0, err
    assert f"options: {run / 'LKDN-S_x2_own_images_options.yml'}, the run's saved options ({TEMPLATE_X2} with" in out
    written = yaml.safe_load((tmp_path / "d.yml").read_text())
    assert written["datasets"]["test_1"]["dataroot_gt"] == str(folder) and written["datasets"]["test_1"]["name"] == "mine"
    assert written["network_g"]["num_feat"] == 8


def test_before_training_ends_the_latest_numbered_checkpoint_is_named(x2_run, tmp_path: Path, capsys) -> None:
    root, _ = x2_run
    run = tmp_path / "LKDN-S_x2_own_images"
    (run / "models").mkdir(parents=True)
    source = root / "experiments" / "LKDN-S_x2_own_images"
    for name in ("models/net_g_2.pth", "models/net_g_4.pth", "LKDN-S_x2_own_images_options.yml"):
        (run / name).write_bytes((source / name).read_bytes())  # a run that has not ended: no net_g_latest.pth
    code, _, err = reparameterize(["--input", str(run / "models" / "net_g_latest.pth"), "--output",
                                   str(tmp_path / "d.pth")], capsys)
    assert code == 2
    assert err == (f"error: --input {run / 'models' / 'net_g_latest.pth'} does not exist (net_g_latest is written when "
                   f"training ends); the latest checkpoint is {run / 'models' / 'net_g_4.pth'}: pass it, or the run "
                   f"folder {run} to fold its latest checkpoint\n")
    code, out, err = reparameterize(["--input", str(run), "--output", str(tmp_path / "d.pth")], capsys)
    assert code == 0 and f"loaded {run / 'models' / 'net_g_4.pth'} (params_ema" in out


def test_loader_workers_default_to_what_the_machine_has(monkeypatch) -> None:
    import torch

    from lkdn.training import data

    template = yaml.safe_load(TEMPLATE.read_text())
    assert template["datasets"]["train"]["num_worker_per_gpu"] == "auto"
    assert yaml.safe_load(TEMPLATE_X2.read_text())["datasets"]["train"]["num_worker_per_gpu"] == "auto"
    for cpus, expected in ((2, 2), (1, 1), (16, 4)):
        monkeypatch.setattr(data, "available_cpus", lambda cpus=cpus: cpus)
        opt = data._loader_options({"num_worker_per_gpu": "auto"}, torch.device("cpu"))
        assert opt["num_worker_per_gpu"] == expected
    with pytest.raises(SchemaError, match=r"datasets\.train\.num_worker_per_gpu: expected auto or a count from 0 to 64, got 'many'"):
        from lkdn.options import validate_options

        validate_options({"datasets": {"train": {"name": "t", "num_worker_per_gpu": "many"}}})
