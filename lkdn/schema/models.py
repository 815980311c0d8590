"""The declarations: one pydantic model per section of an option file, each key with its type, default,
short title (named in type errors), description (docs/options.md) and bounds.

:class:`OptionFile` is a training (``lkdn-train``) or test (``lkdn-test``) option file: the same keys.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lkdn.schema.checks import (
    HR_ONLY_DATASETS,
    MAX_ENLARGE_RATIO,
    MAX_SCALE,
    MAX_SEED,
    MAX_WORKERS,
    METRIC_TYPES,
    SAFE_NAME,
    Check,
    Problem,
    below_one,
    between,
    filename_template,
    is_number,
    learning_rate,
    metric_type,
    network_types,
    positive,
    registered,
    safe_name,
    scheduler_iterations,
    signature,
    worker_count,
)

Number = int | float
Name = Annotated[str, Check(safe_name, {"pattern": f"^{SAFE_NAME.pattern}$"})]
Suffix = Annotated[str, Check(lambda value: value and safe_name(value))]
Count = Annotated[int, positive()]
Iterations = Annotated[Number, positive(whole=True)]
FreeForm = dict[Any, Any]
"""A section whose keys are the arguments of a registered class (checked against its signature)."""


def opt(default: Any = None, title: str = "", description: str = "", *, shown: str | None = None,
        factory: Callable[[], Any] | None = None) -> Any:
    """A declared key: ``default`` (filled in when absent unless None), ``title`` (short, in error
    messages), ``description`` (docs/options.md) and ``shown``: the default as the docs write it."""
    extra = {"shown": shown} if shown is not None else None
    if factory is not None:
        return Field(default_factory=factory, title=title, description=description, json_schema_extra=extra)
    return Field(default, title=title, description=description, json_schema_extra=extra)


# ------------------------------------------------------------------------------------------------ models


class Section(BaseModel):
    """A mapping of declared keys: unknown keys, wrong types and impossible values are errors.

    ``problems`` adds the checks across keys (and of sections whose keys depend on a registered
    class); they run on the raw mapping even when a key of it has a wrong type, so every problem
    of a file is reported at once.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False,
                              protected_namespaces=())

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        return iter(())

    @model_validator(mode="wrap")
    @classmethod
    def _validate(cls, data: Any, handler: Callable[[Any], Any], info: Any) -> Any:
        errors: list[dict[str, Any]] = []
        result = None
        try:
            result = handler(data)
        except ValidationError as err:
            errors = err.errors(include_url=False)
        if isinstance(data, Mapping):
            errors += [{"type": "lkdn", "loc": loc, "ctx": {"message": message}, "input": None}
                       for loc, message in cls.problems(data, info.context or {})]
        if errors:
            raise PydanticCustomError("lkdn_section", "invalid section", {"errors": errors})
        return result


class IoBackend(Section):
    type: Literal["disk", "lmdb"] = opt("disk", "disk or lmdb", "`disk` or `lmdb` (an LMDB folder ends in `.lmdb` and "
                                        "holds `data.mdb` and `meta_info.txt`); a training `PairedImageDataset` "
                                        "needs the `io_backend` section")
    db_paths: list[str] | str | None = opt(None, "LMDB folders, [lq, gt]", "LMDB folders (basicsr sets them)",
                                           shown="filled in")
    client_keys: list[str] | None = opt(None, "LMDB client keys, [lq, gt]", "LMDB client keys (basicsr sets them)",
                                        shown="filled in")


