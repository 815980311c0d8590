"""Process-group set-up for one process, ``torchrun`` (``--launcher pytorch``) and slurm.

Unlike ``basicsr.utils.dist_util.init_dist`` nothing here touches CUDA unless CUDA is used:
the backend is ``nccl`` for GPU training and ``gloo`` for CPU training, ranks come from the
launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` from ``torchrun``;
``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODELIST`` from slurm).

SIGINT / SIGTERM during training (:class:`StopRequest`): finish the current iteration, save a state,
then stop. The handler only records the signal; the training loop checks :attr:`StopRequest.signum`
after each iteration (under DDP all ranks agree, :func:`any_process`), saves the networks and a
training state, and exits with status ``128 + signal number``. A second signal while saving is not
caught again: it interrupts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from types import FrameType

import torch
import torch.distributed as dist

from lkdn.errors import LkdnError

logger = logging.getLogger(__name__)

LAUNCHERS = ("none", "pytorch", "slurm")
DEFAULT_PORT = 29500


class LaunchError(LkdnError, RuntimeError):
    """The launcher's environment is missing or wrong; the message says how to start the run."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    launcher: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def dist(self) -> bool:
        """True when a process group is in use (any launcher other than ``none``)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and logs."""
        return self.rank == 0


def _env_int(name: str, launcher: str) -> int:
    value = os.environ.get(name)
    if value is None:
        hint = "start the script with torchrun" if launcher == "pytorch" else "run it inside srun / sbatch"
        raise LaunchError(f"--launcher {launcher}: environment variable {name} is not set ({hint})")
    try:
        return int(value)
    except ValueError as err:
        raise LaunchError(f"--launcher {launcher}: {name}={value!r} is not an integer") from err


def _slurm_environment(port: int | None) -> None:
    """Translate the slurm variables into the ``env://`` variables torch.distributed reads."""
    rank = _env_int("SLURM_PROCID", "slurm")
    world_size = _env_int("SLURM_NTASKS", "slurm")
    local_rank = int(os.environ.get("SLURM_LOCALID", rank % max(torch.cuda.device_count(), 1)))
    if "MASTER_ADDR" not in os.environ:
        node_list = os.environ.get("SLURM_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
        if not node_list:
            raise LaunchError("--launcher slurm: SLURM_NODELIST is not set; set MASTER_ADDR yourself")
        try:
            host = subprocess.check_output(["scontrol", "show", "hostnames", node_list], text=True).split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError) as err:
            raise LaunchError(f"--launcher slurm: cannot resolve the first host of {node_list!r} ({err})") from err
        os.environ["MASTER_ADDR"] = host
    os.environ.setdefault("MASTER_PORT", str(port or DEFAULT_PORT))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank))


def init_distributed(launcher: str, *, use_cuda: bool, backend: str | None = None, port: int | None = None) -> DistInfo:
    """Start the process group for ``launcher`` and pick this process's device.

    Args:
        launcher: ``none`` (one process), ``pytorch`` (torchrun) or ``slurm``.
        use_cuda: train on CUDA (``num_gpu`` > 0); otherwise on the CPU.
        backend: ``dist_params.backend``; ``nccl`` is replaced by ``gloo`` on the CPU, and ``None``
            picks ``nccl`` on CUDA, ``gloo`` on the CPU.
        port: ``dist_params.port``, used by the slurm launcher when ``MASTER_PORT`` is unset.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "none":
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            logger.warning("WORLD_SIZE=%s but --launcher none: every process trains alone; use --launcher pytorch",
                           os.environ["WORLD_SIZE"])
        device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return DistInfo("none", 0, 1, 0, device, None)
    if launcher == "slurm":
        _slurm_environment(port)
    rank, world_size = _env_int("RANK", launcher), _env_int("WORLD_SIZE", launcher)
    local_rank = _env_int("LOCAL_RANK", launcher)
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        chosen = backend or "nccl"
    else:
        device = torch.device("cpu")
        chosen = "gloo" if backend in (None, "nccl") else backend
    if not dist.is_initialized():
        dist.init_process_group(backend=chosen, init_method="env://", rank=rank, world_size=world_size)
    return DistInfo(launcher, rank, world_size, local_rank, device, chosen)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in one process)."""
    if info.dist:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_mean(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    """Average scalar tensors over the processes; returns Python floats (same on every rank)."""
    if not values:
        return {}
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    if info.dist:
        dist.all_reduce(stacked)
        stacked /= info.world_size
    return dict(zip(values, stacked.tolist(), strict=True))


def any_process(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not info.dist:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group (if one was started)."""
    if info.dist and dist.is_initialized():
        dist.destroy_process_group()


# -------------------------------------------------------------------------------------- signals


logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Installs the handlers (main thread only) and restores the previous ones on :meth:`restore`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            logger.warning("Received %s: saving a training state after this iteration, then stopping",
                           signal.Signals(signum).name)
        self.signum = signum
        self.restore()  # a second signal acts immediately

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}
