"""Hostile and careless inputs at every entry point: a one-line error naming the file, key or value
and what to do, nothing renamed, written outside its folder or lost, no code run.

Each test is one finding of a hostile-input review; the entry points run in this process (their
``main``), so an unexpected exception fails the test as a traceback would fail the user.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from reliability_common import (
    ROOT,
    TINY_NET,
    TRAIN_SCRIPT,
    cli_env,
    experiment,
    logged_iters,
    make_images,
    one_line,
    options,
    script,
    state_iters,
    test_set_options,
    tiny_weights,
    train,
    wait_until,
    write_yaml,
)

from lkdn import Upscaler, build_network
from lkdn import test as test_entry
from lkdn.checkpoint import CheckpointError, extract_state_dict, save_file
from lkdn.loading import network_from_file, save_network_file
from lkdn.options import OptionsError, SchemaError, load_options
from lkdn.training.pipeline import DivergenceError
from lkdn.training.state import LaunchError, RunInUseError, RunLock

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("hostile") / "data")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("w"))


options_file = functools.partial(test_set_options, name="hostile")


# ------------------------------------------------------------------ 1. option values used as paths


@pytest.mark.parametrize("name", ["{victim}", ".", "..", "sub/run", "../../OUTSIDE", " lead", "a\\b"])
def test_a_run_name_is_one_safe_path_component(tmp_path: Path, data, name: str) -> None:
    victim = tmp_path / "photos"
    (victim / "keep.jpg").parent.mkdir()
    (victim / "keep.jpg").write_text("precious")
    (tmp_path / "experiments").mkdir()
    name = name.replace("{victim}", str(victim))
    with pytest.raises(SchemaError, match=r"\bname: .*single folder name"):
        yml = tmp_path / "run.yml"
        yml.write_text(yaml.safe_dump(options(*data, name="run") | {"name": name}))
        train(yml, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments", "photos", "run.yml"]
    assert (victim / "keep.jpg").read_text() == "precious" and not any((tmp_path / "experiments").iterdir())


@pytest.mark.parametrize("name", ["../../../../OUTSIDE", "/tmp/OUTSIDE", ".."])
def test_a_test_set_or_run_name_cannot_write_outside_results(tmp_path: Path, data, weights, name: str) -> None:
    opt = yaml.safe_load(options_file(tmp_path, data, weights).read_text())
    opt["datasets"]["test_1"]["name"] = name
    with pytest.raises(SchemaError, match=r"datasets\.test_1\.name: .*single folder name"):
        test_entry.score(["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path / "root")])
    opt["datasets"]["test_1"]["name"] = "set"
    opt["name"] = name
    yml = tmp_path / "named.yml"
    yml.write_text(yaml.safe_dump(opt))
    with pytest.raises(SchemaError, match=r"\bname: .*single folder name"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path / "r")])
    assert not (tmp_path / "root").exists() and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 2. SIGTERM to the whole process group


def test_sigterm_to_the_process_group_with_loader_workers_saves_the_state(tmp_path: Path, data) -> None:
    opt_file = write_yaml(tmp_path, options(*data, name="group", train__total_iter=400,
                                            datasets__train__num_worker_per_gpu=2,
                                            logger__save_checkpoint_freq=1000))
    process = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "-opt", str(opt_file), "--root_path",
                                str(tmp_path)], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: max(logged_iters(tmp_path, "group"), default=0) >= 3, timeout=240, what="iteration 3",
                   alive=lambda: process.poll() is None)
        os.killpg(process.pid, signal.SIGTERM)  # what timeout, Slurm and Ctrl-C in a terminal do
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "DataLoader worker" not in stderr
    stopped = max(logged_iters(tmp_path, "group"))
    assert state_iters(tmp_path, "group") == [stopped]
    assert f"Stopped by signal {int(signal.SIGTERM)} at iteration {stopped}; resume with --auto-resume" in stderr


# ------------------------------------------------------------------ 3. silent nonsense


@pytest.mark.parametrize(("change", "expected"), [
    ({"train__ema_decay": math.nan}, "train.ema_decay: must be a finite number, got nan"),
    ({"train__pixel_opt__loss_weight": math.nan}, "train.pixel_opt.loss_weight: must be a finite number, got nan"),
    ({"train__optim_g__lr": math.inf}, "train.optim_g.lr: must be a finite number, got inf"),
    ({"train__scheduler__milestones": "abc"}, "train.scheduler.milestones: expected a list of whole numbers of iterations, got 'abc'"),
    ({"train__scheduler__milestones": [5, "x"]}, "train.scheduler.milestones"),
    ({"train__scheduler": {"type": "CosineAnnealingRestartLR", "periods": [10], "restart_weights": [1]}},
     "fewer than train.total_iter 12: CosineAnnealingRestartLR has no learning rate after its last period"),
    ({"datasets__train__gt_size": 0}, "datasets.train.gt_size: must be positive, got 0"),
    ({"datasets__train__gt_size": -4}, "datasets.train.gt_size: must be positive, got -4"),
])
def test_nonsense_options_are_refused_before_any_work(tmp_path: Path, data, change: dict, expected: str) -> None:
    with pytest.raises(SchemaError, match=None) as err:
        train(write_yaml(tmp_path, options(*data, name="nonsense", **change)), tmp_path)
    assert expected in str(err.value)
    assert not (tmp_path / "experiments").exists()


def test_a_scheduler_of_none_is_a_constant_learning_rate(tmp_path: Path, data) -> None:
    assert train(write_yaml(tmp_path, options(*data, name="constant", train__scheduler=None, train__total_iter=3,
                                              logger__save_checkpoint_freq=3)), tmp_path) == 0
    records = [json.loads(line) for line in (experiment(tmp_path, "constant") / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [2e-3] * 3


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_weights_with_non_finite_values_are_refused_naming_the_tensors(tmp_path: Path, data, weights, bad) -> None:
    params = torch.load(weights, weights_only=True)["params"]
    key = sorted(params)[3]
    params[key] = params[key].clone().fill_(bad)
    poisoned = save_file({"params": params}, tmp_path / "poisoned.pth")
    expected = rf"poisoned\.pth: refused: 1 tensor\(s\) hold NaN or infinity \({key}\)"
    with pytest.raises(CheckpointError, match=expected):
        test_entry.score(["-opt", str(options_file(tmp_path, data, poisoned)), "--root", str(tmp_path)])
    with pytest.raises(CheckpointError, match=expected):
        Upscaler.from_config(options_file(tmp_path, data, poisoned), device="cpu")


def test_convert_refuses_options_whose_scale_lies(tmp_path: Path, weights, capsys) -> None:
    opt = write_yaml(tmp_path, {"name": "lie", "scale": 4, "network_g": {**TINY_NET, "upscale": 4}})
    code = script("convert_checkpoint").main(["--input", str(weights), "--output", str(tmp_path / "x.safetensors"),
                                              "-opt", str(opt)])
    err = capsys.readouterr().err  # the error line and the keys that do not fit
    assert "Traceback" not in err and err.startswith("error: "), err
    assert code != 0 and "scale" in err and not (tmp_path / "x.safetensors").exists()


def test_strip_in_place_needs_to_be_asked_for(tmp_path: Path, weights, capsys) -> None:
    copy = tmp_path / "w.pth"
    copy.write_bytes(weights.read_bytes())
    strip = script("strip_checkpoint")
    assert strip.main(["--input", str(copy), "--output", str(copy)]) != 0
    assert "add --in-place" in one_line(capsys.readouterr().err)
    assert copy.read_bytes() == weights.read_bytes()
    assert strip.main(["--input", str(copy), "--output", str(copy), "--in-place"]) == 0
    assert set(torch.load(copy, weights_only=True)) == {"params"}


# ------------------------------------------------------------------ 5. tracebacks that must be one line


def test_device_arguments_are_checked(tmp_path: Path, data, weights, capsys) -> None:
    yml = options_file(tmp_path, data, weights)
    for device, expected in (("bogus", "device 'bogus' is not a device: use cpu, cuda or cuda:N"),
                             ("cuda", "CUDA is not available here" if not torch.cuda.is_available() else None),
                             ("mps", "only cpu and cuda are supported")):
        if expected is None:
            continue
        with pytest.raises(ValueError, match=expected):
            test_entry.score(["-opt", str(yml), "--root", str(tmp_path), "--device", device])
        images = tmp_path / "in"
        images.mkdir(exist_ok=True)
        (images / "a.png").write_bytes((data[1] / "a.png").read_bytes())
        assert script("inference").main(["-opt", str(yml), "--input", str(images), "--output", str(tmp_path / "o"),
                                         "--device", device]) == 2
        assert expected in one_line(capsys.readouterr().err)


def test_launcher_without_its_environment(tmp_path: Path, data, monkeypatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(LaunchError, match="--launcher pytorch: environment variable .* is not set "
                                          r"\(start the script with torchrun\)"):
        train(write_yaml(tmp_path, options(*data, name="launch")), tmp_path, "--launcher", "pytorch")


def test_root_path_that_is_a_file(tmp_path: Path, data) -> None:
    (tmp_path / "root").write_text("a file")
    with pytest.raises(ValueError, match=r"--root-path .*root is a file: give the folder"):
        train(write_yaml(tmp_path, options(*data, name="rootfile")), tmp_path / "root")


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make creating anything under ``folder`` fail with EACCES (a read-only folder, also for root)."""
    folder = folder.resolve()
    real_mkdir, real_open = os.mkdir, os.open

    def inside(path: Any) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(folder)
        except TypeError:
            return False

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        real_mkdir(path, *args, **kwargs)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def test_read_only_experiments_results_and_output_folders(tmp_path: Path, data, weights, monkeypatch, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    with pytest.raises(ValueError, match=r"cannot write the experiment folder .*locked/experiments/ro: Permission "
                                         r"denied; make .*experiments writable or give another --root-path"):
        train(write_yaml(tmp_path, options(*data, name="ro")), locked)
    with pytest.raises(OSError, match=r"cannot create the results folder .*locked.*Permission denied.*--root"):
        test_entry.score(["-opt", str(options_file(tmp_path, data, weights)), "--root", str(locked)])
    images = tmp_path / "in"
    images.mkdir()
    (images / "a.png").write_bytes((data[1] / "a.png").read_bytes())
    assert script("inference").main(["-opt", str(options_file(tmp_path, data, weights)), "--input", str(images),
                                     "--output", str(locked / "out")]) == 2
    assert "cannot create the output folder" in one_line(capsys.readouterr().err)


def test_export_sizes_and_outputs_are_checked(tmp_path: Path, data, weights, capsys) -> None:
    pytest.importorskip("onnxruntime")
    export = script("export_onnx")
    yml = options_file(tmp_path, data, weights)
    assert export.main(["-opt", str(yml), "--output", str(tmp_path), "--static"]) != 0
    assert "is a folder; give the .onnx file to write" in one_line(capsys.readouterr().err)
    assert export.main(["-opt", str(yml), "--output", str(tmp_path / "x.onnx"), "--size", "-4", "16"]) != 0
    assert "--size must be positive, got -4 16" in one_line(capsys.readouterr().err)


def test_reparameterize_output_opt_under_a_file(tmp_path: Path, data, weights, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    code = script("reparameterize").main(["-opt", str(options_file(tmp_path, data, weights)), "--input", str(weights),
                                          "--output", str(tmp_path / "d.pth"),
                                          "--output-opt", str(tmp_path / "afile" / "d.yml")])
    err = one_line(capsys.readouterr().err)
    assert code != 0 and "afile" in err and "--output-opt" in err
    assert not (tmp_path / "d.pth").exists()  # checked before anything is written


def test_deeply_nested_metadata_is_refused(tmp_path: Path, weights) -> None:
    from safetensors.torch import save_file as save_safetensors

    deep = "[" * 100_000 + "]" * 100_000
    tensors = {k: v.contiguous() for k, v in torch.load(weights, weights_only=True)["params"].items()}
    save_safetensors(tensors, str(tmp_path / "deep.safetensors"),
                     metadata={"lkdn_format": "1", "network_g": deep, "scale": "2"})
    with pytest.raises(CheckpointError, match=r"deep\.safetensors: .*network_g"):
        network_from_file(tmp_path / "deep.safetensors")


def test_resume_with_another_optimizer_type(tmp_path: Path, data) -> None:
    opt = options(*data, name="opt", train__total_iter=4, logger__save_checkpoint_freq=4)
    assert train(write_yaml(tmp_path, opt), tmp_path) == 0
    opt["train"]["total_iter"] = 8
    opt["train"]["optim_g"] = {"type": "AdamW", "lr": 2e-3}
    with pytest.raises(ValueError, match="saved with optimizer Adam but train.optim_g.type is AdamW: .*resume with "
                                         "the old type"):
        train(write_yaml(tmp_path, opt), tmp_path, "--auto_resume")


def test_a_changed_schedule_applies_on_resume(tmp_path: Path, data) -> None:
    opt = options(*data, name="sched", train__total_iter=4, logger__save_checkpoint_freq=4,
                  train__scheduler={"type": "MultiStepLR", "milestones": [100], "gamma": 0.5})
    assert train(write_yaml(tmp_path, opt), tmp_path) == 0
    opt["train"]["total_iter"] = 6
    opt["train"]["scheduler"] = {"type": "MultiStepLR", "milestones": [2], "gamma": 0.1}
    assert train(write_yaml(tmp_path, opt), tmp_path, "--auto_resume") == 0
    records = [json.loads(line) for line in (experiment(tmp_path, "sched") / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records][-2:] == [5, 6]
    assert [r["lr"] for r in records][-2:] == pytest.approx([2e-4, 2e-4])  # the new schedule at iterations 5, 6


@pytest.mark.parametrize(("state", "expected"), [
    ({1: torch.zeros(1)}, r"x\.pth: state dict keys must be parameter names \(strings\), got 1"),
    ({"w": torch.empty(3, device="meta")}, "meta"),
])
def test_state_dicts_with_int_keys_or_meta_tensors_are_refused(state: dict, expected: str) -> None:
    with pytest.raises(CheckpointError, match=expected):
        extract_state_dict({"params": state}, source="x.pth")


# ------------------------------------------------------------------ 7. hostile self-describing files


@pytest.mark.parametrize("network_g", [
    {"type": "SpyNet", "load_path": "evil.pth"},
    {"type": "VGGFeatureExtractor", "layer_name_list": ["relu1_1"]},
    {**TINY_NET, "num_feat": 30000},
])
def test_hostile_metadata_builds_nothing(tmp_path: Path, weights, network_g: dict, monkeypatch) -> None:
    from safetensors.torch import save_file as save_safetensors

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    tensors = {k: v.contiguous() for k, v in torch.load(weights, weights_only=True)["params"].items()}
    path = tmp_path / "hostile.safetensors"
    save_safetensors(tensors, str(path), metadata={"lkdn_format": "1", "network_g": json.dumps(network_g), "scale": "2"})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"hostile\.safetensors"):
        Upscaler.from_checkpoint(path, device="cpu")
    assert time.perf_counter() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # kB: nothing big allocated


@pytest.mark.parametrize("scale", ["0", "-3", "4", "x"])
def test_a_self_describing_scale_must_be_the_network_scale(tmp_path: Path, scale: str) -> None:
    net = build_network(TINY_NET)
    path = save_network_file(net.state_dict(), tmp_path / "w.safetensors", TINY_NET)
    from safetensors import safe_open
    from safetensors.torch import save_file as save_safetensors

    with safe_open(str(path), "pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    save_safetensors(tensors, str(path), metadata={**metadata, "scale": scale})
    with pytest.raises(CheckpointError, match="scale"):
        network_from_file(path)


def test_upscaler_from_config_checks_the_scale(tmp_path: Path, weights) -> None:
    yml = write_yaml(tmp_path, {"name": "cfg", "scale": 2, "network_g": {**TINY_NET, "upscale": 4},
                                "path": {"pretrain_network_g": str(weights)}})
    with pytest.raises(SchemaError, match="network_g.upscale: 4 differs from the top-level scale 2"):
        Upscaler.from_config(yml, device="cpu")


# ------------------------------------------------------------------ 8. one process per run folder


def test_a_second_run_of_the_same_name_is_refused_while_the_first_lives(tmp_path: Path, data) -> None:
    opt_file = write_yaml(tmp_path, options(*data, name="twice", train__total_iter=10_000,
                                            logger__save_checkpoint_freq=2))
    first = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), "-opt", str(opt_file), "--root_path", str(tmp_path)],
                             cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: max(state_iters(tmp_path, "twice"), default=0) >= 2, timeout=240, what="a first state",
                   alive=lambda: first.poll() is None)
        for extra in ((), ("--auto_resume",)):
            with pytest.raises(RunInUseError, match=rf"experiments/twice is in use by training process {first.pid}"):
                train(opt_file, tmp_path, *extra)
        assert [p.name for p in (tmp_path / "experiments").iterdir() if "archived" in p.name] == []
        first.kill()
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    lock = tmp_path / "experiments" / ".twice.lock"
    assert lock.is_file()  # left by the SIGKILL: stale, and taken over
    opt = yaml.safe_load(opt_file.read_text())
    opt["train"]["total_iter"] = max(state_iters(tmp_path, "twice")) + 1
    assert train(write_yaml(tmp_path, opt), tmp_path, "--auto_resume") == 0
    assert not lock.exists()


