"""Validation of option files: unknown keys, wrong types and impossible values are errors.

Each error names the key path (``train.optim_g.lr``), its line in the YAML file, and for
unknown keys the nearest valid key. Checks run before any work starts, after
``--force_yml`` overrides are applied, so overrides are validated the same way.

The schema is BasicSR's (train and test), plus this project's additions. Sections whose
keys depend on a registered class (``network_g``, ``train.optim_g``, ``train.scheduler``,
losses) are checked against that class's signature.
"""

from __future__ import annotations

import inspect
import math
import re
import string
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from lkdn.errors import LkdnError
from lkdn.utils.names import did_you_mean, unknown_keywords

NUMBER = (int, float)
SAVE_FORMATS = ("pth", "safetensors")
AMP_VALUES = ("bf16", "fp16", "fp32", "none", False, None)
# scheduler arguments that are lists of iteration counts (basicsr's MultiStepRestartLR, CosineAnnealingRestartLR)
ITERATION_LISTS = ("milestones", "periods", "restarts")
NAME_HELP = "a single folder name: letters, digits, '.', '_', '-', '+' (no '/', not '.' or '..')"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")

MAX_WORKERS = 64
"""The most data loader workers per process (``num_worker_per_gpu``); each is a copy of the trainer."""
MAX_ENLARGE_RATIO = 10_000
"""The largest ``dataset_enlarge_ratio``: the sampler holds ``images x ratio`` indices every epoch."""
MAX_LR = 1.0
"""The largest learning rate (``train.optim_g.lr``): above it every optimizer of this project diverges."""

# key -> (allowed types, description). A nested dict spec describes a sub-mapping.
Spec = Mapping[str, Any]

IO_BACKEND: Spec = {
    "type": ((str,), "disk or lmdb"),
    "db_paths": ((list, str), "LMDB folders, [lq, gt]"),
    "client_keys": ((list,), "LMDB client keys, [lq, gt]"),
}

DATASET_COMMON: Spec = {
    "name": ((str,), "dataset name used in logs and results"),
    "type": ((str,), "registered dataset class, e.g. PairedImageDataset"),
    "phase": ((str,), "filled in from the section name"),
    "scale": ((int,), "filled in from the top-level scale"),
    "dataroot_gt": ((str,), "folder (or LMDB) of ground-truth HR images"),
    "dataroot_lq": ((str,), "folder (or LMDB) of low-quality LR images"),
    "meta_info_file": ((str, type(None)), "text file listing the images to use"),
    "filename_tmpl": ((str,), "LR name template for an HR stem, e.g. '{}x4'"),
    "io_backend": (IO_BACKEND, "how images are read"),
    "gt_size": ((int,), "HR patch size (training)"),
    "use_hflip": ((bool,), "random horizontal flips"),
    "use_flip": ((bool,), "older BasicSR configs' name of use_hflip (read as use_hflip)"),
    "use_rot": ((bool,), "random rotations / transposes"),
    "use_shuffle": ((bool,), "shuffle every epoch"),
    "num_worker_per_gpu": ((int, str), f"data loader workers per process (0 to {MAX_WORKERS}), or auto: min(4, CPUs)"),
    "batch_size_per_gpu": ((int,), "batch size per process"),
    "dataset_enlarge_ratio": ((int,), f"repeat the dataset within one epoch (1 to {MAX_ENLARGE_RATIO})"),
    "prefetch_mode": ((str, type(None)), "cpu, cuda or ~"),
    "num_prefetch_queue": ((int,), "batches queued by prefetch_mode: cpu"),
    "pin_memory": ((bool,), "pin host memory (cuda prefetch)"),
    "persistent_workers": ((bool,), "keep workers between epochs"),
    "optional": ((bool,), "skip with a warning when the folders are absent (test)"),
    "skip_bad_images": ((bool,), "skip unreadable training images with a warning"),
    "color": ((str,), "'y' to work on the Y channel"),
    "mean": ((list,), "per-channel mean for normalization"),
    "std": ((list,), "per-channel std for normalization"),
    "scales": ((list,), "scales mixed in multi-scale training"),
    "holdout": ((int,), "MultiScaleImageDataset: images held out for validation (by name hash)"),
    "subset": ((str,), "MultiScaleImageDataset: train (default) or holdout"),
}

