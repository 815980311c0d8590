"""The training pipeline on the CPU: outputs, exact resume, stop signals, speed options, warm-up."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from test_train_common import (  # noqa: F401 (fixtures)
    checkpoint,
    read_jsonl,
    run_training,
    tiny_data_fixture,
    write_options,
)

from lkdn.checkpoint import load_file
from lkdn.models.sr_model import SRModel

pytestmark = pytest.mark.usefixtures("one_thread")


def first_last(values: list[float], k: int) -> tuple[float, float]:
    return sum(values[:k]) / k, sum(values[-k:]) / k


@pytest.mark.parametrize("optimizer", [
    {"type": "Adan", "lr": 5e-3, "betas": [0.98, 0.92, 0.99], "eps": 1e-8, "weight_decay": 0, "foreach": True},
    {"type": "Adam", "lr": 2e-3, "betas": [0.9, 0.99], "weight_decay": 0},
], ids=["Adan", "Adam"])
def test_training_writes_the_experiment_and_loss_falls(tmp_path: Path, tiny_data, optimizer) -> None:
    hr, lr = tiny_data
    name = f"tiny_{optimizer['type']}"
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name=name, train__optim_g=optimizer, train__total_iter=40,
                             val__val_freq=20, logger__save_checkpoint_freq=20)
    assert run_training(opt_file, tmp_path) == 0

    exp = tmp_path / "experiments" / name
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_20.pth", "net_g_40.pth", "net_g_latest.pth"]
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["20.state", "40.state"]
    assert len(list(exp.glob(f"train_{name}_*.log"))) == 1
    assert (exp / f"{name}_options.yml").is_file()
    assert list((tmp_path / "tb_logger" / name).glob("events.out.tfevents.*"))
    assert not list(exp.rglob("*.tmp"))

    ckpt = checkpoint(tmp_path, name, "latest")
    assert set(ckpt) == {"params", "params_ema"}
    assert ckpt["params"].keys() == ckpt["params_ema"].keys()
    assert all(torch.equal(ckpt["params"][k], checkpoint(tmp_path, name, 40)["params"][k]) for k in ckpt["params"])
    state = load_file(exp / "training_states" / "40.state")
    # 4 images x enlarge ratio 4 / batch 4: 4 batches an epoch; iteration 40 ends epoch 9
    assert (state["iter"], state["epoch"], state["batch_in_epoch"]) == (40, 9, 4)

    lines = read_jsonl(exp / "train_log.jsonl")
    assert [r["iter"] for r in lines] == list(range(1, 41))
    assert {"iter", "epoch", "lr", "time", "data_time", "l_pix"} <= set(lines[0])
    start, end = first_last([r["l_pix"] for r in lines], 8)
    assert end < 0.6 * start, (start, end)
    metrics = read_jsonl(exp / "metrics.jsonl")
    assert [(m["iter"], m["dataset"]) for m in metrics] == [(20, "tiny_val"), (40, "tiny_val")]
    assert 10 < metrics[-1]["psnr"] < 60 and 0 < metrics[-1]["ssim"] <= 1
    assert metrics[-1]["psnr"] > metrics[0]["psnr"]


def test_resume_from_half_way_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    changes = {"train__total_iter": 14, "logger__save_checkpoint_freq": 7, "logger__print_freq": 7,
               "val__val_freq": 7, "datasets__train__dataset_enlarge_ratio": 3}  # 12 samples: 3 batches an epoch
    full = write_options(tmp_path, hr=hr, lr=lr, name="full", **changes)
    assert run_training(full, tmp_path) == 0

    part = write_options(tmp_path, hr=hr, lr=lr, name="part", **changes)
    assert run_training(part, tmp_path, "--force_yml", "train:total_iter=7") == 0
    # resume the interrupted run (stopped at 7, mid-epoch) through path.resume_state
    state = tmp_path / "experiments" / "part" / "training_states" / "7.state"
    assert run_training(part, tmp_path, "--force_yml", f"path:resume_state={state}") == 0

    ref, got = checkpoint(tmp_path, "full", "latest"), checkpoint(tmp_path, "part", "latest")
    for key in ("params", "params_ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume"
    ref_state = load_file(tmp_path / "experiments" / "full" / "training_states" / "14.state")
    got_state = load_file(tmp_path / "experiments" / "part" / "training_states" / "14.state")
    assert (ref_state["epoch"], ref_state["batch_in_epoch"]) == (got_state["epoch"], got_state["batch_in_epoch"]) == (4, 2)
    for file in ("metrics.jsonl", "train_log.jsonl"):
        ref_lines = read_jsonl(tmp_path / "experiments" / "full" / file)
        got_lines = read_jsonl(tmp_path / "experiments" / "part" / file)
        drop = ("time", "data_time")
        assert [{k: v for k, v in r.items() if k not in drop} for r in got_lines] == [
            {k: v for k, v in r.items() if k not in drop} for r in ref_lines]


def test_sigterm_saves_a_state_and_auto_resume_continues(tmp_path: Path, tiny_data, monkeypatch) -> None:
    hr, lr = tiny_data
    original = SRModel.optimize_parameters

    def step_then_signal(self: SRModel, current_iter: int) -> None:
        original(self, current_iter)
        if current_iter == 3:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(SRModel, "optimize_parameters", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="stop", train__total_iter=6, logger__save_checkpoint_freq=100,
                             val=None)
    assert run_training(opt_file, tmp_path) == 128 + signal.SIGTERM
    exp = tmp_path / "experiments" / "stop"
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["3.state"]
    assert (exp / "models" / "net_g_3.pth").is_file() and not (exp / "models" / "net_g_latest.pth").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored

    monkeypatch.setattr(SRModel, "optimize_parameters", original)
    assert run_training(opt_file, tmp_path, "--auto_resume") == 0
    assert [r["iter"] for r in read_jsonl(exp / "train_log.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert (exp / "models" / "net_g_latest.pth").is_file()


def test_bf16_autocast_channels_last_and_grad_clip_train_on_cpu(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="fast", train__total_iter=3, train__amp="bf16",
                             train__channels_last=True, train__grad_clip=0.01, val=None,
                             logger__save_checkpoint_freq=100)
    assert run_training(opt_file, tmp_path) == 0
    losses = [r["l_pix"] for r in read_jsonl(tmp_path / "experiments" / "fast" / "train_log.jsonl")]
    assert len(losses) == 3 and all(0 < v < 1 for v in losses)
    params = checkpoint(tmp_path, "fast", "latest")["params"]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in params.values())


def test_fp16_on_cpu_is_a_clear_error(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="fp16", train__amp="fp16")
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device.*use bf16 on the CPU"):
        run_training(opt_file, tmp_path)


def test_compile_trains(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    # aot_eager runs torch.compile's graph capture and autograd tracing without a C++ toolchain
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="compiled", train__total_iter=2,
                             train__compile={"backend": "aot_eager"}, val=None, logger__save_checkpoint_freq=100)
    assert run_training(opt_file, tmp_path) == 0
    params = checkpoint(tmp_path, "compiled", "latest")["params"]
    assert not any(k.startswith("_orig_mod.") for k in params)


def test_warmup_scales_the_schedule_without_shifting_it(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="warm", train__total_iter=8, train__warmup_iter=4,
                             train__scheduler={"type": "MultiStepLR", "milestones": [5], "gamma": 0.5}, val=None,
                             train__optim_g={"type": "SGD", "lr": 0.1}, logger__save_checkpoint_freq=100)
    assert run_training(opt_file, tmp_path) == 0
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "experiments" / "warm" / "train_log.jsonl")]
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.05, 0.05, 0.05])


def test_debug_mode_and_auto_resume_without_a_state(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="dbg", train__total_iter=8, logger__print_freq=100,
                             logger__save_checkpoint_freq=100, val__val_freq=100)
    assert run_training(opt_file, tmp_path, "--debug", "--auto_resume") == 0
    exp = tmp_path / "experiments" / "debug_dbg"  # BasicSR's debug mode: every line, save and validate every 8
    assert [r["iter"] for r in read_jsonl(exp / "train_log.jsonl")] == list(range(1, 9))
    assert (exp / "models" / "net_g_8.pth").is_file() and (exp / "training_states" / "8.state").is_file()
    assert [r["iter"] for r in read_jsonl(exp / "metrics.jsonl")] == [8]
    assert not (tmp_path / "tb_logger" / "debug_dbg").exists()


def test_a_new_run_archives_the_old_experiment(tmp_path: Path, tiny_data) -> None:
    hr, lr = tiny_data
    opt_file = write_options(tmp_path, hr=hr, lr=lr, name="again", train__total_iter=1, val=None)
    assert run_training(opt_file, tmp_path) == 0
    assert run_training(opt_file, tmp_path) == 0
    archived = list((tmp_path / "experiments").glob("again_archived_*"))
    assert len(archived) == 1 and (archived[0] / "models" / "net_g_latest.pth").is_file()
    assert len(list((tmp_path / "tb_logger").glob("again_archived_*"))) == 1


def test_deterministic_runs_repeat_bit_for_bit(tmp_path: Path, tiny_data, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train.deterministic``: deterministic algorithms, cudnn.benchmark off; two runs give the same weights."""
    hr, lr = tiny_data
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    try:
        for name in ("det_a", "det_b"):
            opt = write_options(tmp_path, hr=hr, lr=lr, name=name, train__total_iter=4, train__deterministic=True)
            assert run_training(opt, tmp_path) == 0
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = checkpoint(tmp_path, "det_a", "latest"), checkpoint(tmp_path, "det_b", "latest")
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