class Dataset(Section):
    """``datasets.<phase>``: section names ``train``; ``val``, ``val_1``... (validation during training);
    ``test_1``, ``test_2``... (``lkdn/test.py``). The phase is the part before ``_``."""

    name: Name = opt(None, "dataset name used in logs and results", "dataset name in logs, `metrics.json` and "
                     "`metrics.jsonl`; a single folder name (it names `visualization/<name>/`)", shown="required")
    type: str = opt(None, "registered dataset class, e.g. PairedImageDataset", "registered dataset class: "
                    "`PairedImageDataset` (basicsr), `MultiScaleImageDataset`, `MultiScaleUpsampledImageDataset` (VDSR)",
                    shown="required")
    phase: str = opt(None, "filled in from the section name", "from the section name", shown="filled in")
    scale: int = opt(None, "filled in from the top-level scale", "the top-level `scale`", shown="filled in")
    dataroot_gt: str = opt(None, "folder (or LMDB) of ground-truth HR images", "HR folder (or LMDB folder); `~` is "
                           "expanded", shown="required")
    dataroot_lq: str = opt(None, "folder (or LMDB) of low-quality LR images", "LR folder (or LMDB folder); the "
                           "multi-scale datasets make LR images themselves", shown="required for paired datasets")
    meta_info_file: str | None = opt(None, "text file listing the images to use", "text file listing the images to "
                                     "use (disk backend)", shown="`~`")
    filename_tmpl: Annotated[str, Check(filename_template)] = opt(
        "{}", "LR name template for an HR stem, e.g. '{}x4'", "LR file stem from the HR stem, e.g. `{}x4`: exactly "
        "one `{}`")
    io_backend: IoBackend | None = opt(None, "how images are read", "how images are read", shown="see `io_backend.*`")
    gt_size: Count = opt(None, "HR patch size (training)", "HR patch size, a multiple of the scale; the LR patch is "
                         "`gt_size / scale`", shown="training: required")
    use_hflip: bool = opt(None, "random horizontal flips", "random horizontal flips",
                          shown="training: required by `PairedImageDataset`; `false` for the multi-scale datasets")
    use_flip: bool = opt(None, "older BasicSR configs' name of use_hflip (read as use_hflip)",
                         "older BasicSR configs' name of `use_hflip` (read as `use_hflip`)", shown="")
    use_rot: bool = opt(None, "random rotations / transposes", "random rotations/transposes",
                        shown="training: required by `PairedImageDataset`; `false` for the multi-scale datasets")
    use_shuffle: bool = opt(None, "shuffle every epoch", "accepted (a BasicSR key); the training sampler shuffles "
                            "every epoch", shown="")
    num_worker_per_gpu: Annotated[int | str, Check(worker_count, {"minimum": 0, "maximum": MAX_WORKERS})] = opt(
        None, f"data loader workers per process (0 to {MAX_WORKERS}), or auto: min(4, CPUs)",
        f"data-loader worker processes per process (0 to {MAX_WORKERS}), or `auto`: min(4, the CPUs the process may "
        "use)", shown="training: required")
    batch_size_per_gpu: Count = opt(None, "batch size per process", "batch per process (total = this x processes)",
                                    shown="training: required")
    dataset_enlarge_ratio: Annotated[int, between(1, MAX_ENLARGE_RATIO)] = opt(
        1, f"repeat the dataset within one epoch (1 to {MAX_ENLARGE_RATIO})",
        f"repeat the dataset within an epoch (fewer epoch boundaries; 1 to {MAX_ENLARGE_RATIO})")
    prefetch_mode: Literal["cpu", "cuda"] | None = opt(
        None, "cpu, cuda or ~", "`cpu` (basicsr's CPUPrefetcher), `cuda` (CUDAPrefetcher; needs `pin_memory: true`; "
        "falls back on the CPU), `~` (plain loader)")
    num_prefetch_queue: Count = opt(1, "batches queued by prefetch_mode: cpu", "queue length of the CPU prefetcher")
    pin_memory: bool = opt(False, "pin host memory (cuda prefetch)", "pinned host memory (forced off on the CPU)")
    persistent_workers: bool = opt(False, "keep workers between epochs", "keep loader workers between epochs")
    optional: bool = opt(False, "skip with a warning when the folders are absent (test)",
                         "test sets: skip with a warning when the folders are absent, instead of an error")
    skip_bad_images: bool = opt(False, "skip unreadable training images with a warning",
                                "training: replace unreadable images by the next readable one, with a warning "
                                "(counted in the log) instead of stopping")
    color: str | None = opt(None, "'y' to work on the Y channel", "`y` for Y-channel data")
    mean: list[Number] | None = opt(None, "per-channel mean for normalization", "per-channel mean (basicsr's "
                                    "normalization)")
    std: list[Number] | None = opt(None, "per-channel std for normalization", "per-channel std (basicsr's "
                                   "normalization)")
    scales: list[int] | None = opt(None, "scales mixed in multi-scale training", "multi-scale datasets: the scales "
                                   "mixed in one run, e.g. `[2, 3, 4]`; validation takes exactly one", shown="")
    holdout: Annotated[int, positive(strict=False)] = opt(
        None, "MultiScaleImageDataset: images held out for validation (by name hash)",
        "multi-scale datasets: this many images of the folder held out for validation, chosen by a hash of their "
        "names", shown="0")
    subset: Literal["train", "holdout"] = opt(
        None, "MultiScaleImageDataset: train (default) or holdout", "multi-scale datasets: `train` (the images not "
        "held out) or `holdout` (the held-out ones)", shown="`train`")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        phase = str(context.get("section", "")).split("_")[0]
        if phase == "train" and "gt_size" not in data:
            yield (), "missing key 'gt_size' (the HR patch size of training, a multiple of the scale, e.g. 192 at x4)"
        for key in ("holdout", "subset"):
            if key in data and data.get("type") not in HR_ONLY_DATASETS:
                yield (key,), f"only {' and '.join(HR_ONLY_DATASETS)} hold images out"
        if data.get("prefetch_mode") == "cuda" and data.get("pin_memory") is not True:
            yield ("pin_memory",), "must be true with prefetch_mode: cuda (as in basicsr)"
        scale, gt_size = context.get("scale"), data.get("gt_size")
        if isinstance(scale, int) and scale > 0 and type(gt_size) is int and gt_size > 0 and gt_size % scale:
            yield ("gt_size",), f"{gt_size} is not divisible by scale {scale}"


