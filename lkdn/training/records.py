"""What a training run records: log lines, TensorBoard scalars and two JSON-lines files.

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

import datetime
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lkdn.utils import thaw, write_text_atomic

logger = logging.getLogger(__name__)

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