#: dataset types that make LR images themselves and can hold images out (lkdn.data.multiscale_dataset)
HR_ONLY_DATASETS = ("MultiScaleImageDataset", "MultiScaleUpsampledImageDataset")

PATH: Spec = {
    "pretrain_network_g": ((str, type(None)), "weights to start from / to test"),
    "param_key_g": ((str, type(None)), "key inside the checkpoint (params_ema, params)"),
    "strict_load_g": ((bool, type(None)), "require every key to match (default true; only false loads non-strictly)"),
    "resume_state": ((str, type(None)), "training state to resume from"),
    "experiments_root": ((str,), "filled in"),
    "models": ((str,), "filled in"),
    "training_states": ((str,), "filled in"),
    "log": ((str,), "filled in"),
    "visualization": ((str,), "filled in"),
    "results_root": ((str,), "filled in"),
    "root": ((str,), "root folder of experiments and results"),
}

#: metrics of basicsr's registry that score two numpy images (``val.metrics.<name>.type``)
METRIC_TYPES = ("calculate_psnr", "calculate_ssim")

METRIC: Spec = {
    "type": ((str,), "calculate_psnr or calculate_ssim"),
    "crop_border": ((int,), "pixels removed at each border (the scale)"),
    "test_y_channel": ((bool,), "compute on the Y channel (BT.601)"),
    "better": ((str,), "higher or lower"),
}

VAL: Spec = {
    "val_freq": (NUMBER, "validate every this many iterations"),
    "save_img": ((bool,), "write SR images"),
    "suffix": ((str, type(None)), "suffix of written SR image names"),
    "pbar": ((bool,), "progress bar during validation"),
    "metrics": ("*", METRIC),
    "self_ensemble": ((bool,), "x8 geometric self-ensemble"),
    "optimize": ((bool,), "test: lkdn.Upscaler's exact speed rewrites (default true)"),
    "tile": ({"size": ((int,), "tile size in LR pixels"), "pad": ((int, type(None)), "context in LR pixels (default: the receptive radius)")}, "tiled inference"),
}

LOGGER: Spec = {
    "print_freq": ((int,), "log training lines every this many iterations"),
    "save_checkpoint_freq": (NUMBER, "save network and state every this many iterations"),
    "use_tb_logger": ((bool,), "write TensorBoard scalars"),
    "wandb": ({
        "project": ((str, type(None)), "W&B project; ~ turns W&B off (needs the wandb package)"),
        "entity": ((str, type(None)), "W&B team or user (default: yours)"),
        "resume_id": ((str, type(None)), "continue this W&B run (default: the run folder's wandb_id.txt)"),
        "mode": ((str,), "online (default), offline or disabled"),
    }, "Weights & Biases: the training scalars and metrics, the options as config"),
    "save_format": ((str,), "pth (default) or safetensors"),
}

TRAIN: Spec = {
    "ema_decay": (NUMBER, "EMA decay of the network weights (0 disables)"),
    "optim_g": ((dict,), "optimizer: type and its arguments"),
    "scheduler": ((dict, type(None)), "learning-rate scheduler: type and its arguments (~: a constant rate)"),
    "total_iter": (NUMBER, "training iterations"),
    "warmup_iter": (NUMBER, "linear warm-up iterations (-1 for none)"),
    "pixel_opt": ((dict, type(None)), "pixel loss: type (L1Loss, MSELoss, CharbonnierLoss) and arguments"),
    "perceptual_opt": ((dict, type(None)), "perceptual loss: type PerceptualLoss and arguments"),
    "grad_clip": (NUMBER + (type(None),), "max gradient norm (VDSR)"),
    "bn_population_after": ((int, type(None)), "iteration after which BatchNorm uses population statistics"),
    "amp": ((str, bool, type(None)), "bf16, fp16 or false"),
    "channels_last": ((bool,), "channels-last memory format"),
    "compile": ((bool, dict), "torch.compile the network: true, or a mapping of torch.compile arguments"),
    "max_bad_steps": ((int,), "stop after this many consecutive non-finite losses"),
    "deterministic": ((bool,), "deterministic kernels (cudnn.benchmark off): runs and resumes repeat bit for bit on GPUs"),
}