class PathOptions(Section):
    pretrain_network_g: str | None = opt(
        None, "weights to start from / to test", "weights to test, or to start training from (`.pth` or "
        "`.safetensors`); `~` is expanded; a published checkpoint missing at this path is taken from the reference "
        "lookup order or downloaded on first use ([testing.md](testing.md#weights))", shown="`~`")
    param_key_g: str | None = opt(None, "key inside the checkpoint (params_ema, params)", "key inside a BasicSR "
                                  "checkpoint; a missing key falls back to the other with a warning; bare state "
                                  "dicts load as they are", shown="`params_ema`, then `params`")
    strict_load_g: bool | None = opt(None, "require every key to match (default true; only false loads non-strictly)",
                                     "require every key and shape to match (the error lists the differences); only "
                                     "`false` loads non-strictly (`~` is strict)", shown="`true`")
    resume_state: str | None = opt(None, "training state to resume from", "training state to resume from "
                                   "(`--auto-resume` picks the latest); `~` is expanded", shown="`~`")
    experiments_root: str = opt(None, "filled in", "training: `<root>/experiments/<name>`", shown="filled in")
    models: str = opt(None, "filled in", "training: `<experiments_root>/models`", shown="filled in")
    training_states: str = opt(None, "filled in", "training: `<experiments_root>/training_states`", shown="filled in")
    log: str = opt(None, "filled in", "the run folder (`experiments_root` or `results_root`)", shown="filled in")
    visualization: str = opt(None, "filled in", "`<run folder>/visualization`", shown="filled in")
    results_root: str = opt(None, "filled in", "test: `<root>/results/<name>`", shown="filled in")
    root: str = opt(None, "root folder of experiments and results", "accepted; not used (the root folder is "
                    "`--root-path` of `lkdn-train` and `lkdn-test`)", shown="")


class Metric(Section):
    type: Annotated[str, Check(metric_type, {"enum": list(METRIC_TYPES)})] = opt(
        None, "calculate_psnr or calculate_ssim", "`calculate_psnr` or `calculate_ssim` (basicsr's)", shown="required")
    crop_border: Annotated[int, positive(strict=False)] = opt(
        None, "pixels removed at each border (the scale)", "pixels removed at each border before scoring (= scale "
        "for the published protocol)", shown="required")
    test_y_channel: bool = opt(False, "compute on the Y channel (BT.601)", "score the Y channel (BT.601), as the "
                               "published tables")
    better: Literal["higher", "lower"] = opt("higher", "higher or lower", "which way is better (the best result of "
                                             "training)")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        if "crop_border" not in data:
            yield (), ("missing key 'crop_border' (pixels removed at each border before scoring; basicsr requires it, "
                       "the benchmark tables use the scale)")


class Tile(Section):
    size: Annotated[int, positive()] = opt(None, "tile size in LR pixels", "test: LR tile size", shown="`~` (whole "
                                           "images)")
    pad: Annotated[int, positive(strict=False)] | None = opt(
        None, "context in LR pixels (default: the receptive radius)", "test: context around each tile in LR pixels "
        "(exact tiles for translation-local networks; 32 and approximate otherwise)",
        shown="the network's receptive radius")


