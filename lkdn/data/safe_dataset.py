"""Datasets that fail clearly: checks before building, named files in every read error, optional skipping.

basicsr's datasets report a missing folder, an LMDB without ``meta_info.txt``, an unreadable
image or an LR/HR pair of the wrong sizes with a traceback from deep inside (``'NoneType'
object has no attribute 'astype'``, an ``AssertionError`` from ``paired_paths_from_folder``).
What this module adds around any registered dataset (training, validation and
``lkdn/test.py``):

* :func:`check_dataset_options` before building: folders and ``meta_info_file`` exist; an
  LMDB folder ends in ``.lmdb`` and holds ``data.mdb`` and ``meta_info.txt``.
* :func:`build_checked_dataset`: builds through basicsr's ``DATASET_REGISTRY``, turns
  construction errors into :class:`DataError` naming the folders, rejects an empty dataset,
  and wraps the result in :class:`CheckedDataset`.
* :class:`CheckedDataset`: every image's bytes are checked when read (empty file, PNG without
  its ``IEND`` chunk, JPEG without its end marker: truncated), every failure to read or decode
  a sample is a :class:`DataError` naming its files and the fix, and whole-image pairs
  (validation, test) must have ``HR = scale x LR`` sizes.
* ``skip_bad_images: true`` (training): a sample that cannot be read is replaced by the next
  readable one in index order, with a warning; the number of replacements travels with the
  batch (``skipped_images``) so the trainer can count them. The replacement depends only on the
  index, so training stays exactly resumable.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import cv2
import torch
from basicsr.utils import FileClient
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils.data import Dataset

from lkdn.images import READ_FIX, DataError, check_image_bytes, decode_image
from lkdn.utils import thaw

logger = logging.getLogger(__name__)

SKIPPED_KEY = "skipped_images"
SKIP_FIX = "or set datasets.train.skip_bad_images: true to skip unreadable training images"


# ------------------------------------------------------------------------------------------ images


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from an image header, without decoding the pixels (None when unknown)."""
    try:
        from PIL import Image  # optional: Pillow
    except ImportError:  # pragma: no cover - Pillow is optional (it comes with matplotlib)
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - any header the library cannot parse: size unknown
        return None
    return height, width


class _CheckingClient:
    """A basicsr ``FileClient`` whose ``get`` checks the bytes and names the file (or LMDB key) on failure."""

    def __init__(self, client: FileClient, io_backend: Mapping[str, Any]) -> None:
        self.client = client
        self.backend = getattr(client, "backend", io_backend.get("type", "disk"))
        db_paths = io_backend.get("db_paths") or []
        keys = io_backend.get("client_keys") or []
        db_paths = [db_paths] if isinstance(db_paths, str) else list(db_paths)
        keys = [keys] if isinstance(keys, str) else list(keys)
        self.databases = dict(zip(keys, db_paths, strict=False))
        self.last: dict[str, tuple[str, bytes]] = {}  # client key -> (file, bytes) of the latest read

    def describe(self, filepath: Any, client_key: str) -> str:
        if self.backend == "lmdb":
            return f"key {filepath!r} of LMDB {self.databases.get(client_key, client_key)}"
        return str(filepath)

    def get(self, filepath: Any, client_key: str = "default") -> bytes:
        source = self.describe(filepath, client_key)
        try:
            data = self.client.get(filepath, client_key)
        except FileNotFoundError as err:
            raise DataError(f"{source}: image not found", path=source) from err
        except OSError as err:
            raise DataError(f"{source}: cannot read ({err.strerror or err})", path=source) from err
        data = check_image_bytes(data, source)
        self.last[client_key] = (source, data)
        return data

    def get_text(self, filepath: Any) -> str:
        return self.client.get_text(filepath)


# ------------------------------------------------------------------------------------------ checks


def _phase(opt: Mapping[str, Any], where: str) -> str:
    return str(opt.get("phase") or where.rsplit(".", 1)[-1].split("_")[0])


