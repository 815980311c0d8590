"""Checkpoints: safe loading only (torch>=2.10, weights_only, no fallback), safetensors everywhere,
atomic saves that survive SIGKILL and a full disk."""

from __future__ import annotations

import ast
import errno
import importlib.util
import multiprocessing
import os
import random
import re
import runpy
import time
from pathlib import Path

import pytest
import torch
from reliability_common import (
    ROOT,
    assert_same_weights,
    experiment,
    make_images,
    options,
    state_iters,
    train,
    weights,
    write_yaml,
)

from lkdn import build_network
from lkdn import test as test_entry
from lkdn.checkpoint import (
    CheckpointError,
    load_file,
    load_state_dict,
    partial_saves,
    require_safe_torch,
    save_file,
)
from lkdn.loading import read_metadata, save_network_file
from lkdn.training.state import remove_partial_saves

TINY_NET = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("ckpt_data"))


# ------------------------------------------------------------------------------------------ torch version


@pytest.mark.parametrize("version", ["2.10.0", "2.10.0+cu132", "2.15.0", "3.0.0a0+git"])
def test_safe_torch_versions_pass(version: str) -> None:
    require_safe_torch(version)


@pytest.mark.parametrize("version", ["2.9.1", "2.9.1+cu128", "2.5.1", "1.13.1", "nightly"])
def test_older_torch_is_refused_with_the_reason(version: str) -> None:
    with pytest.raises(ImportError, match=rf"torch>=2.10 .* found torch {re.escape(version)}.*CVE-2025-32434.*CVE-2026-24747"):
        require_safe_torch(version)


def test_the_loader_module_refuses_to_import_under_an_old_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    with pytest.raises(ImportError, match="pip install -U 'torch>=2.10'"):
        runpy.run_path(str(ROOT / "lkdn" / "checkpoint.py"))  # a fresh copy; sys.modules untouched


# ------------------------------------------------------------------------------------------ one loader


def test_every_checkpoint_read_goes_through_the_safe_loader() -> None:
    """Parse the package and scripts: one ``torch.load`` call, with ``weights_only=True``; no pickle loads."""
    files = sorted((ROOT / "lkdn").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    calls = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                assert "load" not in {a.name for a in node.names}, f"{path}: from torch import load"
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            keywords = {k.arg: k.value for k in node.keywords}
            if (owner, node.func.attr) == ("torch", "load"):
                weights_only = keywords.get("weights_only")
                calls.append((path.relative_to(ROOT).as_posix(),
                              isinstance(weights_only, ast.Constant) and weights_only.value is True))
            assert (owner, node.func.attr) not in {(m, f) for m in ("pickle", "dill", "joblib", "cloudpickle", "marshal")
                                                   for f in ("load", "loads")}, f"{path}:{node.lineno}"
            allow = keywords.get("allow_pickle")
            assert not (isinstance(allow, ast.Constant) and allow.value is True), f"{path}:{node.lineno}"
    assert calls == [("lkdn/checkpoint.py", True)]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint does on unpickling
        return (os.system, (f"touch {self.marker}",))


def test_malicious_training_state_is_refused_on_auto_resume(tmp_path: Path, data) -> None:
    opt_file = write_yaml(tmp_path, options(*data, name="evil", train__total_iter=4))
    assert train(opt_file, tmp_path) == 0
    marker = tmp_path / "pwned"
    state_file = experiment(tmp_path, "evil") / "training_states" / "4.state"
    state = load_file(state_file)
    torch.save({**state, "rng": _RunsCode(marker)}, state_file)  # a real torch zip file with a payload
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(state_file))}: refused to load"):
        train(opt_file, tmp_path, "--auto_resume", "--force_yml", "train:total_iter=8")
    assert not marker.exists()

    torch.save(state, state_file)  # a clean state, and now the network of that iteration is the payload
    torch.save({"params": _RunsCode(marker)}, experiment(tmp_path, "evil") / "models" / "net_g_4.pth")
    with pytest.raises(CheckpointError, match="net_g_4.pth: refused to load"):
        train(opt_file, tmp_path, "--auto_resume", "--force_yml", "train:total_iter=8")
    assert not marker.exists()


