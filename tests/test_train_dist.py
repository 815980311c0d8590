"""Two processes under torchrun on the CPU (gloo): only rank 0 writes, and the run equals one process
with the two batches merged (the sampler splits each global batch between the ranks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_common import checkpoint, run_training, tiny_data_fixture, write_options  # noqa: F401 (fixtures)

from lkdn.training.state import cleanup, init_distributed

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_slurm_launcher_reads_the_slurm_variables(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # set: no scontrol lookup of SLURM_NODELIST
    info = init_distributed("slurm", use_cuda=False, backend="nccl", port=free_port())
    try:
        assert (info.rank, info.world_size, info.local_rank, info.backend, info.dist) == (0, 1, 0, "gloo", True)
        assert info.device == torch.device("cpu") and os.environ["WORLD_SIZE"] == "1"
        assert torch.distributed.get_world_size() == 1
    finally:
        cleanup(info)
    assert not torch.distributed.is_initialized()


def test_pytorch_launcher_outside_torchrun_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="--launcher pytorch: environment variable RANK is not set.*torchrun"):
        init_distributed("pytorch", use_cuda=False)


NETWORKS = {"LKDN": None, "SPAN": {"type": "SPAN", "feature_channels": 4, "upscale": 2}}  # None: the tiny YAML's


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_torchrun_two_cpu_processes(tmp_path: Path, tiny_data, network: str) -> None:
    hr, lr = tiny_data
    common = {"train__total_iter": 4, "logger__save_checkpoint_freq": 2, "logger__print_freq": 2, "val__val_freq": 2}
    if NETWORKS[network] is not None:
        common["network_g"] = NETWORKS[network]
    ddp = write_options(tmp_path, hr=hr, lr=lr, name="ddp", datasets__train__batch_size_per_gpu=2,
                        dist_params={"backend": "nccl", "port": 29500}, **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "lkdn" / "train.py"), "-opt", str(ddp), "--launcher", "pytorch", "--root_path", str(tmp_path)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    exp = tmp_path / "experiments" / "ddp"
    assert sorted(p.name for p in exp.iterdir()) == sorted(
        ["models", "training_states", "ddp_options.yml", "metrics.jsonl", "train_log.jsonl",
         next(p.name for p in exp.glob("train_ddp_*.log"))])
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_2.pth", "net_g_4.pth", "net_g_latest.pth"]
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["2.state", "4.state"]
    assert len(list((tmp_path / "tb_logger" / "ddp").iterdir())) == 1
    log = next(exp.glob("train_ddp_*.log")).read_text()
    assert log.count("Start training from epoch 0") == 1  # rank 1 does not log
    assert "batch 2 per process x 2 process(es)" in log and "2 process(es), launcher pytorch, backend gloo" in log
    assert "Start training from epoch 0" in result.stderr  # rank 0 logs to the console too

    # one process with batch 4 reads the same samples with the same crops in the same steps
    single = write_options(tmp_path, hr=hr, lr=lr, name="single", datasets__train__batch_size_per_gpu=4, **common)
    assert run_training(single, tmp_path) == 0
    got, ref = checkpoint(tmp_path, "ddp", "latest"), checkpoint(tmp_path, "single", "latest")
    for key in ("params", "params_ema"):
        for name, tensor in ref[key].items():
            torch.testing.assert_close(got[key][name], tensor, rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")
