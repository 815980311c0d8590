"""The training pipeline behind ``lkdn/train.py`` and what a run records.

**The training pipeline behind ``lkdn/train.py`` (BasicSR's ``train_pipeline``, CPU- and DDP-safe).**

``lkdn-train -opt <yml> [--auto-resume] [--debug] [--launcher none|pytorch|slurm]
[--force-yml key=value ...]`` (``python lkdn/train.py``). Folders are created under the current directory (or
``--root-path``): ``experiments/<name>/`` and ``tb_logger/<name>/``, as BasicSR does when run
from its repository root.

**What a training run records: log lines, TensorBoard scalars and two JSON-lines files.**

* Log lines (``train_<name>_<time>.log`` and stderr) every ``logger.print_freq`` iterations, and
  at the first iterations of each start (:data:`FIRST_LINES`) whatever ``print_freq`` is, so a
  slow start shows that training runs. On an interactive terminal (stderr a TTY) a progress bar
  (tqdm) stays below the log lines; elsewhere (files, pipes, CI) there is none.
* ``experiments/<name>/train_log.jsonl``: one object per ``logger.print_freq`` iterations:
  ``{"iter", "epoch", "lr", "time", "data_time", "<loss name>": value, ...}`` (``lr`` of the
  first parameter group; ``time`` and ``data_time`` in seconds per iteration).
* ``experiments/<name>/metrics.jsonl``: one object per validation and dataset:
  ``{"iter", "epoch", "dataset", "<metric name>": value, ...}``.
* ``tb_logger/<name>/``: scalars ``losses/<name>``, ``train/lr``, ``metrics/<dataset>/<metric>``.
* Weights & Biases (``logger.wandb.project``, the ``wandb`` package): the same scalars under the
  same names, the options as the run's config; the run id is kept in
  ``experiments/<name>/wandb_id.txt``, so a resumed training continues the same W&B run
  (``logger.wandb.resume_id`` names one explicitly, as in BasicSR).
* :class:`BestMetrics`: the best value and iteration of each metric per validation set, kept in
  the training state (scoring itself is :func:`lkdn.evaluate.evaluate`).

Only the main process records; on the other ranks every :class:`TrainingRecords` method is a
no-op. On resume, lines of the JSON files past the resumed iteration (written after the saved
state) are dropped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import logging.handlers
import math
import os
import platform
import random
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from lkdn.checkpoint import CheckpointError, save_file
from lkdn.data.safe_dataset import skipped_in_batch
from lkdn.errors import LkdnError
from lkdn.models import build_model
from lkdn.options import Val, apply_override, parse_options, with_defaults
from lkdn.training.data import TrainData, build_val_loaders
from lkdn.training.state import (
    DistInfo,
    RunLock,
    StopRequest,
    all_reduce_mean,
    any_process,
    archive_and_create,
    barrier,
    cleanup,
    get_rng_state,
    init_distributed,
    latest_state,
    load_training_state,
    make_experiment_dirs,
    network_file_for_state,
    release_run_locks,
    remove_partial_saves,
    seed_everything,
    set_rng_state,
    time_str,
)
from lkdn.utils import parse_train_args as parse_args
from lkdn.utils import setup_logging, thaw, write_text_atomic

logger = logging.getLogger("lkdn.train")

TRAIN_LOG = "train_log.jsonl"
METRICS_LOG = "metrics.jsonl"
FIRST_LINES = (1, 2, 5, 10, 20)
"""Iterations after each start (1: the first one trained) that get a log line whatever ``logger.print_freq``
says; log lines only: ``train_log.jsonl``, TensorBoard and W&B keep the ``print_freq`` cadence."""


def truncate_jsonl(path: Path, *, after_iter: int) -> None:
    """Drop the records of ``path`` whose ``iter`` is beyond ``after_iter`` (atomic rewrite)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if int(record.get("iter", 0)) <= after_iter:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))