class Val(Section):
    val_freq: Iterations | None = opt(None, "validate every this many iterations", "training: validate every this "
                                      "many iterations", shown="`~` (at the end only)")
    save_img: bool = opt(False, "write SR images", "write SR images (`visualization/<dataset>/<image>_<suffix>.png`)")
    suffix: Suffix | None = opt(None, "suffix of written SR image names", "suffix of the written image names: one safe "
                              "name, as `name` (no `/`, not `..`)", shown="`~` (the `name`)")
    pbar: bool = opt(False, "progress bar during validation", "progress bar during validation in training "
                     "(`lkdn/test.py` always shows one)")
    metrics: dict[Any, Metric] = opt(None, "metrics by name", "metrics by name (`psnr`, `ssim`), each with the keys "
                                     "of `val.metrics.<name>`", shown="")
    self_ensemble: bool = opt(False, "x8 geometric self-ensemble", "test: x8 geometric self-ensemble")
    optimize: bool = opt(True, "test: lkdn.Upscaler's exact speed rewrites (default true)",
                         "test and `lkdn-infer`: run through `lkdn.Upscaler(optimize=True)` "
                         "(re-parameterization, channels_last; output within about 1e-4)")
    tile: Tile | None = opt(None, "tiled inference", "test: tiled inference", shown="`~` (whole images)")


class Wandb(Section):
    project: str | None = opt(None, "W&B project; ~ turns W&B off (needs the wandb package)",
                              "Weights & Biases project: the training scalars and metrics, the options as config "
                              "(needs the `wandb` package); `~` turns W&B off")
    entity: str | None = opt(None, "W&B team or user (default: yours)", "W&B team or user", shown="`~` (yours)")
    resume_id: str | None = opt(None, "continue this W&B run (default: the run folder's wandb_id.txt)",
                                "continue this W&B run (default: the id in `experiments/<name>/wandb_id.txt`)")
    mode: Literal["online", "offline", "disabled"] = opt("online", "online (default), offline or disabled",
                                                         "`online`, `offline` or `disabled`")


class Logger(Section):
    print_freq: Iterations = opt(100, "log training lines every this many iterations", "log line (iteration, epoch, "
                                 "lr, losses, time, data time, ETA) and `train_log.jsonl` record every this many "
                                 "iterations")
    save_checkpoint_freq: Iterations = opt(5000, "save network and state every this many iterations",
                                           "save `models/net_g_<iter>` and `training_states/<iter>.state` every this "
                                           "many iterations")
    use_tb_logger: bool = opt(False, "write TensorBoard scalars", "TensorBoard scalars under `tb_logger/<name>/`")
    wandb: Wandb | None = opt(None, "Weights & Biases: the training scalars and metrics, the options as config",
                              "Weights & Biases (see `logger.wandb.*`)", shown="`~` (off)")
    save_format: Literal["pth", "safetensors"] = opt("pth", "pth (default) or safetensors",
                                                     "`pth` (BasicSR dict) or `safetensors` (self-describing network "
                                                     "weights)")


AMP = Literal["bf16", "fp16", "fp32", "none", False]