TOP: Spec = {
    "name": ((str,), "experiment name (folders under experiments/ or results/)"),
    "model_type": ((str,), "model class, SRModel"),
    "scale": ((int,), "upscaling factor; must equal network_g.upscale"),
    "num_gpu": ((int, str), "auto (default), 0 for CPU, or a count"),
    "manual_seed": ((int,), "random seed"),
    "is_train": ((bool,), "filled in"),
    "dist": ((bool,), "filled in"),
    "rank": ((int,), "filled in"),
    "world_size": ((int,), "filled in"),
    "auto_resume": ((bool,), "filled in"),
    "root_path": ((str,), "filled in by the trainer: folder of experiments/ and tb_logger/"),
    "datasets": ("*", DATASET_COMMON),
    "network_g": ((dict,), "network: type and its arguments"),
    "path": (PATH, "weights and folders"),
    "train": (TRAIN, "training settings"),
    "val": (VAL, "validation / test settings"),
    "logger": (LOGGER, "logging settings"),
    "dist_params": ({"backend": ((str,), "nccl or gloo"), "port": ((int,), "rendezvous port")}, "distributed settings"),
    "find_unused_parameters": ((bool,), "DDP option"),
    "use_static_graph": ((bool,), "DDP option"),
}


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML text to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = prefix + (str(key_node.value),)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    if root is not None:
        walk(root, ())
    return lines


_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number_hint(value: Any) -> str:
    """A hint when ``value`` is a string that reads as a number (PyYAML keeps ``1e-3`` a string)."""
    if not isinstance(value, str) or not _FLOAT_TEXT.match(value.strip()):
        return ""
    if "e" in value.lower():
        return f" (YAML reads {value} as a string: write {float(value)!r} or !!float {value})"
    return " (a quoted number: remove the quotes)"


class SchemaError(LkdnError, ValueError):
    """One or more invalid options; the message lists each with its location."""


MAX_SCALE = 16
"""The largest upscaling factor (``scale``) an option file may ask for."""
INTEGER_RANGES: dict[tuple[str, ...], tuple[int, int]] = {
    ("scale",): (1, MAX_SCALE),
    ("manual_seed",): (0, 2**64 - 1),  # what torch.manual_seed accepts
}
"""Inclusive ranges of integer options beyond their type."""


def _range_text(path: tuple[str, ...]) -> str:
    low, high = INTEGER_RANGES.get(path, (None, None))
    return f"from {low} to {high}" if low is not None else "of at most 18 digits"


def long_integer_errors(root: yaml.Node | None, source: str) -> list[str]:
    """Errors for integers of a composed YAML document too long for Python to read (over
    ``sys.get_int_max_str_digits()`` digits), each with the key's path, line and valid range."""
    limit = sys.get_int_max_str_digits() or None
    errors: list[str] = []

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                walk(value_node, path + (str(key_node.value)[:80],))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path[:-1] + (f"{path[-1]}[{index}]",) if path else (str(index),))
        elif (limit and isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int"
              and sum(c.isdigit() for c in node.value) > limit):
            digits = sum(c.isdigit() for c in node.value)
            errors.append(f"{source}:{node.start_mark.line + 1}: {'.'.join(path)}: an integer of {digits} digits; "
                          f"expected an integer {_range_text(path)}")

    if root is not None:
        walk(root, ())
    return errors