class IterationTimer:
    """Average time per iteration and data time per iteration since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.iter_time = 0.0
        self.data_time = 0.0
        self.count = 0

    def add(self, iter_time: float, data_time: float) -> None:
        self.iter_time += iter_time
        self.data_time += data_time
        self.count += 1

    @property
    def averages(self) -> tuple[float, float]:
        if self.count == 0:
            return 0.0, 0.0
        return self.iter_time / self.count, self.data_time / self.count


def progress_bar(total_iter: int, start_iter: int) -> Any:
    """A tqdm bar of the iterations on stderr when it is an interactive terminal, else None."""
    try:
        interactive = sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        interactive = False
    if not interactive:
        return None
    from tqdm import tqdm  # lazy: an interactive terminal only

    return tqdm(total=total_iter, initial=start_iter, desc="Training", unit="iter", file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, smoothing=0.05)


WANDB_ID = "wandb_id.txt"


def start_wandb(options: Mapping[str, Any], *, wandb_opt: Mapping[str, Any], experiment_dir: Path,
                resume_iter: int) -> Any:
    """A W&B run for this training (resumed when the experiment folder holds its id); ``wandb`` must be installed."""
    try:
        import wandb  # optional: logger.wandb
    except ImportError as err:
        raise ValueError("logger.wandb.project is set but the wandb package is not installed: pip install wandb, "
                         "or remove logger.wandb") from err
    id_file = experiment_dir / WANDB_ID
    run_id = wandb_opt.get("resume_id") or (id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None)
    run_id = run_id or wandb.util.generate_id()
    write_text_atomic(id_file, run_id + "\n")
    run = wandb.init(project=wandb_opt["project"], entity=wandb_opt.get("entity"), id=run_id, resume="allow",
                     name=str(options.get("name")), config=thaw(options), dir=str(experiment_dir),
                     mode=wandb_opt.get("mode") or "online")
    logger.info("Weights & Biases run %s (project %s)%s", run_id, wandb_opt["project"],
                f", resumed at iteration {resume_iter}" if resume_iter else "")
    return run


class TrainingRecords:
    """Log lines, TensorBoard, W&B and JSON-lines records of one run.

    Args:
        name: experiment name (the prefix of log lines).
        experiment_dir: ``experiments/<name>``.
        tb_dir: ``tb_logger/<name>``, or None for no TensorBoard.
        enabled: False on ranks other than 0.
        total_iter: for the ETA.
        resume_iter: the iteration training starts from (0 for a fresh run).
        wandb: ``logger.wandb`` (used when it names a ``project``) and the options for the run's config.
    """

    def __init__(
        self, *, name: str, experiment_dir: str | Path, tb_dir: str | Path | None, enabled: bool, total_iter: int,
        resume_iter: int = 0, wandb: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.enabled = enabled
        self.total_iter = total_iter
        self.start_iter = resume_iter
        self.start_time = time.time()
        self.dir = Path(experiment_dir)
        self.writer = None
        self.bar = None
        self.wandb = None
        if not enabled:
            return
        for file in (TRAIN_LOG, METRICS_LOG):
            truncate_jsonl(self.dir / file, after_iter=resume_iter)
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # optional: TensorBoard logging only

            self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=resume_iter + 1 if resume_iter else None)
        if wandb is not None and (wandb[0] or {}).get("project"):
            self.wandb = start_wandb(wandb[1], wandb_opt=wandb[0], experiment_dir=self.dir, resume_iter=resume_iter)
        self.bar = progress_bar(total_iter, resume_iter)

    def first_line(self, current_iter: int) -> bool:
        """Whether ``current_iter`` is one of the :data:`FIRST_LINES` of this start (the same on every rank)."""
        return current_iter - self.start_iter in FIRST_LINES

    def advance(self, current_iter: int) -> None:
        """Move the progress bar (when there is one) to ``current_iter``."""
        if self.bar is not None:
            self.bar.update(current_iter - self.bar.n)

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        """``values`` to TensorBoard and W&B at ``step``."""
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def validated(self, current_iter: int) -> bool:
        """Whether ``metrics.jsonl`` already holds a validation of ``current_iter``."""
        path = self.dir / METRICS_LOG
        if not path.is_file():
            return False
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("iter", -1)) == current_iter:
                    return True
            except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
                continue
        return False

    def _append(self, file: str, record: Mapping[str, Any]) -> None:
        with open(self.dir / file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def training_line(
        self, *, epoch: int, current_iter: int, lrs: list[float], losses: Mapping[str, float], iter_time: float,
        data_time: float, record: bool = True,
    ) -> None:
        """Log one training line (iteration, epoch, lr, losses, time per iteration, data time, ETA).

        ``record``: also to ``train_log.jsonl``, TensorBoard and W&B (not for the :data:`FIRST_LINES`).
        """
        if not self.enabled:
            return
        done = max(current_iter - self.start_iter, 1)
        elapsed = time.time() - self.start_time
        eta = datetime.timedelta(seconds=int(elapsed / done * (self.total_iter - current_iter)))
        lr_text = ",".join(f"{lr:.3e}" for lr in lrs)
        loss_text = " ".join(f"{k}: {v:.4e}" for k, v in losses.items())
        logger.info("[%s][epoch:%3d, iter:%8d, lr:(%s)] [eta: %s, time (data): %.3f (%.3f)] %s", self.name, epoch,
                    current_iter, lr_text, eta, iter_time, data_time, loss_text)
        if not record:
            return
        self._append(TRAIN_LOG, {"iter": current_iter, "epoch": epoch, "lr": lrs[0], "time": iter_time,
                                 "data_time": data_time, **losses})
        self._scalars({**{f"losses/{k}": v for k, v in losses.items()}, "train/lr": lrs[0]}, current_iter)

    def validation(
        self, *, epoch: int, current_iter: int, dataset: str, values: Mapping[str, float],
        best: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Log one validation result with the best value so far of each metric."""
        if not self.enabled:
            return
        parts = [f"{k}: {v:.4f} (best {best[k]['val']:.4f} @ iter {best[k]['iter']})" for k, v in values.items()]
        logger.info("Validation %s, iter %d: %s", dataset, current_iter, "; ".join(parts))
        self._append(METRICS_LOG, {"iter": current_iter, "epoch": epoch, "dataset": dataset, **values})
        self._scalars({f"metrics/{dataset}/{k}": v for k, v in values.items()}, current_iter)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