def check_dataset_options(opt: Mapping[str, Any], *, where: str) -> None:
    """Check the files a dataset section names before building it.

    Args:
        opt: the ``datasets.<phase>`` section.
        where: its key path for messages, e.g. ``datasets.train``.
    """
    backend = (opt.get("io_backend") or {}).get("type", "disk")
    for key in ("dataroot_gt", "dataroot_lq"):
        folder = opt.get(key)
        if folder is None:
            continue
        fix = f"prepare the data (docs/training.md, docs/testing.md) or point the option at it (--force-yml {where.replace('.', ':')}:{key}=<folder>)"
        if not os.path.exists(folder):
            raise DataError(f"{where}.{key}: folder not found: {folder}; {fix}", path=str(folder))
        if not os.path.isdir(folder):
            raise DataError(f"{where}.{key}: {folder} is a file, expected a folder of images or an LMDB", path=str(folder))
        if backend == "lmdb":
            if not str(folder).rstrip("/").endswith(".lmdb"):
                raise DataError(f"{where}.{key}: {folder}: an LMDB folder must end in .lmdb (io_backend.type: lmdb); "
                                "use io_backend.type: disk for a folder of images", path=str(folder))
            for name in ("data.mdb", "meta_info.txt"):
                if not os.path.isfile(os.path.join(folder, name)):
                    raise DataError(
                        f"{where}.{key}: LMDB {folder} has no {name}; re-create it with "
                        "scripts/data_preparation/create_lmdb.py (it writes data.mdb and meta_info.txt)",
                        path=os.path.join(str(folder), name))
    meta = opt.get("meta_info_file")
    if meta is not None and backend != "lmdb" and not os.path.isfile(meta):
        raise DataError(f"{where}.meta_info_file: file not found: {meta}; fix the path or remove the key to use "
                        "every image of the folders", path=str(meta))


def _folders(opt: Mapping[str, Any]) -> str:
    return " and ".join(str(opt[k]) for k in ("dataroot_gt", "dataroot_lq") if opt.get(k) is not None) or "(no folder)"


def build_checked_dataset(opt: Mapping[str, Any], *, where: str) -> CheckedDataset:
    """Check, build (``DATASET_REGISTRY.get(opt['type'])`` on a copy of ``opt``) and wrap a dataset.

    ``skip_bad_images`` of a training section turns on skipping (see :class:`CheckedDataset`).
    """
    check_dataset_options(opt, where=where)
    type_name = opt.get("type")
    if not isinstance(type_name, str) or type_name not in DATASET_REGISTRY:
        known = ", ".join(sorted(DATASET_REGISTRY.keys()))
        raise DataError(f"{where}.type: unknown dataset type {type_name!r} (known: {known})")
    dataset_opt = thaw(opt)
    dataset_opt.pop("optional", None)
    skip = bool(dataset_opt.pop("skip_bad_images", False))
    try:
        dataset = DATASET_REGISTRY.get(type_name)(dataset_opt)
    except DataError:
        raise
    except (AssertionError, KeyError, ValueError, OSError) as err:
        text = str(err).strip("'\"") or type(err).__name__
        hint = ""
        if "different number" in text or "is not in" in text:
            hint = ("; every HR image needs an LR image named filename_tmpl.format(<HR name>) "
                    f"(filename_tmpl: {opt.get('filename_tmpl', '{}')!r})")
        raise DataError(f"{where} ({opt.get('name', where)}): cannot build {type_name} from {_folders(opt)}: "
                        f"{text}{hint}") from err
    if len(dataset) == 0:
        raise DataError(f"{where} ({opt.get('name', where)}): no images found in {_folders(opt)}; "
                        "check the folders, meta_info_file and filename_tmpl")
    logger.info("Dataset %s (%s) with %d images built from %s", opt.get("name", where), type_name, len(dataset),
                _folders(opt))
    skip = skip and _phase(opt, where) == "train"
    return checked(dataset, where=where, skip_bad_images=skip)


# ------------------------------------------------------------------------------------------ wrapper


# basicsr's paired_random_crop when the LR image is smaller than gt_size / scale
_PATCH_TOO_LARGE = re.compile(r"LQ \((?P<h>\d+), (?P<w>\d+)\) is smaller than patch size")


def _is_bad_image(err: BaseException) -> bool:
    """Whether an error while loading a sample comes from the image (not from the code)."""
    if isinstance(err, (DataError, ValueError, OSError, cv2.error)):
        return True
    return isinstance(err, AttributeError) and "NoneType" in str(err)  # basicsr on a failed decode


