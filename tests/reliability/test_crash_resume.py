"""Crashes and signals lose nothing: SIGKILL at random iterations, SIGTERM and SIGINT through the command
line, then ``--auto_resume`` ends with the weights of an uninterrupted run; non-finite losses are skipped
and, in a row, stop training with the last good state kept; safetensors network files resume exactly."""

from __future__ import annotations

import math
import multiprocessing
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_common import (
    TRAIN_SCRIPT,
    assert_same_weights,
    cli_env,
    experiment,
    logged_iters,
    losses,
    make_images,
    options,
    start_cli,
    state_iters,
    train,
    wait_until,
    weights,
    write_yaml,
)
from safetensors.torch import load_file as load_safetensors

from lkdn.checkpoint import load_file
from lkdn.loading import network_from_file, read_metadata
from lkdn.models.sr_model import SRModel
from lkdn.training.pipeline import DivergenceError

TOTAL, SAVE_EVERY = 24, 3
KILLS = 6


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("crash_data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    """An uninterrupted run of TOTAL iterations (same seed), in this process."""
    root = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = options(*data, name="run", train__total_iter=TOTAL, logger__save_checkpoint_freq=SAVE_EVERY)
        assert train(write_yaml(root, opt), root) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def _starts(root: Path, name: str) -> int:
    """How many times training loops of the run have started (its log files)."""
    return sum(log.read_text().count("Start training from")
               for log in experiment(root, name).glob(f"train_{name}_*.log"))


def _resumed_from(root: Path, name: str) -> list[int]:
    """The iteration each start of the run resumed from (its log files, in order)."""
    found = []
    for log in sorted(experiment(root, name).glob(f"train_{name}_*.log")):
        for line in log.read_text().splitlines():
            if "Resuming training from" in line:
                found.append(int(line.rsplit("iteration ", 1)[1]))
    return found


def test_sigkill_at_random_iterations_then_auto_resume_matches_the_uninterrupted_run(tmp_path: Path, data,
                                                                                      reference: Path) -> None:
    opt_file = write_yaml(tmp_path, options(*data, name="run", train__total_iter=TOTAL,
                                            logger__save_checkpoint_freq=SAVE_EVERY))
    ctx = multiprocessing.get_context("fork")  # a child that has torch imported already: a kill costs no start-up
    targets = sorted(random.Random(9).sample(range(2, TOTAL), KILLS))  # random iterations across the run
    kills = []
    for target in targets:
        starts = _starts(tmp_path, "run")
        child = ctx.Process(target=train, args=(opt_file, tmp_path, "--auto_resume"), daemon=True)
        child.start()
        wait_until(lambda t=target, n=starts: _starts(tmp_path, "run") > n  # lines of this child, not stale ones
                   and max(logged_iters(tmp_path, "run"), default=0) >= t, timeout=120, what=f"iteration {target}",
                   alive=child.is_alive)
        child.kill()  # SIGKILL: no handler runs, files may be half written
        child.join()
        assert child.exitcode == -signal.SIGKILL
        killed_at = max(logged_iters(tmp_path, "run"))
        saved = max(state_iters(tmp_path, "run"), default=0)
        assert killed_at - saved <= SAVE_EVERY, (killed_at, saved)  # lost: the iterations since the last state
        kills.append((killed_at, saved))
    assert train(opt_file, tmp_path, "--auto_resume") == 0

    assert_same_weights(weights(reference, "run"), weights(tmp_path, "run"))
    assert_same_weights(weights(reference, "run", TOTAL), weights(tmp_path, "run", TOTAL))
    assert losses(tmp_path, "run") == losses(reference, "run")  # the log too: every iteration once, same loss
    assert _resumed_from(tmp_path, "run") == [saved for _, saved in kills if saved]
    print(f"SIGKILL at iterations {[k for k, _ in kills]}, resumed from {[s for _, s in kills]}")


def test_sigterm_and_sigint_save_a_state_then_resume_exactly(tmp_path: Path, data, reference: Path) -> None:
    """Through ``python lkdn/train.py``: SIGTERM, resume, SIGINT, resume: the uninterrupted weights."""
    opt_file = write_yaml(tmp_path, options(*data, name="run", train__total_iter=TOTAL,
                                            logger__save_checkpoint_freq=SAVE_EVERY))
    stops = []
    for sig, target in ((signal.SIGTERM, 4), (signal.SIGINT, 14)):
        process = start_cli(TRAIN_SCRIPT, "-opt", str(opt_file), "--root_path", str(tmp_path), "--auto_resume",
                            cwd=tmp_path)
        try:
            wait_until(lambda t=target: max(logged_iters(tmp_path, "run"), default=0) >= t, timeout=240,
                       what=f"iteration {target}", alive=lambda p=process: p.poll() is None)
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 128 + sig, stderr[-2000:]
        stopped = max(logged_iters(tmp_path, "run"))
        assert max(state_iters(tmp_path, "run")) == stopped  # a state of the very iteration it stopped at
        assert (experiment(tmp_path, "run") / "models" / f"net_g_{stopped}.pth").is_file()
        assert f"Received {sig.name}: saving a training state after this iteration" in stderr
        assert f"Stopped by signal {int(sig)} at iteration {stopped}; resume with --auto-resume" in stderr
        stops.append(stopped)
    assert train(opt_file, tmp_path, "--auto_resume") == 0
    assert _resumed_from(tmp_path, "run") == stops
    assert_same_weights(weights(reference, "run"), weights(tmp_path, "run"))
    assert losses(tmp_path, "run") == losses(reference, "run")


# ------------------------------------------------------------------------------------------ non-finite losses


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: N805
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: N805
        return grad * math.nan


def _poison(monkeypatch: pytest.MonkeyPatch, iterations: set[int] | range, *, how: str) -> None:
    """From the options' iterations on, make the loss (or only its gradient) non-finite."""
    original = SRModel._losses
    counter = {"iter": 0}
    original_step = SRModel.optimize_parameters

    def step(self, current_iter):
        counter["iter"] = current_iter
        return original_step(self, current_iter)

    def poisoned(self, output):
        total, parts = original(self, output)
        if counter["iter"] in iterations:
            if how == "gradient":
                total = _NaNGradient.apply(total)
            else:
                bad = math.nan if how == "nan" else math.inf
                total = total * bad
                parts = {k: v * bad for k, v in parts.items()}
        return total, parts

    monkeypatch.setattr(SRModel, "optimize_parameters", step)
    monkeypatch.setattr(SRModel, "_losses", poisoned)


@pytest.mark.parametrize("how", ["nan", "gradient"])
def test_non_finite_steps_are_skipped_without_any_update(tmp_path: Path, data, monkeypatch, how: str) -> None:
    _poison(monkeypatch, {5, 6}, how=how)
    changes = {"train__total_iter": 8, "logger__save_checkpoint_freq": 1, "train__max_bad_steps": 3}
    if how == "gradient":
        changes["train__grad_clip"] = 10.0  # the clip's gradient norm is checked
    assert train(write_yaml(tmp_path, options(*data, name=how, **changes)), tmp_path) == 0
    for label in (5, 6):  # skipped: no weight, EMA or optimizer update
        assert_same_weights(weights(tmp_path, how, 4), weights(tmp_path, how, label))
        state = load_file(experiment(tmp_path, how) / "training_states" / f"{label}.state")
        previous = load_file(experiment(tmp_path, how) / "training_states" / "4.state")
        assert_same_weights(state["optimizers"][0]["state"], previous["optimizers"][0]["state"])
        assert state["bad_steps"] == label - 4
    assert not torch.equal(weights(tmp_path, how, 7)["params"]["fea_conv.pw.weight"],
                           weights(tmp_path, how, 6)["params"]["fea_conv.pw.weight"])
    assert load_file(experiment(tmp_path, how) / "training_states" / "7.state")["bad_steps"] == 0
    assert all(torch.isfinite(t).all() for t in weights(tmp_path, how)["params_ema"].values())
    log = next(experiment(tmp_path, how).glob(f"train_{how}_*.log")).read_text()
    reason = "non-finite loss (l_pix: nan)" if how == "nan" else "non-finite gradient norm (nan)"
    assert f"Iteration 5: {reason}; step skipped, no weight or EMA update (1 in a row)" in log
    assert f"Iteration 6: {reason}; step skipped, no weight or EMA update (2 in a row)" in log


def test_consecutive_bad_steps_stop_training_and_keep_the_last_good_state(tmp_path: Path, data, monkeypatch,
                                                                          reference: Path) -> None:
    opt_file = write_yaml(tmp_path, options(*data, name="run", train__total_iter=TOTAL,
                                            logger__save_checkpoint_freq=SAVE_EVERY, train__max_bad_steps=4))
    _poison(monkeypatch, range(7, TOTAL + 1), how="inf")
    with pytest.raises(DivergenceError) as err:
        train(opt_file, tmp_path)
    states = experiment(tmp_path, "run") / "training_states"
    assert str(err.value).startswith("training stopped at iteration 10: 4 consecutive steps with a non-finite loss "
                                     "or gradient (train.max_bad_steps: 4)")
    assert f"The latest complete training state is {states / '9.state'}; continue from it with --auto-resume." \
        in str(err.value)
    assert state_iters(tmp_path, "run") == [3, 6, 9]  # the state saved during the bad steps holds good weights
    assert not (experiment(tmp_path, "run") / "models" / "net_g_latest.pth").exists()
    assert_same_weights(weights(tmp_path, "run", 9), weights(tmp_path, "run", 6))  # no update from 7 on
    monkeypatch.undo()  # the cause is fixed: resume from the kept state
    assert train(opt_file, tmp_path, "--auto_resume") == 0
    assert _resumed_from(tmp_path, "run") == [9]
    assert torch.isfinite(torch.cat([t.flatten() for t in weights(tmp_path, "run")["params"].values()])).all()


def test_a_non_finite_loss_on_one_process_skips_the_step_on_every_process(tmp_path: Path, data) -> None:
    """Two processes under torchrun (gloo): rank 1's loss is NaN at iterations 3 and 4; both ranks skip them
    (a rank skipping alone would leave the other waiting in the gradient all-reduce)."""
    opt_file = write_yaml(tmp_path, options(*data, name="ddp", train__total_iter=6, logger__save_checkpoint_freq=2))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               f"--master_port={port}", str(Path(__file__).parent / "nan_rank_runner.py"), "-opt", str(opt_file),
               "--launcher", "pytorch", "--root_path", str(tmp_path)]
    done = subprocess.run(command, cwd=tmp_path, env=cli_env() | {"LKDN_NAN_ITERS": "3,4"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for it in (3, 4):
        assert (f"Iteration {it}: non-finite loss on another process; step skipped, no weight or EMA update "
                f"({it - 2} in a row)") in done.stderr
    assert_same_weights(weights(tmp_path, "ddp", 2), weights(tmp_path, "ddp", 4))
    assert not torch.equal(weights(tmp_path, "ddp", 6)["params"]["c1.weight"], weights(tmp_path, "ddp", 4)["params"]["c1.weight"])


# ------------------------------------------------------------------------------------------ save_format


def test_safetensors_save_format_resumes_exactly(tmp_path: Path, data, reference: Path) -> None:
    changes = {"train__total_iter": TOTAL, "logger__save_checkpoint_freq": SAVE_EVERY, "logger__save_format": "safetensors"}
    opt_file = write_yaml(tmp_path, options(*data, name="run", **changes))
    assert train(opt_file, tmp_path, "--force_yml", "train:total_iter=10") == 0  # stops mid-epoch at 10
    assert train(opt_file, tmp_path, "--auto_resume") == 0
    models = experiment(tmp_path, "run") / "models"
    assert sorted(p.name for p in models.iterdir())[:2] == ["net_g_12.safetensors", "net_g_15.safetensors"]
    assert not list(models.glob("*.pth"))
    ref = weights(reference, "run")
    latest = load_safetensors(str(models / "net_g_latest.safetensors"))
    assert_same_weights(ref["params_ema"], latest)  # the evaluation weights, flat and self-describing
    state = load_file(experiment(tmp_path, "run") / "training_states" / f"{TOTAL}.state")
    assert_same_weights(ref["params"], state["net_g_params"])  # the training weights travel in the state
    metadata = read_metadata(models / "net_g_latest.safetensors")
    assert metadata["network_g"]["type"] == "LKDN" and metadata["scale"] == 2
    assert (metadata["param_key"], metadata["iter"]) == ("params_ema", "latest")
    net = network_from_file(models / f"net_g_{TOTAL}.safetensors")
    assert_same_weights(ref["params_ema"], net.state_dict())
