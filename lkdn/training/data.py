"""Training and validation data loaders, built with basicsr's datasets, sampler and prefetchers.

Exact resumption. BasicSR's ``EnlargedSampler`` shuffles each epoch with a generator seeded by
the epoch number, so the order of samples is a function of the epoch alone. What is added:

* :class:`ResumableSampler` starts an epoch part-way (``set_start``), so a resumed run reads
  the samples the interrupted run had not read yet, without loading the ones it skips;
* :class:`PositionSeededDataset` seeds ``random`` and ``numpy.random`` before each sample
  from ``(manual_seed, epoch, position in the epoch)``, so random crops and flips do not
  depend on which worker loads a sample, on prefetching, on the number of workers, or on
  whether the run was interrupted. (basicsr's datasets draw their randomness from these two.)

With these, training from a saved state reproduces the uninterrupted run exactly.

Datasets are built by :func:`lkdn.data.safe_dataset.build_checked_dataset`: missing or empty
folders, unreadable images and mismatched LR/HR pairs are errors naming the files, and
``datasets.train.skip_bad_images: true`` replaces unreadable training images (deterministically,
so resuming stays exact).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from torch.utils.data import Dataset

from lkdn.data.safe_dataset import DataError, build_checked_dataset
from lkdn.training.state import DistInfo, get_rng_state, set_rng_state
from lkdn.utils import thaw

logger = logging.getLogger(__name__)

def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit seed for one training sample, a function of its place in training only."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, position]).generate_state(1)[0])


class ResumableSampler(EnlargedSampler):
    """basicsr's ``EnlargedSampler`` yielding ``(index, epoch, position)`` and able to start mid-epoch.

    ``position`` is the sample's place in the epoch's global order (all processes together),
    so a sample's seed does not depend on the rank that reads it.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, ratio: int = 1) -> None:
        super().__init__(dataset, num_replicas, rank, ratio)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples (of this process) in the current epoch."""
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        indices = super().__iter__()
        positions = range(self.rank, self.total_size, self.num_replicas)
        pairs = zip(indices, positions, strict=True)
        for index, position in itertools.islice(pairs, self.start, None):
            yield index, self.epoch, position


class PositionSeededDataset(Dataset):
    """Wraps a training dataset: item ``(index, epoch, position)`` is ``dataset[index]`` drawn with
    ``random`` and ``numpy.random`` seeded by :func:`sample_seed`.

    Args:
        dataset: the dataset (e.g. basicsr's ``PairedImageDataset``).
        seed: the experiment's ``manual_seed``.
    """

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.opt = getattr(dataset, "opt", {})

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _seed(self, epoch: int, position: int) -> None:
        seed = sample_seed(self.seed, epoch, position)
        random.seed(seed)
        np.random.seed(seed)

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        index, epoch, position = key
        self._seed(epoch, position)
        return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> list[Any]:
        """A whole batch. A dataset with its own ``__getitems__`` (one draw per batch, e.g. the scale of
        ``MultiScaleImageDataset``) gets the batch at once, seeded by the batch's first position."""
        batch_fetch = getattr(self.dataset, "__getitems__", None)
        if batch_fetch is None:
            return [self[key] for key in keys]
        self._seed(keys[0][1], keys[0][2])
        return batch_fetch([index for index, _, _ in keys])


class _SignalProofWorker:
    """A DataLoader ``worker_init_fn`` that makes the workers ignore SIGINT and SIGTERM, then runs ``init``.

    ``timeout``, Slurm and Ctrl-C in a terminal signal the whole process group: without this the
    workers die first and the trainer fails with "DataLoader worker killed by signal" before it can
    save the state it promises. The main process handles the signal (lkdn.training.state) and
    shuts its workers down itself.
    """

    def __init__(self, init: Any) -> None:
        self.init = init

    def __call__(self, worker_id: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if self.init is not None:
            self.init(worker_id)


AUTO_WORKERS = 4  # num_worker_per_gpu: auto -> this many loader workers, or fewer on a machine with fewer CPUs


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _loader_options(dataset_opt: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A copy of the dataset options adjusted to the device (CUDA prefetch and pinned memory need CUDA)
    and to the machine (``num_worker_per_gpu: auto``: min(4, CPUs))."""
    opt = thaw(dataset_opt)
    if opt.get("num_worker_per_gpu") == "auto":
        opt["num_worker_per_gpu"] = min(AUTO_WORKERS, available_cpus())
        logger.info("num_worker_per_gpu: auto -> %d loader workers (%d CPUs)", opt["num_worker_per_gpu"],
                    available_cpus())
    if device.type != "cuda":
        if opt.get("prefetch_mode") == "cuda":
            logger.warning("prefetch_mode cuda needs CUDA; training on %s, so the data is loaded without prefetching",
                           device)
            opt["prefetch_mode"] = None
        opt["pin_memory"] = False
    return opt


class TrainData:
    """The training set, its sampler and loader, and a fresh prefetcher per epoch.

    Args:
        dataset_opt: ``datasets.train``.
        dist_info: processes and device.
        seed: ``manual_seed`` (for the per-sample seeds).
    """

    def __init__(self, dataset_opt: Mapping[str, Any], *, dist_info: DistInfo, seed: int) -> None:
        for key in ("batch_size_per_gpu", "num_worker_per_gpu"):
            if key not in dataset_opt:
                raise ValueError(f"datasets.train: missing key {key!r}")
        self.opt = _loader_options(dataset_opt, dist_info.device)
        self.device = dist_info.device
        self.dataset = build_checked_dataset(self.opt, where="datasets.train")
        self.skip_bad_images = self.dataset.skip_bad_images
        ratio = int(self.opt["dataset_enlarge_ratio"])
        self.sampler = ResumableSampler(self.dataset, num_replicas=dist_info.world_size, rank=dist_info.rank,
                                        ratio=ratio)
        self.batch_size = int(self.opt["batch_size_per_gpu"])
        # num_gpu=1: one process drives one device (no DataParallel), so the batch is batch_size_per_gpu.
        self.loader = build_dataloader(PositionSeededDataset(self.dataset, seed=seed), self.opt, num_gpu=1,
                                       dist=dist_info.dist, sampler=self.sampler, seed=seed)
        self.loader.worker_init_fn = _SignalProofWorker(self.loader.worker_init_fn)
        self.batches_per_epoch = len(self.sampler) // self.batch_size
        if self.batches_per_epoch == 0:
            raise DataError(
                f"datasets.train: {len(self.dataset)} images x dataset_enlarge_ratio {ratio} / {dist_info.world_size} "
                f"process(es) give fewer samples than batch_size_per_gpu {self.batch_size}; add images, raise "
                "dataset_enlarge_ratio or lower batch_size_per_gpu"
            )

    def probe(self) -> None:
        """Load the first sample once, the random states kept as they were: an unreadable first
        image or a ``gt_size`` larger than the images is an error before the run folder is touched."""
        state = get_rng_state()
        try:
            if hasattr(self.dataset, "__getitems__"):
                self.dataset.__getitems__([0])
            else:
                self.dataset[0]
        finally:
            set_rng_state(state)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> CPUPrefetcher | CUDAPrefetcher:
        """A prefetcher over the batches of ``epoch``, from batch number ``start_batch`` on."""
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(start_batch * self.batch_size)
        if self.opt.get("prefetch_mode") == "cuda":
            return CUDAPrefetcher(self.loader, {"num_gpu": 1})
        return CPUPrefetcher(self.loader)


def build_val_loaders(datasets_opt: Mapping[str, Any], *, device: torch.device) -> list[torch.utils.data.DataLoader]:
    """A loader (batch 1, in order) for every ``val`` / ``val_*`` dataset."""
    loaders = []
    for phase, dataset_opt in datasets_opt.items():
        if str(phase).split("_")[0] != "val":
            continue
        opt = _loader_options(dataset_opt, device)
        opt["prefetch_mode"] = None
        dataset = build_checked_dataset(opt, where=f"datasets.{phase}")
        logger.info("Validation set %s: %d images", opt.get("name", phase), len(dataset))
        loaders.append(build_dataloader(dataset, opt, num_gpu=1, dist=False, sampler=None))
    return loaders