class _Checker:
    def __init__(self, source: str, lines: dict[tuple[str, ...], int]) -> None:
        self.source, self.lines, self.errors = source, lines, []

    def where(self, path: tuple[str, ...]) -> str:
        line = self.lines.get(path)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: tuple[str, ...], message: str) -> None:
        self.errors.append(f"{self.where(path)}: {'.'.join(path)}: {message}")

    def unknown(self, path: tuple[str, ...], valid: list[str]) -> None:
        self.error(path, f"unknown key{did_you_mean(path[-1], valid, cutoff=0.6)} (valid: {', '.join(sorted(valid))})")

    def mapping(self, value: Any, spec: Spec, path: tuple[str, ...]) -> None:
        if not isinstance(value, Mapping):
            self.error(path, f"expected a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            sub = path + (str(key),)
            if key not in spec:
                self.unknown(sub, list(spec))
                continue
            kind, detail = spec[key]
            if kind == "*":  # mapping of names to sub-specs (datasets, metrics)
                if not isinstance(item, Mapping):
                    self.error(sub, f"expected a mapping, got {type(item).__name__}")
                    continue
                for name, child in item.items():
                    self.mapping(child, detail, sub + (str(name),))
            elif isinstance(kind, Mapping):
                if item is not None:
                    self.mapping(item, kind, sub)
            elif not isinstance(item, kind) or (isinstance(item, bool) and bool not in kind and int in kind):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in kind)
                self.error(sub, f"expected {names} ({detail}), got {item!r}{_number_hint(item)}")

    def numbers(self, value: Any, path: tuple[str, ...]) -> None:
        """Report strings that YAML 1.1 did not read as numbers (``1e-3``) anywhere under ``value``."""
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.numbers(item, path + (str(key),))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.numbers(item, path[:-1] + (f"{path[-1]}[{index}]",) if path else (str(index),))
        elif _number_hint(value):
            self.error(path, f"{value!r} is a string{_number_hint(value)}")

    def signature(self, value: Any, factory: Callable[..., Any], path: tuple[str, ...], skip: tuple[str, ...]) -> None:
        for key, problem in unknown_keywords(factory, value, skip=("params", "optimizer", "last_epoch", "verbose"),
                                             also=skip):
            self.error(path + (str(key),), problem)


def _registry_type(checker: _Checker, section: Any, path: tuple[str, ...], lookup: Callable[[str], Any]) -> Any:
    if not isinstance(section, Mapping):
        return None
    if "type" not in section:
        checker.error(path, "missing key 'type'")
        return None
    if not isinstance(section["type"], str):
        checker.error(path + ("type",), f"expected a registered name, got {section['type']!r}")
        return None
    try:
        return lookup(section["type"])
    except (KeyError, ValueError) as err:
        message = str(err).strip("'\"")
        prefix = ".".join(path + ("type",)) + ": "
        checker.error(path + ("type",), message.removeprefix(prefix))  # lookups name the key themselves
        return None


