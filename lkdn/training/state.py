"""Where a training run stands: its processes, signals, folders, locks, random states and training states.

**Process-group set-up for one process, ``torchrun`` (``--launcher pytorch``) and slurm.**

Unlike ``basicsr.utils.dist_util.init_dist`` nothing here touches CUDA unless CUDA is used:
the backend is ``nccl`` for GPU training and ``gloo`` for CPU training, ranks come from the
launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` from ``torchrun``;
``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODELIST`` from slurm).

SIGINT / SIGTERM during training (:class:`StopRequest`): finish the current iteration, save a state,
then stop. The handler only records the signal; the training loop checks :attr:`StopRequest.signum`
after each iteration (under DDP all ranks agree, :func:`any_process`), saves the networks and a
training state, and exits with status ``128 + signal number``. A second signal while saving is not
caught again: it interrupts at once.

**Experiment folders and training states (BasicSR's layout, atomic writes, safe loads).**

Layout of ``experiments/<name>/``: ``models/net_g_<iter>.pth`` and ``models/net_g_latest.pth``
(BasicSR dicts ``{'params': ..., 'params_ema': ...}``; ``.safetensors`` with
``logger.save_format: safetensors``), ``training_states/<iter>.state``,
``train_<name>_<time>.log``, ``<name>_options.yml``, ``train_log.jsonl``, ``metrics.jsonl``.

A training state holds BasicSR's keys (``epoch``, ``iter``, ``optimizers``, ``schedulers``)
plus what an exact resume needs: ``batch_in_epoch`` (the sampler position), ``rng``,
``manual_seed``, ``scaler`` (fp16) and ``best_metric_results``. Networks are read from
``models/net_g_<iter>.pth`` of the same iteration, as BasicSR's ``check_resume`` does.

Random states travel as tensors and plain lists (:func:`get_rng_state`), so training states load with
``weights_only=True``: Python's ``random``, NumPy's global generator, torch's CPU generator and, when CUDA
is available, every CUDA generator. The data pipeline does not depend on them (each training sample is
seeded from its position, see :mod:`lkdn.training.data`); they make anything else random in a model
(dropout, noise) continue exactly after a resume.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lkdn.checkpoint import CheckpointError, load_file, partial_saves
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



REQUIRED_STATE_KEYS = ("epoch", "iter", "optimizers", "schedulers")


def time_str() -> str:
    """``YYYYmmdd_HHMMSS`` (BasicSR's ``get_time_str``)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime())


def archive_and_create(path: str | Path) -> None:
    """Create ``path``; an existing folder is first renamed to ``<path>_archived_<time>`` (BasicSR)."""
    path = Path(path)
    if path.exists():
        target = Path(f"{path}_archived_{time_str()}")
        counter = 1
        while target.exists():
            target = Path(f"{path}_archived_{time_str()}_{counter}")
            counter += 1
        logger.warning("%s exists: renamed to %s", path, target)
        os.rename(path, target)
    path.mkdir(parents=True, exist_ok=True)


def make_experiment_dirs(paths: dict[str, Any], *, fresh: bool) -> None:
    """Create ``experiments_root`` (archiving an old one when ``fresh``), ``models`` and ``training_states``."""
    if fresh:
        archive_and_create(paths["experiments_root"])
    for key in ("experiments_root", "models", "training_states"):
        Path(paths[key]).mkdir(parents=True, exist_ok=True)


def latest_state(folder: str | Path) -> Path | None:
    """The ``<iter>.state`` file with the highest iteration in ``folder`` (None when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"(\d+)\.state", p.name))]
    return max(found)[1] if found else None


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Load a training state (``weights_only``) and check it has BasicSR's keys."""
    state = load_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training state (expected a dict, got {type(state).__name__})")
    missing = [k for k in REQUIRED_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a training state, missing {', '.join(missing)}")
    return state


NETWORK_SUFFIXES = {"pth": ".pth", "safetensors": ".safetensors"}


def network_file_for_state(
    models_dir: str | Path, state_path: str | Path, current_iter: int, *, save_format: str = "pth",
) -> Path:
    """``models/net_g_<iter>.pth`` (or ``.safetensors``) beside a state; an error names the files when missing.

    The file of ``save_format`` is preferred; the other format is used when only it exists (a run
    whose ``logger.save_format`` changed).
    """
    preferred = NETWORK_SUFFIXES.get(save_format, ".pth")
    suffixes = [preferred] + [s for s in NETWORK_SUFFIXES.values() if s != preferred]
    candidates = [Path(models_dir) / f"net_g_{current_iter}{suffix}" for suffix in suffixes]
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(
        f"resume from {state_path}: the network of iteration {current_iter} is missing "
        f"({' or '.join(str(p) for p in candidates)})"
    )


def remove_partial_saves(*folders: str | Path) -> int:
    """Delete the temporary files a killed save left in ``folders``; return how many (logged)."""
    removed = 0
    for folder in folders:
        for path in partial_saves(folder):
            try:
                path.unlink()
            except OSError as err:
                logger.warning("cannot remove %s, left by an interrupted save: %s", path, err)
                continue
            removed += 1
            logger.warning("removed %s, left by an interrupted save", path)
    return removed


class RunInUseError(LkdnError, RuntimeError):
    """Another live process owns the experiment folder; the message names it."""


class RunLock:
    """One process owns ``experiments/<name>``: a lock file ``experiments/.<name>.lock`` beside the folder.

    It is taken before the folder is archived or created, so a second run of the same name (a new
    one or ``--auto_resume``) is refused while the first is alive, instead of archiving the first
    run's folder under it. The lock holds ``<pid> <host> <time> <process start>``. A lock that is
    stale is taken over with a warning saying what it held: empty or unreadable, a process that
    no longer runs, or a process id now used by another process (it started after the lock was
    written, or it is not a Python process).

    Args:
        experiment_dir: the run's folder (``path.experiments_root``).
    """

    def __init__(self, experiment_dir: str | Path) -> None:
        folder = Path(experiment_dir)
        self.path = folder.parent / f".{folder.name}.lock"
        self.held = False

    def _text(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as err:
            return f"<unreadable: {err.strerror or err}>"

    def _owner(self) -> tuple[int, str] | None:
        fields = (self._text() or "").split()
        try:
            return int(fields[0]), fields[1]
        except (IndexError, ValueError):
            return None

    def _stale(self, text: str) -> str | None:
        """Why the lock holding ``text`` is stale (None: a live training process holds it); refuses other hosts."""
        fields = text.split()
        if not fields:
            return "is empty (a run stopped while taking it, or not written by lkdn)"
        try:
            pid, host = int(fields[0]), fields[1]
        except (IndexError, ValueError):
            return f"holds {text.strip()[:80]!r}, not '<pid> <host> <time>'"
        if host != socket.gethostname():
            raise RunInUseError(f"{self.path} is held by a process on host {host}; remove the lock if that "
                                "run has ended")
        if not _alive(pid):
            return f"is stale: process {pid} no longer runs"
        recorded = fields[3] if len(fields) > 3 else None
        started = _process_start(pid)
        if recorded is not None and started is not None and recorded != started:
            return f"holds PID {pid}, now the id of another process (started after the lock was written): stale"
        command = _process_command(pid)
        if command is not None and "python" not in command.lower():
            return f"holds PID {pid} of a process that is not training ({command[:80]})"
        return None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = self._text()
                if text == "":  # a process may have created the lock and not written it yet
                    time.sleep(0.2)
                    text = self._text()
                if text is None:  # removed meanwhile
                    continue
                reason = self._stale(text)
                if reason is None:
                    pid = int(text.split()[0])
                    command = _process_command(pid)
                    running = f" ({command[:80]})" if command else ""
                    raise RunInUseError(
                        f"{self.path.parent / self.path.name[1:-5]} is in use by training process {pid}{running} "
                        f"(lock {self.path}); wait for it to end, stop it, or give this run another name"
                    ) from None
                logger.warning("taking over the lock %s: it %s", self.path, reason)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {socket.gethostname()} {time_str()} {_process_start(os.getpid()) or '-'}\n")
            self.held = True
            _HELD.append(self)
            return self
        raise RunInUseError(f"cannot take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
        if self in _HELD:
            _HELD.remove(self)


_HELD: list[RunLock] = []


def release_run_locks() -> None:
    """Release every run lock this process holds (the end of a training run, however it ends)."""
    for lock in list(_HELD):
        lock.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (Linux ``/proc``; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _process_command(pid: int) -> str | None:
    """The command line of process ``pid`` (Linux ``/proc``; None elsewhere or when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip() or None


# -------------------------------------------------------------------------------- random states


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU, and CUDA when available), as basicsr's ``set_random_seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The current random states of this process, made of tensors, ints, floats and lists."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states from :func:`get_rng_state` (CUDA states only when CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
