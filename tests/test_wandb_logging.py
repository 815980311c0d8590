"""Weights & Biases logging (``logger.wandb``), against a stand-in ``wandb`` module that records the calls:
the scalars TensorBoard gets, the options as config, one run id kept across a resume."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from test_train_common import read_jsonl, run_training, tiny_data_fixture, write_options  # noqa: F401

from lkdn.options import SchemaError

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def log(self, values: dict[str, float], *, step: int) -> None:
        self.calls.append(("log", step, values))

    def finish(self) -> None:
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    module = types.ModuleType("wandb")
    ids = iter(["run-one", "run-two"])
    module.util = types.SimpleNamespace(generate_id=lambda: next(ids))

    def init(**kwargs: Any) -> FakeRun:
        calls.append(("init", kwargs))
        return FakeRun(calls)

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_scalars_config_and_one_run_id_across_a_resume(tmp_path: Path, tiny_data, fake_wandb) -> None:
    hr, lr = tiny_data
    wandb = {"project": "lkdn-tests", "entity": "team", "mode": "offline"}
    opt = write_options(tmp_path, hr=hr, lr=lr, name="wb", train__total_iter=4, logger__wandb=wandb,
                        logger__use_tb_logger=False)
    assert run_training(opt, tmp_path) == 0
    (init, kwargs), *rest = fake_wandb
    assert init == "init" and kwargs["project"] == "lkdn-tests" and kwargs["entity"] == "team"
    assert kwargs["id"] == "run-one" and kwargs["resume"] == "allow" and kwargs["mode"] == "offline"
    assert kwargs["name"] == "wb" and kwargs["config"]["network_g"]["type"] == "LKDN"
    logged = {step: values for _, step, values in (c for c in rest if c[0] == "log") if "train/lr" in values}
    records = read_jsonl(tmp_path / "experiments" / "wb" / "train_log.jsonl")
    assert sorted(logged) == [r["iter"] for r in records]
    for record in records:
        assert logged[record["iter"]] == {"losses/l_pix": record["l_pix"], "train/lr": record["lr"]}
    metrics = [values for _, step, values in (c for c in rest if c[0] == "log") if step == 4 and "train/lr" not in values]
    assert metrics and set(metrics[0]) == {"metrics/tiny_val/psnr", "metrics/tiny_val/ssim"}
    assert fake_wandb[-1] == ("finish",)

    fake_wandb.clear()
    opt = write_options(tmp_path, hr=hr, lr=lr, name="wb", train__total_iter=6, logger__wandb=wandb,
                        logger__use_tb_logger=False)
    assert run_training(opt, tmp_path, "--auto_resume") == 0
    assert fake_wandb[0][1]["id"] == "run-one"  # the same W&B run continues
    assert min(c[1] for c in fake_wandb if c[0] == "log") == 5


def test_no_project_means_no_wandb(tmp_path: Path, tiny_data, fake_wandb) -> None:
    hr, lr = tiny_data
    opt = write_options(tmp_path, hr=hr, lr=lr, name="nowandb", train__total_iter=1, logger__wandb={"project": None})
    assert run_training(opt, tmp_path) == 0
    assert fake_wandb == []


def test_missing_package_and_bad_mode_are_clear(tmp_path: Path, tiny_data, monkeypatch: pytest.MonkeyPatch) -> None:
    hr, lr = tiny_data
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    opt = write_options(tmp_path, hr=hr, lr=lr, name="nowb", train__total_iter=1, logger__wandb={"project": "p"})
    with pytest.raises(ValueError, match="the wandb package is not installed: pip install wandb"):
        run_training(opt, tmp_path)
    opt = write_options(tmp_path, hr=hr, lr=lr, name="mode", logger__wandb={"project": "p", "mode": "online!"})
    with pytest.raises(SchemaError, match="logger.wandb.mode: expected online, offline or disabled, got 'online!'"):
        run_training(opt, tmp_path)