class CheckedDataset(Dataset):
    """Wraps a dataset: clear errors for unreadable samples and mismatched pairs, optional skipping.

    Args:
        dataset: a built dataset (basicsr's ``PairedImageDataset``, ours...).
        where: the key path for messages (``datasets.train``).
        skip_bad_images: replace an unreadable sample by the next readable one (training).
    """

    def __init__(self, dataset: Dataset, *, where: str, skip_bad_images: bool = False) -> None:
        self.dataset = dataset
        self.where = where
        self.skip_bad_images = skip_bad_images
        self.opt = getattr(dataset, "opt", {})
        self.paths = getattr(dataset, "paths", None)
        self.paired = self.opt.get("dataroot_lq") is not None
        self.whole_images = _phase(self.opt, where) != "train"
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def files(self, index: int) -> list[str]:
        """The files of sample ``index`` (HR first), as far as the dataset lists them."""
        if self.paths is None:
            return []
        entry = self.paths[index]
        if isinstance(entry, Mapping):
            return [str(entry[k]) for k in ("gt_path", "lq_path") if k in entry]
        return [str(entry)]

    def _install_client(self) -> None:
        inner = self.dataset
        if not hasattr(inner, "file_client") or not hasattr(inner, "io_backend_opt"):
            return
        client = inner.file_client
        if isinstance(client, _CheckingClient):
            return
        backend = dict(inner.io_backend_opt)
        if client is None:
            kind = backend.pop("type", "disk")
            client = FileClient(kind, **backend)
            backend["type"] = kind
        inner.file_client = _CheckingClient(client, backend)

    def _error(self, index: int, err: BaseException) -> DataError:
        files = self.files(index)
        named = f" ({', '.join(files)})" if files else ""
        text = str(err).strip("'\"") or type(err).__name__
        if isinstance(err, AttributeError) and "NoneType" in text:
            text = "an image cannot be decoded (corrupt, or not an image file)"
            client = getattr(self.dataset, "file_client", None)
            for source, data in (client.last.values() if isinstance(client, _CheckingClient) else ()):
                try:
                    decode_image(data, source, flags=cv2.IMREAD_UNCHANGED)
                except DataError as culprit:  # name the file that does not decode
                    text, err = str(culprit), culprit
                    break
        elif patch := _PATCH_TOO_LARGE.search(text):
            lq_h, lq_w = int(patch["h"]), int(patch["w"])
            scale = int(self.opt.get("scale") or 1)
            gt_size = self.opt.get("gt_size")
            fits = min(lq_h, lq_w) * scale
            text = (f"{self.where}.gt_size: {gt_size} is larger than the image (HR {lq_h * scale}x{lq_w * scale}, "
                    f"LR {lq_h}x{lq_w} at scale {scale}); use gt_size <= {fits} or remove the image")
        elif "Scale mismatches" in text or "smaller than patch size" in text:
            text = (f"LR/HR sizes do not fit scale {self.opt.get('scale')}: {text}; the HR image must be scale x the "
                    "LR image (and at least gt_size)")
        message = f"{self.where}: sample {index}{named}: {text}"
        if ".gt_size: " in text and "is larger than the image" in text:  # nothing wrong with the file
            return DataError(message, path=files[0] if files else None)
        if READ_FIX not in text and "LR/HR sizes" not in text:
            message += f"; {READ_FIX}"
        if not self.whole_images and not self.skip_bad_images:
            message += f", {SKIP_FIX}"
        return DataError(message, path=getattr(err, "path", None))  # the file at fault, when it is known

    def _check_pair(self, index: int, sample: Mapping[str, Any]) -> None:
        """Whole-image pairs: the HR image must be ``scale`` x the LR image (basicsr crops the HR silently)."""
        if not (self.paired and self.whole_images and "gt" in sample and "lq" in sample):
            return
        scale = int(self.opt.get("scale") or 1)
        lq_h, lq_w = sample["lq"].shape[-2:]
        gt_h, gt_w = sample["gt"].shape[-2:]
        original = None
        client = getattr(self.dataset, "file_client", None)
        if isinstance(client, _CheckingClient) and "gt" in client.last:
            original = _image_size(client.last["gt"][1])
        full_h, full_w = original or (gt_h, gt_w)
        fits = (gt_h, gt_w) == (lq_h * scale, lq_w * scale) and lq_h * scale <= full_h < (lq_h + 1) * scale \
            and lq_w * scale <= full_w < (lq_w + 1) * scale
        if not fits:
            files = self.files(index)
            named = f" ({', '.join(files)})" if files else ""
            raise DataError(
                f"{self.where}: sample {index}{named}: LR/HR sizes do not fit scale {scale}: HR {full_h}x{full_w}, "
                f"LR {lq_h}x{lq_w} (expected LR {full_h // scale}x{full_w // scale}); check that the LR folder holds "
                f"x{scale} images of these HR images (crop HR images to a multiple of the scale, e.g. GTmod{scale})",
                path=files[0] if files else None)

    def _load(self, index: int) -> Any:
        self._install_client()
        try:
            sample = self.dataset[index]
        except Exception as err:  # noqa: BLE001 - re-raised with the files named, or skipped
            if not _is_bad_image(err):
                raise
            raise self._error(index, err) from err
        self._check_pair(index, sample)
        return sample

    def _warn(self, index: int, err: DataError, replacement: int) -> None:
        if index not in self._warned:  # once per image and process
            self._warned.add(index)
            logger.warning("skip_bad_images: %s; using sample %d instead", err, replacement)

    def __getitem__(self, index: int) -> Any:
        if not self.skip_bad_images:
            return self._load(index)
        skipped = 0
        size = len(self)
        for offset in range(size):
            candidate = (index + offset) % size
            try:
                sample = self._load(candidate)
            except DataError as err:
                skipped += 1
                self._warn(candidate, err, (candidate + 1) % size)
                continue
            if isinstance(sample, dict):
                sample[SKIPPED_KEY] = skipped
            return sample
        raise DataError(f"{self.where}: none of the {size} samples can be read (skip_bad_images: true); "
                        f"check {_folders(self.opt)}")