def test_a_lock_of_another_host_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / ".run.lock").write_text(f"1 not-{socket.gethostname()} 2026\n")
    with pytest.raises(RunInUseError, match="held by a process on host not-"):
        RunLock(tmp_path / "run").acquire()


# ------------------------------------------------------------------ 9. outputs are valid


def test_a_crop_border_that_leaves_nothing_is_refused_before_metrics_json(tmp_path: Path, data, weights) -> None:
    opt = yaml.safe_load(options_file(tmp_path, data, weights).read_text())
    opt["val"]["metrics"]["psnr"]["crop_border"] = 10000
    with pytest.raises(ValueError, match=r"val\.metrics\.psnr\.crop_border: 10000 leaves nothing of the 32x32 image a"):
        test_entry.score(["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path)])
    assert not list(tmp_path.rglob("metrics.json"))


def test_metrics_json_is_strict_json_when_a_metric_is_infinite(tmp_path: Path, data, weights, monkeypatch) -> None:
    import lkdn.evaluate

    monkeypatch.setattr(lkdn.evaluate, "calculate_metric", lambda data, opt: math.inf)
    test_entry.score(["-opt", str(options_file(tmp_path, data, weights)), "--root", str(tmp_path)])
    text = next(tmp_path.rglob("metrics.json")).read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    assert "null" in text


# ------------------------------------------------------------------ 11. runaway work


def test_a_billion_laughs_yaml_is_refused_at_once(tmp_path: Path) -> None:
    lines = ["name: laughs", "scale: 2", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    lines += ["network_g: {type: LKDN, upscale: 2, extra: *a8}"]
    path = tmp_path / "laughs.yml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(OptionsError, match=r"laughs\.yml: .*alias"):
        load_options(path)
    assert time.perf_counter() - started < 5


# ------------------------------------------------------------------ 13. diagnostics that do not mislead


def test_divergence_from_a_huge_learning_rate_says_the_weights_blew_up(tmp_path: Path, data,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The schema refuses a learning rate above lkdn.options.MAX_LR; lifted here to make weights blow up for certain,
    # as data or a schedule can at run time.
    monkeypatch.setattr("lkdn.options.MAX_LR", math.inf)
    opt = options(*data, name="huge", train__optim_g__lr=1e30, train__total_iter=50, train__max_bad_steps=2,
                  logger__save_checkpoint_freq=1000)
    with pytest.raises(DivergenceError) as err:
        train(write_yaml(tmp_path, opt), tmp_path)
    assert "the weights had already blown up" in str(err.value)
    assert "holds good weights" not in str(err.value)


def test_a_float32_tiff_is_read_not_called_corrupt(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from lkdn.images import read_image_file

    image = np.random.default_rng(0).random((8, 9, 3)).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tif"), image)
    assert cv2.imread(str(tmp_path / "f.tif")) is None  # what OpenCV's own colour read makes of it
    result = read_image_file(tmp_path / "f.tif")
    assert result.dtype == np.uint8 and result.shape == (8, 9, 3)
    np.testing.assert_array_equal(result, np.round(image * 255).astype(np.uint8))


def test_profiler_output_is_what_was_asked_for(tmp_path: Path) -> None:
    yml = write_yaml(tmp_path, {"name": "p", "scale": 2, "network_g": TINY_NET})
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_model.py"), "-opt", str(yml), "--lr-size",
                           "32x32", "--runs", "1"], capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for noise in ("gpuGetDeviceCount", "USDT", "FutureWarning", "UserWarning", "Warning:"):
        assert noise not in done.stdout + done.stderr, noise


def test_use_flip_of_older_configs_means_use_hflip(tmp_path: Path, data) -> None:
    from lkdn.options import parse_options

    opt = options(*data, name="flip")
    del opt["datasets"]["train"]["use_hflip"]
    opt["datasets"]["train"]["use_flip"] = False
    parsed = parse_options(write_yaml(tmp_path, opt), is_train=True, root_path=tmp_path)
    assert parsed["datasets"]["train"]["use_hflip"] is False and "use_flip" not in parsed["datasets"]["train"]
    opt["datasets"]["train"]["use_hflip"] = True
    with pytest.raises(OptionsError, match="use_flip and use_hflip disagree"):
        parse_options(write_yaml(tmp_path, opt), is_train=True, root_path=tmp_path)