MetricOptions = Mapping[str, Mapping[str, Any]]


class BestMetrics:
    """Best value and iteration of each metric per validation set (BasicSR's rule: ties update)."""

    def __init__(self, metrics: MetricOptions | None) -> None:
        self.better = {name: opt.get("better", "higher") for name, opt in (metrics or {}).items()}
        for name, better in self.better.items():
            if better not in ("higher", "lower"):
                raise ValueError(f"val.metrics.{name}.better: expected higher or lower, got {better!r}")
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    def update(self, dataset: str, values: Mapping[str, float], current_iter: int) -> dict[str, dict[str, Any]]:
        """Record one validation of ``dataset``; returns its best values so far."""
        record = self.results.setdefault(dataset, {})
        for name, value in values.items():
            higher = self.better[name] == "higher"
            best = record.setdefault(name, {"val": float("-inf") if higher else float("inf"), "iter": -1})
            if (value >= best["val"]) if higher else (value <= best["val"]):
                best.update(val=float(value), iter=int(current_iter))
        return record

    def state_dict(self) -> dict[str, Any]:
        """The best values, as the training state's ``best_metric_results``."""
        return {d: {m: dict(v) for m, v in r.items()} for d, r in self.results.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.results = {d: {m: dict(v) for m, v in r.items()} for d, r in state.items()}



STOP_CHECK_EVERY = 10  # iterations between agreeing on a stop signal under DDP
DEFAULT_MAX_BAD_STEPS = 10
BLOWN_UP_WEIGHT = 1e4  # a weight beyond this (trained SR networks stay far below 100) means the run diverged


class DivergenceError(LkdnError, RuntimeError):
    """Training stopped after ``train.max_bad_steps`` consecutive steps with a non-finite loss."""


def _iterations(section: Mapping[str, Any], key: str, default: int | None) -> int | None:
    """A count of iterations the schema validated (a whole positive number, possibly written as a float)."""
    value = section.get(key, default)
    return None if value is None else int(value)


def _write_options(text: str, overrides: Sequence[str], target: Path, argv: Sequence[str]) -> None:
    """The option file as written (``text``, read once by :func:`lkdn.options.parse_options`) with its overrides."""
    raw = yaml.safe_load(text)
    for entry in overrides:
        apply_override(raw, entry)
    header = f"# written by lkdn/train.py on {time_str()}\n# command: {shlex.join(['lkdn/train.py', *argv])}\n"
    write_text_atomic(target, header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def _environment() -> str:
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no CUDA"
    return f"Python {platform.python_version()}, torch {torch.__version__}, {cuda}"


LOGGERS = ("lkdn", "basicsr")


class _SetupLog(logging.handlers.MemoryHandler):
    """Keeps the set-up's log records until the run folder (and its log file) exists."""

    def __init__(self) -> None:
        super().__init__(capacity=1 << 16, flushLevel=logging.CRITICAL + 1)

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802 (logging's name)
        return False  # flushed once, into the log file


def _drop_setup_log() -> None:
    """Detach :class:`_SetupLog` handlers (after the set-up, or when it failed)."""
    for name in LOGGERS:
        log = logging.getLogger(name)
        for handler in [h for h in log.handlers if isinstance(h, _SetupLog)]:
            log.removeHandler(handler)


class Trainer:
    """One training run: set-up from options, the loop, saving and resuming."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str], root_path: Path) -> None:
        self.args = args
        self.root_path = Path(root_path)
        self.opt = parse_options(args.opt, is_train=True, overrides=args.force_yml, root_path=root_path,
                                 debug=args.debug)
        self.paths = self.opt.path
        self.setup_distributed()
        self.configure_torch()
        self.read_iteration_options()
        self.load_resume_state_and_seed()
        self.lock_run_folder()
        # The data and the network are built before the run folder is archived or created, so a run
        # that fails on its inputs leaves the previous folder as it was; what is logged meanwhile
        # goes to stderr and, once the folder exists, to the log file.
        self.start_setup_log()
        self.build_data()
        self.build_model_and_resume()
        self.prepare_run_folder(argv)
        barrier(self.info)
        self.start_log_file()
        self.open_records()

    # ------------------------------------------------------------------ set-up steps
    def setup_distributed(self) -> None:
        """Start the process group (``--launcher``, ``dist_params``) and pick this process's device."""
        dist_params = self.opt.section("dist_params")
        self.info: DistInfo = init_distributed(self.args.launcher, use_cuda=self.opt.num_gpu > 0,
                                               backend=dist_params.get("backend"), port=dist_params.get("port"))

    def configure_torch(self) -> None:
        """Set cuDNN and deterministic algorithms (``train.deterministic``); warn of unused GPUs."""
        opt = self.opt
        if (opt.get("train") or {}).get("deterministic"):
            # the same kernels on every run (and every resume): slower, but bit-identical on a GPU too
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as BasicSR: fixed patch sizes, fastest kernels
        if not self.info.dist and opt["num_gpu"] > 1:
            logging.getLogger("lkdn").warning(
                "%d GPUs visible; one process uses one. Launch with torchrun --nproc_per_node=%d ... --launcher pytorch",
                opt["num_gpu"], opt["num_gpu"])

    def read_iteration_options(self) -> None:
        """Read the iteration counts and frequencies of ``train``, ``logger`` and ``val``."""
        train_opt = self.opt.section("train")
        self.total_iter = _iterations(train_opt, "total_iter", None)
        if self.total_iter is None:
            raise ValueError(f"{self.args.opt}: train.total_iter is missing (the number of training iterations)")
        log_opt = self.opt.section("logger")
        self.print_freq = int(log_opt["print_freq"])  # the logger section and its defaults: filled in by the validation
        self.save_freq = int(log_opt["save_checkpoint_freq"])
        self.max_bad_steps = _iterations(train_opt, "max_bad_steps", DEFAULT_MAX_BAD_STEPS)
        self.skipped_images = 0
        val_opt = self.opt.section("val")
        self.val_freq = _iterations(val_opt, "val_freq", None) if val_opt else None
        self.save_img = bool(with_defaults(val_opt, Val)["save_img"])

    def load_resume_state_and_seed(self) -> None:
        """Load the state to resume from, then seed every RNG (``manual_seed``, the state's, or a random one)."""
        self.state_path, self.state = self._find_resume_state()
        seed = self.opt.get("manual_seed")
        if seed is None:
            seed = self.state.get("manual_seed") if self.state else random.randint(1, 10000)
        self.seed = int(seed)
        seed_everything(self.seed + self.info.rank)

    def lock_run_folder(self) -> None:
        """Name the run and TensorBoard folders and take the run folder's lock (rank 0)."""
        opt = self.opt
        self.experiment_dir = Path(self.paths["experiments_root"])
        use_tb = bool(opt["logger"]["use_tb_logger"]) and "debug" not in opt.name
        self.tb_dir = self.root_path / "tb_logger" / opt.name if use_tb else None
        if self.info.is_main:
            try:
                RunLock(self.experiment_dir).acquire()  # before anything is archived: one process per run folder
            except OSError as err:
                raise self._folder_error(err) from err

    def _folder_error(self, err: OSError) -> ValueError:
        """The clear error for an experiment folder that cannot be written."""
        return ValueError(
            f"cannot write the experiment folder {self.experiment_dir}: {err.strerror or err}; make "
            f"{self.root_path / 'experiments'} writable or give another --root-path"
        )

    def start_setup_log(self) -> None:
        """Log to stderr, keep the set-up's records for the log file, and log the environment and options."""
        from basicsr.utils import get_root_logger

        get_root_logger()  # let basicsr mark its logger as set up, then replace its handlers
        setup_logging(None, rank=self.info.rank)
        self._setup_log = _SetupLog()
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._setup_log)
        logger.info("%s", _environment())
        logger.info("%d process(es), launcher %s, backend %s, this process on %s", self.info.world_size,
                    self.info.launcher, self.info.backend or "none", self.info.device)
        logger.info("Options (%s):\n%s", self.args.opt, yaml.safe_dump(self.opt, sort_keys=False))

    def build_data(self) -> None:
        """Check the ``datasets`` phases, build the training data and the validation loaders (rank 0)."""
        datasets = self.opt.get("datasets") or {}
        for phase in datasets:
            if phase != "train" and str(phase).split("_")[0] != "val":
                raise ValueError(f"{self.args.opt}: datasets.{phase}: expected train, val or val_<n>")
        if "train" not in datasets:
            raise ValueError(f"{self.args.opt}: datasets.train is missing")
        self.data = TrainData(datasets["train"], dist_info=self.info, seed=self.seed)
        self.data.probe()
        self.val_loaders = build_val_loaders(datasets, device=self.info.device) if self.info.is_main else []
        total_epochs = math.ceil(self.total_iter / self.data.batches_per_epoch)
        logger.info(
            "Training statistics: %d images, enlarge ratio %s, batch %d per process x %d process(es), "
            "%d iterations per epoch, %d iterations (%d epochs), device %s",
            len(self.data.dataset), datasets["train"]["dataset_enlarge_ratio"], self.data.batch_size,
            self.info.world_size, self.data.batches_per_epoch, self.total_iter, total_epochs, self.info.device,
        )

    def build_model_and_resume(self) -> None:
        """Build the model and the best-metric records; restore the resume state into them."""
        self.model = build_model(self.opt, dist_info=self.info)
        self.best = BestMetrics(self.opt.section("val").get("metrics"))
        self.start_iter, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.resume_rng: dict[str, Any] | None = None
        if self.state is not None:
            self._resume()

    def prepare_run_folder(self, argv: Sequence[str]) -> None:
        """Create (or archive and re-create) the run folders and write the options file (rank 0)."""
        if not self.info.is_main:
            return
        try:
            make_experiment_dirs(self.paths, fresh=self.state is None)
            if self.state is not None:
                remove_partial_saves(self.paths["models"], self.paths["training_states"])
            if self.tb_dir is not None and self.state is None:
                archive_and_create(self.tb_dir)
            _write_options(self.opt.text, self.args.force_yml,
                           self.experiment_dir / f"{self.opt['name']}_options.yml", argv)
        except OSError as err:
            raise self._folder_error(err) from err

    def start_log_file(self) -> None:
        """Log to the run's log file (rank 0), starting with the set-up's kept records."""
        _drop_setup_log()
        log_file = self.experiment_dir / f"train_{self.opt['name']}_{time_str()}.log"
        setup_logging(log_file if self.info.is_main else None, rank=self.info.rank)
        files = [h for h in logging.getLogger("lkdn").handlers if isinstance(h, logging.FileHandler)]
        if files:
            self._setup_log.setTarget(files[0])
            self._setup_log.flush()  # the set-up's lines, into the log file
        self._setup_log.close()

    def open_records(self) -> None:
        """Open the run's records: log lines, TensorBoard and wandb (rank 0)."""
        opt = self.opt
        self.records = TrainingRecords(
            name=opt["name"], experiment_dir=self.experiment_dir, tb_dir=self.tb_dir, enabled=self.info.is_main,
            total_iter=self.total_iter, resume_iter=self.start_iter,
            wandb=(opt.section("logger").get("wandb") or {}, opt) if "debug" not in opt.name else None,
        )

    # ------------------------------------------------------------------ resume
    def _find_resume_state(self) -> tuple[Path | None, dict[str, Any] | None]:
        """The state to resume from (``--auto_resume`` or ``path.resume_state``) and its path, or ``None``s."""
        path = None
        if self.args.auto_resume:
            path = latest_state(self.paths["training_states"])
            if path is None:
                logging.getLogger("lkdn").info("--auto-resume: no state in %s, starting afresh",
                                               self.paths["training_states"])
        elif self.paths.get("resume_state"):
            path = Path(self.paths["resume_state"])
        if path is None:
            return None, None
        return path, load_training_state(path)

    def _resume(self) -> None:
        """Load the state's networks, optimizer, schedule, position, best metrics and RNG state."""
        state = self.state
        assert state is not None and self.state_path is not None
        current_iter = int(state["iter"])
        if self.paths.get("pretrain_network_g"):
            logger.info("Resuming: path.pretrain_network_g is ignored, networks come from the state's iteration")
        self.model.load_networks(network_file_for_state(self.paths["models"], self.state_path, current_iter,
                                                        save_format=self.model.save_format))
        self.model.load_training_state(state)
        if self.model.reschedule:  # the new schedule, replayed up to the resumed iteration
            with warnings.catch_warnings():  # stepping schedulers without optimizer steps is the point here
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                for it in range(1, current_iter + 1):
                    self.model.update_learning_rate(it)
            logger.info("Learning rate at iteration %d under the new schedule: %s", current_iter,
                        ", ".join(f"{lr:.3e}" for lr in self.model.current_learning_rates()))
        self.start_iter = current_iter
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        if "batch_in_epoch" not in state:
            logger.warning("%s has no sampler position (not written by lkdn): the epoch restarts", self.state_path)
        self.best.load_state_dict(state.get("best_metric_results") or {})
        self.resume_rng = state.get("rng")
        self.skipped_images = int(state.get("skipped_images", 0))
        logger.info("Resuming training from %s: epoch %d, iteration %d", self.state_path, self.epoch, current_iter)

    # ------------------------------------------------------------------ saving
    def save(self, current_iter: int) -> None:
        """Networks ``models/net_g_<iter>.pth`` and state ``training_states/<iter>.state`` (rank 0).

        The network is written first, the state last: a state on disk always has its network. A
        failed write (disk full) is a :class:`CheckpointError` naming the latest complete state.
        """
        if not self.info.is_main:
            return
        logger.info("Saving networks and training state at iteration %d", current_iter)
        state = {
            "epoch": self.epoch, "iter": current_iter, "batch_in_epoch": self.batch_in_epoch,
            **self.model.training_state(),
            "rng": get_rng_state(), "manual_seed": self.seed,
            "best_metric_results": self.best.state_dict(), "skipped_images": self.skipped_images,
        }
        try:
            self.model.save_networks(self.paths["models"], current_iter)
            save_file(state, Path(self.paths["training_states"]) / f"{current_iter}.state")
        except CheckpointError as err:
            raise CheckpointError(f"{err}\n{self._latest_state_text()}") from err

    def _latest_state_text(self) -> str:
        """A sentence naming the latest complete training state, for error messages."""
        latest = latest_state(self.paths["training_states"])
        if latest is None:
            return "No complete training state exists yet."
        return f"The latest complete training state is {latest}; continue from it with --auto-resume."

    def _check_step(self, current_iter: int, batch: dict[str, Any]) -> None:
        """Count replaced unreadable images; stop after ``max_bad_steps`` skipped steps in a row."""
        if self.data.skip_bad_images:
            skipped = skipped_in_batch(batch)
            if skipped:
                self.skipped_images += skipped
                logger.warning("Iteration %d: %d unreadable training sample(s) replaced (%d so far)", current_iter,
                               skipped, self.skipped_images)
        if self.model.bad_steps >= self.max_bad_steps:
            largest = max((float(p.detach().abs().max()) for p in self.model.net_g.parameters()), default=0.0)
            if largest <= BLOWN_UP_WEIGHT:
                weights = (f"skipped steps change no weights, and the network's weights are still of a sane size "
                           f"(largest |w| = {largest:.3g}). {self._latest_state_text()}")
            else:
                weights = (f"the weights had already blown up before the loss became non-finite (largest |w| = "
                           f"{largest:.3g}): the latest checkpoints are unusable; restart from scratch or from an earlier "
                           "state in training_states/ with a lower learning rate.")
            raise DivergenceError(
                f"training stopped at iteration {current_iter}: {self.model.bad_steps} consecutive steps with a "
                f"non-finite loss or gradient (train.max_bad_steps: {self.max_bad_steps}); {weights} To avoid it, "
                "lower train.optim_g.lr, set train.grad_clip, turn off train.amp or check the data."
            )

    def validate(self, current_iter: int) -> None:
        """Validate on every validation set (rank 0), keep the best values and record them."""
        for loader in self.val_loaders:
            name = loader.dataset.opt.get("name", "val")
            values = self.model.validation(loader, current_iter=current_iter, save_img=self.save_img)
            best = self.best.update(name, values, current_iter)
            self.records.validation(epoch=self.epoch, current_iter=current_iter, dataset=name, values=values,
                                    best=best)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """Train until ``total_iter`` or a stop signal; returns the exit status."""
        stop = StopRequest()
        current_iter, validated_at = self._start_loop()
        start = time.time()
        try:
            current_iter, validated_at = self._train_epochs(current_iter, validated_at, stop)
            if stop.requested:
                return self._stopped(current_iter, stop)
            self._finish(current_iter, validated_at, start)
            return 0
        finally:
            stop.restore()
            self.records.close()

    def _start_loop(self) -> tuple[int, int | None]:
        """Restore the resumed RNG state and log where training starts; returns the iteration and the last validated one."""
        current_iter = self.start_iter
        validated_at = None
        if self.resume_rng is not None:
            set_rng_state(self.resume_rng)
        if current_iter >= self.total_iter and self.records.validated(current_iter):
            validated_at = current_iter  # a finished run resumed: nothing to train, its validation is on record
            logger.info("Training already reached train.total_iter %d; nothing to do", self.total_iter)
        else:
            logger.info("Start training from epoch %d, iteration %d", self.epoch, current_iter)
        return current_iter, validated_at

    def _train_epochs(self, current_iter: int, validated_at: int | None, stop: StopRequest) -> tuple[int, int | None]:
        """Iterate over epochs until ``total_iter`` or a stop; returns the iteration and the last validated one."""
        timer = IterationTimer()
        while current_iter < self.total_iter and not stop.requested:
            batches = self.data.epoch_batches(self.epoch, self.batch_in_epoch)
            mark = time.time()
            batch = batches.next()
            while batch is not None:
                current_iter += 1
                self._train_step(current_iter, batch, timer, mark)
                if self._save_and_validate(current_iter):
                    validated_at = current_iter
                if self._stop_agreed(current_iter, stop) or current_iter >= self.total_iter:
                    break
                mark = time.time()
                batch = batches.next()
            else:  # the epoch is exhausted
                self.epoch += 1
                self.batch_in_epoch = 0
        return current_iter, validated_at

    def _train_step(self, current_iter: int, batch: dict[str, Any], timer: IterationTimer, mark: float) -> None:
        """One iteration on ``batch`` (loaded since ``mark``): learning rate, step, checks and the log line."""
        data_time = time.time() - mark
        self.batch_in_epoch += 1
        self.model.update_learning_rate(current_iter)
        self.model.feed_data(batch)
        self.model.optimize_parameters(current_iter)
        self._check_step(current_iter, batch)
        timer.add(time.time() - mark, data_time)
        self.records.advance(current_iter)
        regular = current_iter % self.print_freq == 0
        if regular or self.records.first_line(current_iter):
            losses = all_reduce_mean(self.model.log_dict, self.info)
            self.records.training_line(epoch=self.epoch, current_iter=current_iter,
                                       lrs=self.model.current_learning_rates(), losses=losses,
                                       iter_time=timer.averages[0], data_time=timer.averages[1], record=regular)
            timer.reset()

    def _save_and_validate(self, current_iter: int) -> bool:
        """Save and validate when their frequencies say so; returns whether it validated."""
        if self.save_freq and current_iter % self.save_freq == 0:
            self.save(current_iter)
        if self.val_freq and current_iter % self.val_freq == 0:
            self.validate(current_iter)
            return True
        return False

    def _stop_agreed(self, current_iter: int, stop: StopRequest) -> bool:
        """Whether any process got a stop signal (under DDP asked every ``STOP_CHECK_EVERY`` iterations)."""
        if not self.info.dist or current_iter % STOP_CHECK_EVERY == 0:
            if any_process(stop.requested, self.info):
                stop.signum = stop.signum or int(signal.SIGTERM)  # signalled on another rank
                return True
        return False

    def _stopped(self, current_iter: int, stop: StopRequest) -> int:
        """Save the state of a run stopped by a signal; returns its exit status, 128 + the signal."""
        if not (self.save_freq and current_iter % self.save_freq == 0):
            self.save(current_iter)
        logger.warning("Stopped by signal %d at iteration %d; resume with --auto-resume", stop.signum, current_iter)
        return 128 + int(stop.signum or 0)

    def _finish(self, current_iter: int, validated_at: int | None, start: float) -> None:
        """Save the ``latest`` networks and validate them unless the last iteration already was."""
        if self.skipped_images:
            logger.warning("%d unreadable training sample(s) were replaced during this run (skip_bad_images)",
                           self.skipped_images)
        logger.info("End of training after %.0f s; saving the latest networks", time.time() - start)
        if self.info.is_main:
            self.model.save_networks(self.paths["models"], "latest")
        if self.opt.get("val") and validated_at != current_iter:
            self.validate(current_iter)
        barrier(self.info)


def train_pipeline(root_path: str | os.PathLike[str] | None = None, argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, and return the exit status (0, or 128 + signal when stopped)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    root = Path(args.root_path or root_path or Path.cwd()).resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"--root-path {root} is a file: give the folder for experiments/ and tb_logger/")
    trainer = None
    try:
        trainer = Trainer(args, argv, root)
        return trainer.run()
    except (LkdnError, ValueError) as err:  # what lkdn-train reports as one line (lkdn.utils.run)
        if trainer is not None:  # logging is set up: the reason goes to the log file too
            logger.error("%s", err)
            err.lkdn_logged = True  # type: ignore[attr-defined]
        raise
    finally:
        _drop_setup_log()
        release_run_locks()
        if trainer is not None:
            cleanup(trainer.info)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