class Train(Section):
    total_iter: Iterations = opt(None, "training iterations", "training iterations (a positive whole number)",
                                 shown="required")
    optim_g: FreeForm = opt(None, "optimizer: type and its arguments", "`type`: any `torch.optim` optimizer, or `Adan` "
                            "(the paper's algorithm and betas, e.g. `[0.98, 0.92, 0.99]`; `timm.optim.Adan`); the other "
                            "keys are its arguments (`lr`: above 0, at most 1; `betas`, `eps`, `weight_decay`, "
                            "`no_prox`, `foreach`, ...), checked against its signature", shown="required")
    scheduler: FreeForm | None = opt(
        None, "learning-rate scheduler: type and its arguments (~: a constant rate)",
        "`type`: `MultiStepLR` / `MultiStepRestartLR` (`milestones`, `gamma`, `restarts`, `restart_weights`), "
        "`CosineAnnealingRestartLR` (`periods`, `restart_weights`, `eta_min`; the periods must cover `total_iter`), "
        "`CosineAnnealingLR` (`T_max`, `eta_min`) and the other `torch.optim.lr_scheduler` classes with plain "
        "arguments", shown="`~` (a constant learning rate)")
    warmup_iter: Annotated[Number, positive(strict=False, whole=True, floor=-1)] = opt(
        -1, "linear warm-up iterations (-1 for none)", "linear warm-up iterations (-1: none)")
    pixel_opt: FreeForm | None = opt(
        None, "pixel loss: type (L1Loss, MSELoss, CharbonnierLoss) and arguments",
        "pixel loss: `type` `L1Loss`, `MSELoss`, `CharbonnierLoss` or `WeightedTVLoss` (basicsr), `loss_weight`, "
        "`reduction`; this or `perceptual_opt` is required")
    perceptual_opt: FreeForm | None = opt(
        None, "perceptual loss: type PerceptualLoss and arguments",
        "`type: PerceptualLoss`: `layer_weights` (required), `vgg_type` (`vgg19`), `use_input_norm` (`true`), "
        "`range_norm` (`false`), `perceptual_weight` (1.0), `style_weight` (0), `criterion` (`l1`; `l2`, `fro`), "
        "`vgg_weights` (default `experiments/pretrained_models/<torchvision file>`, e.g. `vgg19-dcbb9e9d.pth`)")
    ema_decay: Annotated[Number, positive(strict=False), Check(below_one, {"exclusiveMaximum": 1})] = opt(
        0, "EMA decay of the network weights (0 disables)", "EMA of the weights (BasicSR's `net_g_ema`, saved as "
        "`params_ema`); 0 disables; below 1")
    grad_clip: Annotated[Number, positive(strict=False)] | None = opt(None, "max gradient norm (VDSR)",
                                                                       "max gradient norm (VDSR)")
    bn_population_after: int | None = opt(None, "iteration after which BatchNorm uses population statistics",
                                          "from this iteration on, BatchNorm uses population statistics (RepSR)")
    max_bad_steps: Annotated[int, positive(whole=True)] = opt(
        10, "stop after this many consecutive non-finite losses", "a non-finite loss skips the step; this many in a "
        "row stop training, keeping the last good state")
    amp: AMP | None = opt(None, "bf16, fp16 or false", "`bf16` or `fp16` autocast (GradScaler only for fp16; fp16 "
                          "needs CUDA); `false`, `~`, `none`, `fp32`: off")
    channels_last: bool = opt(False, "channels-last memory format", "channels-last memory format for the network and "
                              "batches")
    compile: bool | FreeForm = opt(False, "torch.compile the network: true, or a mapping of torch.compile arguments",
                                   "`torch.compile` the network (`true`, or a mapping of `torch.compile` arguments, "
                                   "checked against its signature)")
    deterministic: bool = opt(False, "deterministic kernels (cudnn.benchmark off): runs and resumes repeat bit for bit "
                              "on GPUs", "deterministic kernels, `cudnn.benchmark` off: runs and resumes repeat bit "
                              "for bit on GPUs too")

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        lookups = context.get("lookups") or {}
        for kind, key in (("optim", "optim_g"), ("scheduler", "scheduler"), ("loss", "pixel_opt"),
                          ("loss", "perceptual_opt")):
            yield from registered(data.get(key), (key,), lookups.get(kind), ("type",))
        yield from learning_rate(data.get("optim_g"))
        yield from scheduler_iterations(data.get("scheduler"), data.get("total_iter"))
        compile_opt = data.get("compile")
        if isinstance(compile_opt, Mapping):
            import torch  # only for its signature, when the options ask for it

            yield from signature(compile_opt, torch.compile, ("compile",), ())


class DistParams(Section):
    backend: str | None = opt(None, "nccl or gloo", "`nccl` is replaced by `gloo` when training on the CPU",
                              shown="`nccl` on CUDA, `gloo` on the CPU")
    port: int = opt(29500, "rendezvous port", "rendezvous port (slurm launcher, when `MASTER_PORT` is unset)")