def test_malicious_weights_are_refused_by_fine_tuning_and_testing(tmp_path: Path, data) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": _RunsCode(marker)}, evil)
    opt = options(*data, name="evil_ft", path__pretrain_network_g=str(evil))
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        train(write_yaml(tmp_path, opt), tmp_path)
    test_opt = {"name": "evil_test", "scale": 2, "num_gpu": 0, "network_g": TINY_NET,
                "datasets": {"test_1": {"name": "x", "type": "PairedImageDataset", "dataroot_gt": str(data[0]),
                                        "dataroot_lq": str(data[1])}},
                "path": {"pretrain_network_g": str(evil)}}
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        test_entry.score(["-opt", str(write_yaml(tmp_path, test_opt)), "--root", str(tmp_path)])
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ safetensors


def test_safetensors_weights_are_accepted_by_test_train_and_reparameterize(tmp_path: Path, data) -> None:
    torch.manual_seed(3)
    state = build_network(TINY_NET).state_dict()
    save_file({"params": state, "params_ema": state}, tmp_path / "w.pth")
    save_network_file(state, tmp_path / "w.safetensors", TINY_NET)

    results = {}
    for suffix in ("pth", "safetensors"):
        opt = {"name": f"st_{suffix}", "scale": 2, "num_gpu": 0, "network_g": TINY_NET,
               "datasets": {"test_1": {"name": "x", "type": "PairedImageDataset", "dataroot_gt": str(data[0]),
                                       "dataroot_lq": str(data[1])}},
               "path": {"pretrain_network_g": str(tmp_path / f"w.{suffix}")},
               "val": {"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2, "test_y_channel": True}}}}
        results[suffix] = test_entry.score(["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path)])
    assert results["safetensors"]["x"]["psnr"] == results["pth"]["x"]["psnr"]

    for suffix in ("pth", "safetensors"):  # fine-tuning from either file gives the same run
        opt = options(*data, name=f"ft_{suffix}", train__total_iter=2, path__pretrain_network_g=str(tmp_path / f"w.{suffix}"))
        assert train(write_yaml(tmp_path, opt), tmp_path) == 0
    assert_same_weights(weights(tmp_path, "ft_pth"), weights(tmp_path, "ft_safetensors"))

    spec = importlib.util.spec_from_file_location("reparameterize_script", ROOT / "scripts" / "reparameterize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rep_net = TINY_NET | {"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}
    save_network_file(build_network(rep_net).state_dict(), tmp_path / "rep.safetensors", rep_net)
    opt_file = write_yaml(tmp_path, {"name": "rep", "scale": 2, "network_g": rep_net})
    assert script.main(["-opt", str(opt_file), "--input", str(tmp_path / "rep.safetensors"),
                        "--output", str(tmp_path / "deploy.safetensors")]) == 0
    assert read_metadata(tmp_path / "deploy.safetensors")["network_g"]["conv"] == "BSConvU"


# ------------------------------------------------------------------------------------------ atomic saves

BIG = 4_000_000  # float32 elements: a 16 MB checkpoint


def _saver(path: str, first: int, big: torch.Tensor, conn) -> None:
    """Child: save versions first, first+1, ... of ``path`` forever, announcing each start and end."""
    version = first
    while True:
        conn.send(("start", version))
        save_file({"version": torch.tensor(version), "big": big}, path)
        conn.send(("done", version))
        version += 1


def test_sigkill_while_saving_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    """20 child processes are killed (SIGKILL) at random moments of a 16 MB save; the file always loads,
    holding the last completed version or the one being written when the rename had happened."""
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "net_g_latest.pth"
    big = torch.arange(BIG, dtype=torch.float32)
    start = time.perf_counter()
    save_file({"version": torch.tensor(0), "big": big}, path)
    save_time = time.perf_counter() - start
    rng = random.Random(20)
    outcomes = {"mid_write": 0, "after_rename": 0, "between_saves": 0}
    version, saved = 1, 0
    for _ in range(20):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_saver, args=(str(path), version, big, child), daemon=True)
        process.start()
        messages = []
        target = rng.randint(1, 2)  # kill during (or after) the first or second save of this child
        while sum(kind == "start" for kind, _ in messages) < target:
            messages.append(parent.recv())
        time.sleep(rng.uniform(0, 1.5 * save_time))
        process.kill()
        process.join()
        while parent.poll():
            messages.append(parent.recv())
        started = [n for kind, n in messages if kind == "start"]
        done = [n for kind, n in messages if kind == "done"]
        expected = max(done, default=saved)  # the last completed save (or the file as it was)
        in_progress = max(started) if max(started) not in done else None
        ckpt = load_file(path)  # must always load, and be whole
        assert torch.equal(ckpt["big"], big)
        saved = int(ckpt["version"])
        assert saved in (expected, in_progress), (saved, messages)
        leftovers = partial_saves(tmp_path)
        if leftovers:
            outcomes["mid_write"] += 1
        elif saved == in_progress:
            outcomes["after_rename"] += 1
        else:
            outcomes["between_saves"] += 1
        assert remove_partial_saves(tmp_path) == len(leftovers)
        version = max(started) + 1
    assert sum(outcomes.values()) == 20
    assert outcomes["mid_write"] >= 1, outcomes  # the kills did land inside saves
    print(f"20 SIGKILLs during 16 MB saves (one save: {save_time * 1000:.0f} ms): {outcomes}")


class _DiskFull:
    """``torch.save`` that writes half a file and fails with ENOSPC on its ``fail_on``-th call."""

    def __init__(self, real, fail_on: int) -> None:
        self.real, self.fail_on, self.calls = real, fail_on, 0

    def __call__(self, obj, handle, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            handle.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(obj, handle, *args, **kwargs)


def test_disk_full_is_reported_and_the_previous_file_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "net.pth"
    save_file({"w": torch.ones(3)}, target)
    monkeypatch.setattr(torch, "save", _DiskFull(torch.save, 1))
    with pytest.raises(CheckpointError) as err:
        save_file({"w": torch.zeros(3)}, target)
    assert str(err.value) == (f"cannot save {target}: no space left on the device of {tmp_path} (No space left on "
                              "device); the previous net.pth is unchanged; free some space (or point the experiment "
                              "elsewhere) and run again")
    assert torch.equal(load_state_dict(target)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["net.pth"]

    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save", full)
    with pytest.raises(CheckpointError, match="nothing was written"):
        save_network_file({"w": torch.ones(2)}, tmp_path / "w.safetensors", TINY_NET)
    assert [p.name for p in tmp_path.iterdir()] == ["net.pth"]


def test_disk_full_during_training_stops_clearly_and_resume_loses_nothing(tmp_path: Path, data,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    changes = {"train__total_iter": 12, "logger__save_checkpoint_freq": 4}
    assert train(write_yaml(tmp_path, options(*data, name="ref", **changes)), tmp_path) == 0
    opt_file = write_yaml(tmp_path, options(*data, name="full", **changes))
    real = torch.save
    monkeypatch.setattr(torch, "save", _DiskFull(real, 4))  # calls: net 4, state 4, net 8, state 8 <- full
    with pytest.raises(CheckpointError) as err:
        train(opt_file, tmp_path)
    states = experiment(tmp_path, "full") / "training_states"
    assert str(err.value).startswith(f"cannot save {states / '8.state'}: no space left on the device")
    assert str(err.value).endswith(f"The latest complete training state is {states / '4.state'}; continue from it "
                                   "with --auto-resume.")
    assert state_iters(tmp_path, "full") == [4] and not partial_saves(states)
    monkeypatch.setattr(torch, "save", real)  # space freed
    assert train(opt_file, tmp_path, "--auto_resume") == 0
    assert_same_weights(weights(tmp_path, "ref"), weights(tmp_path, "full"))