class CheckedBatchDataset(CheckedDataset):
    """:class:`CheckedDataset` for datasets that load whole batches (``__getitems__``, e.g. one scale per batch)."""

    def _culprit(self, indices: list[int], err: BaseException) -> int | None:
        """The position in ``indices`` of the sample whose file ``err`` names (None when it names none)."""
        path = getattr(err, "path", None)
        for position, index in enumerate(indices):
            files = self.files(index)
            if (path and any(f == path or f in path for f in files)) or (not path and any(f in str(err) for f in files)):
                return position
        return None

    def __getitems__(self, indices: list[int]) -> list[Any]:
        indices = list(indices)
        size = len(self)
        skipped = [0] * len(indices)
        for _ in range(size + 1):
            self._install_client()
            try:
                batch = self.dataset.__getitems__(indices)  # type: ignore[attr-defined]
                for position, sample in enumerate(batch):
                    self._check_pair(indices[position], sample)
            except Exception as err:  # noqa: BLE001 - re-raised with the files named, or skipped
                if not _is_bad_image(err):
                    raise
                probe = self._error(indices[0], err)  # finds the file that does not decode, when it can
                position = self._culprit(indices, probe if probe.path else err)
                error = self._error(indices[position], err) if position is not None else probe
                if not self.skip_bad_images or position is None:
                    raise error from err
                replacement = (indices[position] + 1) % size
                self._warn(indices[position], error, replacement)
                indices[position] = replacement
                skipped[position] += 1
                continue
            if self.skip_bad_images:
                for sample, count in zip(batch, skipped, strict=True):
                    if isinstance(sample, dict):
                        sample[SKIPPED_KEY] = count
            return batch
        raise DataError(f"{self.where}: no readable batch (skip_bad_images: true); check {_folders(self.opt)}")


def checked(dataset: Dataset, *, where: str, skip_bad_images: bool = False) -> CheckedDataset:
    """Wrap ``dataset`` in :class:`CheckedBatchDataset` when it loads whole batches, else :class:`CheckedDataset`."""
    cls = CheckedBatchDataset if hasattr(dataset, "__getitems__") else CheckedDataset
    return cls(dataset, where=where, skip_bad_images=skip_bad_images)


def skipped_in_batch(batch: Mapping[str, Any]) -> int:
    """How many samples of a collated batch replaced unreadable ones (0 when not counted)."""
    value = batch.get(SKIPPED_KEY)
    if value is None:
        return 0
    if isinstance(value, torch.Tensor):
        return int(value.sum().item())
    return int(sum(value)) if isinstance(value, (list, tuple)) else int(value)