def _value(opt: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``, or None when a key on the way is absent."""
    node: Any = opt
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool)


def _positive(checker: _Checker, opt: Mapping[str, Any], path: tuple[str, ...], *, strict: bool = True,
              whole: bool = False) -> None:
    node = _value(opt, path)
    if not _is_number(node):
        return
    if node <= 0 if strict else node < 0:
        checker.error(path, f"must be {'positive' if strict else 'non-negative'}, got {node!r}")
    elif whole and node != int(node):
        checker.error(path, f"must be a whole number of iterations, got {node!r}")


def _finite(checker: _Checker, value: Any, path: tuple[str, ...]) -> None:
    """NaN and infinity are never valid option values (``.nan`` would silently poison training)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _finite(checker, item, path + (str(key),))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _finite(checker, item, path[:-1] + (f"{path[-1]}[{index}]",) if path else (str(index),))
    elif isinstance(value, float) and not math.isfinite(value):
        checker.error(path, f"must be a finite number, got {value!r}")


def _safe_name(checker: _Checker, value: Any, path: tuple[str, ...]) -> None:
    """Run and dataset names become folder names: one safe path component, never a path."""
    if isinstance(value, str) and (not _SAFE_NAME.fullmatch(value) or value in (".", "..")):
        checker.error(path, f"{value!r} is not a valid name: use {NAME_HELP}")


def _metrics(checker: _Checker, opt: Mapping[str, Any]) -> None:
    """``val.metrics``: a known metric type and a non-negative ``crop_border`` (basicsr trips on others)."""
    metrics = _value(opt, ("val", "metrics"))
    for name, metric in metrics.items() if isinstance(metrics, Mapping) else ():
        if not isinstance(metric, Mapping):
            continue
        path = ("val", "metrics", str(name))
        kind = metric.get("type")
        if isinstance(kind, str) and kind not in METRIC_TYPES:
            checker.error(path + ("type",), f"unknown metric {kind!r}{did_you_mean(kind, list(METRIC_TYPES))} "
                          f"(known: {', '.join(METRIC_TYPES)})")
        if "crop_border" not in metric:
            checker.error(path, "missing key 'crop_border' (pixels removed at each border before scoring; "
                          "basicsr requires it, the benchmark tables use the scale)")
        _positive(checker, opt, path + ("crop_border",), strict=False)


def _learning_rate(checker: _Checker, opt: Mapping[str, Any]) -> None:
    """``train.optim_g.lr``: a number (its sign is checked with the other counts) at most :data:`MAX_LR`."""
    path = ("train", "optim_g", "lr")
    optim = _value(opt, path[:-1])
    if not isinstance(optim, Mapping) or "lr" not in optim:
        return  # the optimizer's default
    lr = optim["lr"]
    if _number_hint(lr) or (isinstance(lr, float) and not math.isfinite(lr)):
        return  # reported as a quoted number / not finite
    if not _is_number(lr):
        checker.error(path, f"expected a learning rate: a number above 0 and at most {MAX_LR:g} (e.g. 2e-4), got {lr!r}")
    elif lr > MAX_LR:
        checker.error(path, f"must be at most {MAX_LR:g} (a learning rate, e.g. 2e-4), got {lr!r}")


def _network_types(checker: _Checker, network: Mapping[str, Any], factory: Callable[..., Any]) -> None:
    """``network_g`` arguments whose constructor default is a bool, an integer or a float must be one too."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    name = getattr(factory, "__name__", str(factory))
    for key, value in network.items():
        default = params[key].default if key in params else None
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = _is_number(value), "a number"
        else:
            continue
        if not ok and not _number_hint(value):  # a quoted number is reported by _Checker.numbers
            checker.error(("network_g", str(key)), f"expected {kind} ({name}'s default is {default!r}), got {value!r}")


def _filename_template(checker: _Checker, value: Any, path: tuple[str, ...]) -> None:
    """``filename_tmpl`` makes an LR name from an HR name with ``str.format``: exactly one ``{}`` field."""
    if not isinstance(value, str):
        return
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
    except ValueError as err:
        checker.error(path, f"{value!r} is not a valid template ({err}): write the LR name with one {{}} for the "
                      "HR name, e.g. '{}x4'")
        return
    if len(fields) != 1 or fields[0] not in ("", "0"):
        checker.error(path, f"{value!r} has {len(fields)} field(s) {fields}: expected exactly one {{}} (the HR "
                      "name), e.g. '{}' or '{}x4'")


def _scheduler(checker: _Checker, opt: Mapping[str, Any]) -> None:
    scheduler = _value(opt, ("train", "scheduler"))
    if not isinstance(scheduler, Mapping):
        return
    for key in ITERATION_LISTS:
        value = scheduler.get(key)
        if value is None:
            continue
        path = ("train", "scheduler", key)
        if not isinstance(value, list) or not all(_is_number(v) and v == int(v) and v >= 0 for v in value):
            checker.error(path, f"expected a list of whole numbers of iterations, got {value!r}")
    periods, total = scheduler.get("periods"), _value(opt, ("train", "total_iter"))
    if (scheduler.get("type") == "CosineAnnealingRestartLR" and isinstance(periods, list)
            and all(_is_number(v) for v in periods) and _is_number(total) and sum(periods) < total):
        checker.error(("train", "scheduler", "periods"),
                      f"the periods add up to {sum(periods)} iterations, fewer than train.total_iter {total}: "
                      "CosineAnnealingRestartLR has no learning rate after its last period")


def validate_options(
    opt: Mapping[str, Any], *, source: str | Path = "<options>", text: str | None = None,
    lookups: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """Raise :class:`SchemaError` listing every invalid option of ``opt``.

    Args:
        opt: the parsed options.
        source: the file name, used in messages.
        text: the YAML text, to report line numbers.
        lookups: functions mapping a ``type`` name to its class for ``network_g``, ``optim_g``,
            ``scheduler`` and ``loss`` (each optional); they are checked against its signature.
    """
    checker = _Checker(str(source), key_lines(text) if text else {})
    checker.mapping(opt, TOP, ())
    lookups = lookups or {}
    train = opt.get("train") if isinstance(opt.get("train"), Mapping) else {}
    sections = [
        ("network", opt.get("network_g"), ("network_g",), ("type", "reparameterized")),
        ("optim", train.get("optim_g"), ("train", "optim_g"), ("type",)),
        ("scheduler", train.get("scheduler"), ("train", "scheduler"), ("type",)),
        ("loss", train.get("pixel_opt"), ("train", "pixel_opt"), ("type",)),
        ("loss", train.get("perceptual_opt"), ("train", "perceptual_opt"), ("type",)),
    ]
    for kind, section, path, skip in sections:
        if isinstance(section, Mapping):
            checker.numbers({k: v for k, v in section.items() if k != "type"}, path)
        if kind in lookups and section is not None:
            factory = _registry_type(checker, section, path, lookups[kind])
            if factory is not None:
                checker.signature(section, factory, path, skip)
                if kind == "network":
                    _network_types(checker, section, factory)
    _finite(checker, opt, ())
    for path in (("train", "total_iter"), ("val", "val_freq"), ("logger", "print_freq"),
                 ("logger", "save_checkpoint_freq"), ("train", "max_bad_steps")):
        _positive(checker, opt, path, whole=True)
    for path in (("train", "optim_g", "lr"), ("val", "tile", "size")):
        _positive(checker, opt, path)
    _learning_rate(checker, opt)
    if _value(opt, ("train", "warmup_iter")) != -1:  # -1: no warm-up (BasicSR)
        _positive(checker, opt, ("train", "warmup_iter"), strict=False, whole=True)
    _positive(checker, opt, ("val", "tile", "pad"), strict=False)
    for path, (low, high) in INTEGER_RANGES.items():
        value = _value(opt, path)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            shown = value if abs(value) < 10**40 else f"an integer of {len(str(abs(value)))} digits"
            checker.error(path, f"must be an integer from {low} to {high}, got {shown}")
    network_g = opt.get("network_g")
    for key, value in network_g.items() if isinstance(network_g, Mapping) else ():
        if (str(key).startswith("num_") or str(key).endswith("channels")) and _is_number(value) and value < 1:
            checker.error(("network_g", str(key)), f"must be positive (a count of channels or blocks), got {value!r}")
    _safe_name(checker, opt.get("name"), ("name",))
    _safe_name(checker, _value(opt, ("val", "suffix")) or None, ("val", "suffix"))  # part of every SR image's file name
    amp = train.get("amp")
    if "amp" in train and (amp not in AMP_VALUES or amp is True):
        checker.error(("train", "amp"), f"expected bf16, fp16 or false, got {amp!r}")
    _scheduler(checker, opt)
    _metrics(checker, opt)
    compile_opt = train.get("compile")
    if isinstance(compile_opt, Mapping):
        checker.signature(compile_opt, torch.compile, ("train", "compile"), ())
    save_format = opt.get("logger").get("save_format") if isinstance(opt.get("logger"), Mapping) else None
    if isinstance(save_format, str) and save_format not in SAVE_FORMATS:
        checker.error(("logger", "save_format"), f"expected {' or '.join(SAVE_FORMATS)}, got {save_format!r}")
    for path in (("train", "ema_decay"), ("train", "grad_clip")):
        _positive(checker, opt, path, strict=False)
    ema = train.get("ema_decay")
    if isinstance(ema, NUMBER) and not isinstance(ema, bool) and ema >= 1:
        checker.error(("train", "ema_decay"), f"must be below 1, got {ema!r}")
    scale = opt.get("scale")
    for name, dataset in (opt.get("datasets") or {}).items() if isinstance(opt.get("datasets"), Mapping) else ():
        if not isinstance(dataset, Mapping):
            continue
        for key in ("num_prefetch_queue", "gt_size", "batch_size_per_gpu", "dataset_enlarge_ratio"):
            _positive(checker, opt, ("datasets", name, key))
        workers = dataset.get("num_worker_per_gpu")
        if isinstance(workers, str) and workers != "auto":
            checker.error(("datasets", str(name), "num_worker_per_gpu"),
                          f"expected auto or a count from 0 to {MAX_WORKERS}, got {workers!r}")
        for key, low, high in (("num_worker_per_gpu", 0, MAX_WORKERS), ("dataset_enlarge_ratio", 1, MAX_ENLARGE_RATIO)):
            value = dataset.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
                shown = value if abs(value) < 10**40 else f"an integer of {len(str(abs(value)))} digits"
                checker.error(("datasets", str(name), key), f"must be an integer from {low} to {high}, got {shown}")
        if str(name).split("_")[0] == "train" and "gt_size" not in dataset:
            checker.error(("datasets", str(name)), "missing key 'gt_size' (the HR patch size of training, "
                          "a multiple of the scale, e.g. 192 at x4)")
        _safe_name(checker, dataset.get("name"), ("datasets", str(name), "name"))
        for key in ("holdout", "subset"):
            if key in dataset and dataset.get("type") not in HR_ONLY_DATASETS:
                checker.error(("datasets", str(name), key), f"only {' and '.join(HR_ONLY_DATASETS)} hold images out")
        mode = dataset.get("prefetch_mode")
        if mode not in (None, "cpu", "cuda"):
            checker.error(("datasets", str(name), "prefetch_mode"), f"expected cpu, cuda or ~, got {mode!r}")
        elif mode == "cuda" and dataset.get("pin_memory") is not True:
            checker.error(("datasets", str(name), "pin_memory"), "must be true with prefetch_mode: cuda (as in basicsr)")
        _filename_template(checker, dataset.get("filename_tmpl"), ("datasets", str(name), "filename_tmpl"))
        gt_size = dataset.get("gt_size")
        if isinstance(scale, int) and scale > 0 and isinstance(gt_size, int) and gt_size % scale:
            checker.error(("datasets", str(name), "gt_size"), f"{gt_size} is not divisible by scale {scale}")
    wandb = (opt.get("logger") or {}).get("wandb") if isinstance(opt.get("logger"), Mapping) else None
    if isinstance(wandb, Mapping) and wandb.get("mode", "online") not in ("online", "offline", "disabled"):
        checker.error(("logger", "wandb", "mode"), f"expected online, offline or disabled, got {wandb.get('mode')!r}")
    network = opt.get("network_g")
    if isinstance(network, Mapping) and isinstance(scale, int) and network.get("upscale", scale) != scale:
        checker.error(("network_g", "upscale"), f"{network['upscale']} differs from the top-level scale {scale}")
    if checker.errors:
        raise SchemaError("invalid options:\n  " + "\n  ".join(checker.errors))
