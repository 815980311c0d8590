"""Multi-scale training data: one HR set, LR images made on the fly at a scale drawn per batch.

VDSR (Kim et al. 2016) trains one network on x2, x3 and x4 at once. This dataset reads HR
images only, crops a GT patch, and makes its LR counterpart with MATLAB-style bicubic
downscaling (``basicsr.utils.matlab_functions.imresize``, the benchmark protocol), rounded to
8-bit levels like stored LR images.

Two registered forms:

* ``MultiScaleImageDataset``: ``lq`` at LR size, one scale per batch. A PyTorch data loader
  hands the indices of a whole batch to :meth:`MultiScaleImageDataset.__getitems__`, which
  draws one scale from ``scales`` for all of them, so the LR patches of a batch have one size
  and collate. Items fetched one by one (``dataset[i]``, or through a wrapper dataset without
  ``__getitems__``) draw their own scale. Every item carries its ``scale``, for a model that
  passes it to the network (``VDSR.forward(x, scale=...)``).
* ``MultiScaleUpsampledImageDataset``: ``lq`` bicubic-upsampled back to the GT size with
  :func:`lkdn.archs.vdsr_arch.upsample_bicubic`, the function VDSR applies inside. Items of any
  scales collate, so this form works in any training loop: a VDSR built with ``upscale: 1``
  (top-level ``scale: 1``) trains on all scales at once, and its weights then run on LR
  inputs at any scale ``s`` with ``upscale: s``, computing exactly the same function.

Options (the ``datasets.<phase>`` section):
    dataroot_gt: HR folder, or LMDB with ``io_backend.type: lmdb``.
    io_backend: ``{type: disk}`` or ``{type: lmdb}``.
    scales: list of integer scales, e.g. ``[2, 3, 4]``; validation needs exactly one.
    gt_size: GT patch size (training), a multiple of every scale.
    use_hflip, use_rot: random flips and rotations (training).
    color: ``y`` for the Y channel (BT.601) only.
    phase: ``train`` crops patches; other phases use whole images cropped to a multiple of the scale.
    holdout: a number of images set aside for validation (default 0: none), chosen by a hash of
        their file names: the same images on every run and machine, spread over the folder, and
        only a few change when images are added.
    subset: ``train`` (default: the images not held out) or ``holdout`` (the held-out ones); give
        the training and the validation section the same ``holdout``, ``subset: holdout`` in the
        latter, to validate on images the network never trains on.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment, mod_crop
from basicsr.utils import FileClient, bgr2ycbcr, img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from lkdn.archs.vdsr_arch import upsample_bicubic
from lkdn.data.safe_dataset import decode_image


def _check_scales(scales: Any, where: str) -> list[int]:
    if not isinstance(scales, Sequence) or isinstance(scales, str) or not scales:
        raise ValueError(f"{where}.scales: expected a non-empty list of integer scales, got {scales!r}")
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"{where}.scales: {scale!r} is not a positive integer scale")
    return list(scales)


def split_holdout(paths: Sequence[str], holdout: Any, subset: Any, where: str) -> list[str]:
    """The ``subset`` (``train`` or ``holdout``) of ``paths`` when ``holdout`` images are held out (see the module)."""
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0:
        raise ValueError(f"{where}.holdout: expected a number of images (0 or more), got {holdout!r}")
    if subset not in ("train", "holdout"):
        raise ValueError(f"{where}.subset: expected train or holdout, got {subset!r}")
    if holdout >= len(paths):
        raise ValueError(f"{where}.holdout: {holdout} of {len(paths)} images would leave none to train on")
    if subset == "holdout" and holdout == 0:
        raise ValueError(f"{where}.subset: holdout needs holdout: N (the number of images to hold out)")

    def rank(path: str) -> bytes:
        return hashlib.sha256(os.path.basename(path).encode("utf-8")).digest()

    held = set(sorted(paths, key=rank)[:holdout])
    return [p for p in paths if (p in held) == (subset == "holdout")]


@DATASET_REGISTRY.register()
class MultiScaleImageDataset(data.Dataset):
    """HR images to ``{'lq', 'gt', 'scale', 'lq_path', 'gt_path'}`` at a scale drawn per batch.

    Args:
        opt: the dataset options (see the module docstring); not modified.
    """

    upsample_lq = False  # the registered variant below returns lq at the GT size

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        where = f"datasets.{opt.get('name', opt.get('phase', '?'))}"
        self.where = where
        for key in ("dataroot_gt", "scales"):
            if key not in opt:
                raise ValueError(f"{where}: missing key {key!r} (MultiScaleImageDataset)")
        self.scales = _check_scales(opt["scales"], where)
        self.train = opt.get("phase", "train") == "train"
        if self.train:
            gt_size = opt.get("gt_size")
            if not isinstance(gt_size, int) or any(gt_size % s for s in self.scales):
                raise ValueError(f"{where}.gt_size: {gt_size!r} must be an integer multiple of every scale in {self.scales}")
            self.gt_size = gt_size
        elif len(self.scales) != 1:
            raise ValueError(f"{where}.scales: validation and testing need exactly one scale, got {self.scales}")
        if opt.get("color") not in (None, "y"):
            raise ValueError(f"{where}.color: expected 'y' or no key, got {opt['color']!r}")
        self.io_backend_opt = dict(opt.get("io_backend") or {"type": "disk"})
        self.file_client: FileClient | None = None
        folder = opt["dataroot_gt"]
        if self.io_backend_opt.get("type") == "lmdb":
            self.io_backend_opt |= {"db_paths": [folder], "client_keys": ["gt"]}
            self.paths = paths_from_lmdb(folder)
        else:
            self.paths = sorted(paths_from_folder(folder))
        if not self.paths:
            raise ValueError(f"{where}.dataroot_gt: no images in {folder}")
        self.paths = split_holdout(self.paths, opt.get("holdout", 0), opt.get("subset", "train"), where)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index, random.choice(self.scales))

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A whole batch at one scale drawn from ``scales``."""
        scale = random.choice(self.scales)
        return [self.item(index, scale) for index in indices]

    def _read_gt(self, index: int) -> tuple[np.ndarray, str]:
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop("type"), **backend)
        path = self.paths[index]
        # 8-bit BGR as basicsr's imfrombytes, float images too (by their range; NaN refused), errors naming the file
        img = decode_image(self.file_client.get(path, "gt"), str(path)).astype(np.float32) / 255.0
        return img, path

    def item(self, index: int, scale: int) -> dict[str, Any]:
        """The sample of image ``index`` at ``scale``."""
        if scale not in self.scales:
            raise ValueError(f"scale {scale} is not one of the dataset's scales {self.scales}")
        gt, path = self._read_gt(index)
        if self.train:
            h, w = gt.shape[:2]
            if h < self.gt_size or w < self.gt_size:
                raise ValueError(f"{self.where}.gt_size: {self.gt_size} is larger than the image {path} ({h}x{w}); "
                                 f"use gt_size <= {min(h, w)} or remove the image")
            top, left = random.randint(0, h - self.gt_size), random.randint(0, w - self.gt_size)
            gt = gt[top:top + self.gt_size, left:left + self.gt_size]
            gt = augment(gt, self.opt.get("use_hflip", False), self.opt.get("use_rot", False))
        else:
            gt = mod_crop(gt, scale)
        lq = np.clip(np.round(imresize(np.ascontiguousarray(gt), 1 / scale) * 255.0), 0, 255) / 255.0
        if self.opt.get("color") == "y":
            gt, lq = (bgr2ycbcr(img.astype(np.float32), y_only=True)[..., None] for img in (gt, lq))
        gt_t, lq_t = img2tensor([gt, lq], bgr2rgb=True, float32=True)
        if self.upsample_lq:
            lq_t = upsample_bicubic(lq_t.unsqueeze(0), scale).squeeze(0)
        return {"lq": lq_t, "gt": gt_t, "scale": scale, "lq_path": path, "gt_path": path}


@DATASET_REGISTRY.register()
class MultiScaleUpsampledImageDataset(MultiScaleImageDataset):
    """:class:`MultiScaleImageDataset` whose ``lq`` is bicubic-upsampled to the GT size (VDSR's input)."""

    upsample_lq = True