class OptionFile(Section):
    """An option file of training (``lkdn-train``) or testing (``lkdn-test``): the same keys."""

    name: Name = opt(None, "experiment name (folders under experiments/ or results/)",
                     "experiment name: `experiments/<name>/` (train) or `results/<name>/` (test); a single folder name "
                     "(letters, digits, `.`, `_`, `-`, `+`; no `/`, not `.` or `..`); `--debug` prefixes `debug_`",
                     shown="required")
    model_type: str = opt("SRModel", "model class, SRModel", "the training model class (registered in "
                          "`lkdn.models`)")
    scale: Annotated[int, between(1, MAX_SCALE)] = opt(
        None, "upscaling factor; must equal network_g.upscale", "upscaling factor (1 to 16), the one source: copied "
        "into every dataset and into `network_g.upscale` when that is absent; must equal `network_g.upscale`",
        shown="`network_g.upscale`, else the network's default")
    num_gpu: int | Literal["auto"] = opt("auto", "auto (default), 0 for CPU, or a count",
                                         "`auto`: all visible CUDA devices (one per process), the CPU when there are "
                                         "none; `0` forces the CPU; a count above the visible devices is an error")
    manual_seed: Annotated[int, between(0, MAX_SEED)] = opt(
        None, "random seed", "seed of every random generator (the saved one on resume); 0 to 2**64-1",
        shown="random 1–10000")
    is_train: bool = opt(None, "filled in", "set by the entry points", shown="filled in")
    root_path: str = opt(None, "filled in by the trainer: folder of experiments/ and tb_logger/",
                         "set by the entry points: the folder of `experiments/`, `results/` and `tb_logger/`",
                         shown="filled in")
    dist: bool = opt(None, "filled in", "accepted (BasicSR writes it); the distributed set-up comes from the launcher",
                     shown="")
    rank: int = opt(None, "filled in", "accepted (BasicSR writes it); not used", shown="")
    world_size: int = opt(None, "filled in", "accepted (BasicSR writes it); not used", shown="")
    auto_resume: bool = opt(None, "filled in", "accepted (BasicSR writes it); `--auto-resume` of `lkdn-train` sets it",
                            shown="")
    find_unused_parameters: bool = opt(False, "DDP option", "DDP option")
    use_static_graph: bool = opt(None, "DDP option", "accepted (a BasicSR DDP key); not used", shown="")
    datasets: dict[Any, Dataset] = opt(None, "datasets by section name", "the `datasets.<phase>` sections", shown="")
    network_g: FreeForm = opt(None, "network: type and its arguments", "the network: `type` and its constructor's "
                              "arguments", shown="required")
    path: PathOptions | None = opt(None, "weights and folders", "the `path` section", factory=dict)
    train: Train | None = opt(None, "training settings", "the `train` section (training)", shown="")
    val: Val | None = opt(None, "validation / test settings", "the `val` section", shown="")
    logger: Logger | None = opt(None, "logging settings", "the `logger` section", factory=dict)
    dist_params: DistParams | None = opt(None, "distributed settings", "the `dist_params` section", factory=dict)

    @classmethod
    def problems(cls, data: Mapping[Any, Any], context: Mapping[str, Any]) -> Iterator[Problem]:
        network = data.get("network_g")
        lookup = (context.get("lookups") or {}).get("network")
        factory = yield from registered(network, ("network_g",), lookup, ("type", "reparameterized"))
        if isinstance(network, Mapping):
            if factory is not None:
                yield from network_types(network, factory)
            for key, value in network.items():
                if (str(key).startswith("num_") or str(key).endswith("channels")) and is_number(value) and value < 1:
                    yield ("network_g", key), f"must be positive (a count of channels or blocks), got {value!r}"
            scale = data.get("scale")
            if type(scale) is int and network.get("upscale", scale) != scale:
                yield ("network_g", "upscale"), f"{network['upscale']} differs from the top-level scale {scale}"


TOP = tuple(OptionFile.model_fields)
"""The top-level keys."""

def members(annotation: Any) -> list[Any]:
    """The types a field accepts (``Annotated`` and unions unwrapped)."""
    if typing.get_origin(annotation) is Annotated:
        return members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in members(arg)]
    return [annotation]


def section_of(annotation: Any) -> tuple[type[Section] | None, bool]:
    """The section model a field holds, and whether it is a mapping of names to such sections."""
    for member in members(annotation):
        if isinstance(member, type) and issubclass(member, Section):
            return member, False
        if typing.get_origin(member) is dict:
            value = typing.get_args(member)[1]
            if isinstance(value, type) and issubclass(value, Section):
                return value, True
    return None, False
