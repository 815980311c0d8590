"""``SRModel``: single-image super-resolution training with BasicSR's semantics, on CPU or CUDA.

What it keeps from basicsr's ``SRModel``: ``net_g`` and ``net_g_ema`` (``train.ema_decay``),
``pixel_opt`` / ``perceptual_opt`` losses (basicsr's, through :mod:`lkdn.training.optim`), one optimizer
(``optim_g``) and one scheduler stepped per iteration, fine-tuning from
``path.pretrain_network_g`` (``param_key_g``, ``strict_load_g``), checkpoints
``{'params', 'params_ema'}``. What it owns instead: device handling without unconditional CUDA
calls, DDP on CUDA or CPU, every ``torch.optim`` optimizer and Adan, warm-up that does not
shift the schedule, ``train.grad_clip``, ``train.bn_population_after``, mixed precision
(``train.amp``), ``train.channels_last``, ``train.compile``, atomic saves and exact resume,
network files as ``.pth`` or self-describing ``.safetensors`` (``logger.save_format``), and
steps with a non-finite loss (or gradient norm) skipped: no optimizer or EMA update
(:attr:`SRModel.bad_steps` counts them in a row; the trainer stops after ``train.max_bad_steps``).

BatchNorm in population mode while the rest of the network keeps training
(``train.bn_population_after: <iter>``, :func:`set_train_mode`): RepSR (Wang, Dong, Shan 2022) trains
its BatchNorm layers on batch statistics first and switches them to their running (population)
statistics for the last part of training, which removes the artifacts batch statistics cause at test
time. From that iteration on every ``_BatchNorm`` module is in eval mode (normalizes with, and no longer
updates, its running statistics); its affine weights still learn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from lkdn.archs import build_network
from lkdn.checkpoint import SAFETENSORS_SUFFIX, extract_state_dict, mismatch_report, save_file
from lkdn.evaluate import evaluate
from lkdn.images import check_finite_output, write_image
from lkdn.loading import load_network, load_weights_from_options, save_network_file
from lkdn.models.registry import MODEL_REGISTRY
from lkdn.options import Options, fill_defaults
from lkdn.training.ema import WeightEMA
from lkdn.training.optim import build_loss, build_optimizer, build_scheduler, warmup_factor
from lkdn.training.state import DistInfo, any_process
from lkdn.utils import thaw

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _amp_dtype(value: Any, device: torch.device) -> torch.dtype | None:
    """``train.amp`` (validated by the schema: bf16, fp16 or off) on ``device``."""
    if value not in AMP_DTYPES:
        return None
    if value == "fp16" and device.type != "cuda":
        raise ValueError(
            f"train.amp: fp16 mixed precision needs a CUDA device (training on {device}); use bf16 on the CPU"
        )
    return AMP_DTYPES[value]


def _compile_options(value: Any) -> dict[str, Any] | None:
    """``train.compile`` (validated by the schema: a bool or a mapping of torch.compile arguments)."""
    if not value:
        return None
    return {} if value is True else thaw(value)


def _set_lrs(optimizer: torch.optim.Optimizer, lrs: list[float]) -> None:
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


@MODEL_REGISTRY.register()
class SRModel:
    """Trains ``network_g`` on LR/HR pairs.

    Args:
        opt: the parsed options (``lkdn.options.parse_options(..., is_train=True)``).
        dist_info: processes and device (``lkdn.training.state.init_distributed``).
    """

    def __init__(self, opt: Mapping[str, Any], *, dist_info: DistInfo) -> None:
        if not isinstance(opt, Options):  # a plain mapping (the Python API): the declared defaults filled in
            data = thaw(opt)
            opt = Options(data, source="options", filled=fill_defaults(data))
        self.opt = opt
        self.dist_info = dist_info
        self.device = dist_info.device
        train_opt = opt.get("train") or {}
        self.build_network_g()
        self.setup_losses(train_opt)
        self.setup_optimizers(train_opt)
        self.setup_step_options(train_opt)
        self.wrap_for_ddp()
        self.setup_ema(train_opt)  # after the DDP wrap, which gives every process rank 0's initial weights
        self.compile_train_net(train_opt)
        self.init_step_state()

    # ------------------------------------------------------------------ set-up steps
    def build_network_g(self) -> None:
        """Build ``net_g`` from ``network_g``, load ``path.pretrain_network_g`` if set, move it to the device."""
        self.net_g = build_network(self.opt["network_g"])
        n_params = sum(p.numel() for p in self.net_g.parameters())
        logger.info("Network %s with %s parameters", type(self.net_g).__name__, f"{n_params:,d}")
        logger.debug("%s", self.net_g)
        if self._pretrained():  # fine-tuning: the one loading rule (lkdn.loading)
            load_weights_from_options(self.net_g, self.opt)
        self.net_g.to(self.device)

    def _pretrained(self) -> bool:
        """Whether ``path.pretrain_network_g`` names a file to start from."""
        return bool((self.opt.get("path") or {}).get("pretrain_network_g"))

    def setup_losses(self, train_opt: Mapping[str, Any]) -> None:
        """Build ``cri_pix`` (``pixel_opt``) and ``cri_perceptual`` (``perceptual_opt``); one of them is required."""
        self.cri_pix = build_loss(train_opt["pixel_opt"]).to(self.device) if train_opt.get("pixel_opt") else None
        self.cri_perceptual = (
            build_loss(train_opt["perceptual_opt"]).to(self.device) if train_opt.get("perceptual_opt") else None
        )
        if self.cri_pix is None and self.cri_perceptual is None:
            raise ValueError("train: set pixel_opt (e.g. type: L1Loss) or perceptual_opt")

    def setup_optimizers(self, train_opt: Mapping[str, Any]) -> None:
        """Build ``optim_g`` over the trainable parameters, its ``scheduler`` and the warm-up length."""
        params = []
        for name, param in self.net_g.named_parameters():
            if param.requires_grad:
                params.append(param)
            else:
                logger.warning("Parameter %s will not be optimized", name)
        if "optim_g" not in train_opt:
            raise ValueError("train.optim_g: missing (e.g. type: Adan, lr: 5e-3)")
        self.optimizer_g = build_optimizer(params, train_opt["optim_g"])
        self.optimizers = [self.optimizer_g]
        self.schedulers = [build_scheduler(self.optimizer_g, train_opt["scheduler"])] if train_opt.get("scheduler") else []
        self._base_lrs = [group["lr"] for group in self.optimizer_g.param_groups]
        self.warmup_iter = train_opt["warmup_iter"]

    def setup_step_options(self, train_opt: Mapping[str, Any]) -> None:
        """Read ``grad_clip``, ``bn_population_after``, ``amp`` and ``channels_last``."""
        self.grad_clip = train_opt.get("grad_clip")
        self.bn_population_after = train_opt.get("bn_population_after")
        if self.bn_population_after is not None and not batchnorm_modules(self.net_g):
            logger.warning("train.bn_population_after is set but %s has no BatchNorm layer", type(self.net_g).__name__)
        self._bn_population: bool | None = None

        self.amp_dtype = _amp_dtype(train_opt.get("amp"), self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.channels_last = train_opt["channels_last"]
        if self.channels_last:
            self.net_g.to(memory_format=torch.channels_last)

    def wrap_for_ddp(self) -> None:
        """Set ``train_net``: ``net_g``, wrapped in ``DistributedDataParallel`` when distributed."""
        self.train_net: nn.Module = self.net_g
        if self.dist_info.dist:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_net = DistributedDataParallel(
                self.net_g, device_ids=device_ids,
                find_unused_parameters=self.opt["find_unused_parameters"],
            )

    def setup_ema(self, train_opt: Mapping[str, Any]) -> None:
        """Build the EMA network (``ema_decay`` > 0) from ``net_g`` or the pretrained file's ``params_ema``."""
        self.ema: WeightEMA | None = None
        decay = float(train_opt["ema_decay"] or 0)
        if decay > 0:
            logger.info("Exponential moving average of the weights, decay %s", decay)
            self.ema = WeightEMA(build_network(self.opt["network_g"]).to(self.device), decay=decay)
            self.ema.copy_from(self.net_g)
            if self._pretrained():  # BasicSR: the EMA starts from the file's params_ema (params when absent)
                load_weights_from_options(self.ema.net, self.opt, param_key="params_ema")

    def compile_train_net(self, train_opt: Mapping[str, Any]) -> None:
        """Wrap ``train_net`` in ``torch.compile`` when ``train.compile`` asks for it."""
        compile_opt = _compile_options(train_opt.get("compile"))
        if compile_opt is not None:
            logger.info("torch.compile of the training network (%s)", compile_opt or "defaults")
            self.train_net = torch.compile(self.train_net, **compile_opt)

    def init_step_state(self) -> None:
        """Start the per-step records: losses, skipped steps, save format and resume flags."""
        self.log_dict: dict[str, torch.Tensor] = {}
        self.save_format = self.opt["logger"]["save_format"]
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient norm
        self.reschedule = False  # set by load_training_state when the schedule changed
        self.step_skipped = False
        self._flat_network_file = False

    # ------------------------------------------------------------------ iteration
    def _ensure_train_mode(self, current_iter: int) -> None:
        """Put ``net_g`` in training mode, BatchNorm on population statistics after ``bn_population_after``."""
        population = self.bn_population_after is not None and current_iter > int(self.bn_population_after)
        if population != self._bn_population or not self.net_g.training:
            count = set_train_mode(self.net_g, bn_population=population)
            if population and not self._bn_population and count:
                logger.info("Iteration %d: %d BatchNorm layer(s) now use population statistics", current_iter, count)
            self._bn_population = population

    def update_learning_rate(self, current_iter: int) -> None:
        """Step the scheduler (from the second iteration on), then apply the linear warm-up.

        The warm-up scales the scheduled rate, ``lr * it / warmup_iter`` while ``it < warmup_iter``;
        the scheduler steps from its own values, so the schedule after the warm-up is not shifted
        (basicsr 1.4.2 steps chained schedulers from the warmed-up value).
        """
        if current_iter > 1:
            for scheduler in self.schedulers:
                _set_lrs(scheduler.optimizer, scheduler.get_last_lr())
                scheduler.step()
        factor = warmup_factor(current_iter, self.warmup_iter)
        scheduled = self.schedulers[0].get_last_lr() if self.schedulers else self._base_lrs
        _set_lrs(self.optimizer_g, [lr * factor for lr in scheduled])

    def current_learning_rates(self) -> list[float]:
        """The learning rate of each parameter group of ``optim_g``."""
        return [group["lr"] for group in self.optimizer_g.param_groups]

    def feed_data(self, data: Mapping[str, Any]) -> None:
        """Move a batch's ``lq`` (and ``gt``) to the device."""
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.lq = data["lq"].to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
        if "gt" in data:
            self.gt = data["gt"].to(self.device, non_blocking=True)

    def _losses(self, output: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of ``output`` against ``gt`` and each of its terms by name."""
        total = output.new_zeros(())
        losses: dict[str, torch.Tensor] = {}
        if self.cri_pix is not None:
            losses["l_pix"] = self.cri_pix(output, self.gt)
            total = total + losses["l_pix"]
        if self.cri_perceptual is not None:
            percep, style = self.cri_perceptual(output, self.gt)
            for name, value in (("l_percep", percep), ("l_style", style)):
                if value is not None:
                    losses[name] = value
                    total = total + value
        return total, losses

    def _skip_step(self, current_iter: int, reason: str) -> None:
        """Drop the gradients of a step with a non-finite loss or gradient and count it."""
        self.optimizer_g.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.step_skipped = True
        logger.warning("Iteration %d: %s; step skipped, no weight or EMA update (%d in a row)", current_iter, reason,
                       self.bad_steps)

    def _any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any process."""
        return any_process(flag, self.dist_info) if self.dist_info.dist else flag

    def optimize_parameters(self, current_iter: int) -> None:
        """One training step on the batch of :meth:`feed_data`.

        A non-finite loss (on any process) skips the step before the backward pass; a non-finite
        gradient norm (with ``train.grad_clip``, without the fp16 GradScaler, which skips such steps
        itself) skips it after. Skipped steps change neither the weights, the optimizer state nor
        the EMA; :attr:`bad_steps` counts them in a row and :attr:`step_skipped` tells the caller.
        """
        self._ensure_train_mode(current_iter)
        self.step_skipped = False
        self.optimizer_g.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            output = self.train_net(self.lq)
        total, losses = self._losses(output.float())
        self.log_dict = {k: v.detach() for k, v in losses.items()}
        local_bad = not bool(torch.isfinite(total))
        if self._any_process(local_bad):
            values = ", ".join(f"{k}: {float(v):.4g}" for k, v in self.log_dict.items())
            self._skip_step(current_iter, f"non-finite loss ({values})" if local_bad else
                            "non-finite loss on another process")
            return
        if not self._backward_and_step(total, current_iter):
            return
        if self.ema is not None:
            self.ema.update(self.net_g)
        self.bad_steps = 0

    def _backward_and_step(self, total: torch.Tensor, current_iter: int) -> bool:
        """Backward pass, ``grad_clip`` and optimizer step; returns ``False`` when a non-finite gradient skipped it."""
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer_g)
                torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), float(self.grad_clip))
            self.scaler.step(self.optimizer_g)
            self.scaler.update()
            return True
        total.backward()
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), float(self.grad_clip))
            if not bool(torch.isfinite(norm)):  # gradients are all-reduced: every process agrees
                self._skip_step(current_iter, f"non-finite gradient norm ({float(norm)})")
                return False
        self.optimizer_g.step()
        return True

    # ------------------------------------------------------------------ evaluation
    def eval_network(self) -> nn.Module:
        """The network validation uses: the EMA network when there is one, else ``net_g``."""
        return self.ema.net if self.ema is not None else self.net_g

    @torch.no_grad()
    def test(self, lq: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch with :meth:`eval_network` in evaluation mode.

        An output holding NaN or infinity is a :class:`lkdn.images.NonFiniteOutputError`: no metric
        is computed from it.
        """
        net = self.eval_network()
        was_training = net.training
        net.eval()
        try:
            out = net(lq.to(self.device))
            check_finite_output(out, type(net).__name__)
            return out
        finally:
            if was_training:
                net.train()
                self._bn_population = None  # re-apply BatchNorm population mode at the next step

    def validation(self, loader: Any, *, current_iter: int, save_img: bool = False) -> dict[str, float]:
        """Mean metrics of :meth:`test` on one validation loader (``val.metrics``), as ``lkdn/test.py`` scores.

        With ``save_img`` the SR images go to ``visualization/<image>/<image>_<iter>.png`` (BasicSR's layout).
        """
        val_opt = self.opt.section("val")
        save = None
        if save_img:
            folder = Path(self.opt.path["visualization"])

            def save(name: str, image: Any) -> None:
                write_image(folder / name / f"{name}_{current_iter}.png", image)

        evaluation = evaluate(self.test, loader, metrics=val_opt.get("metrics"), device=self.device, save=save,
                              pbar=bool(val_opt.get("pbar")), desc="validation")  # val may be absent (a direct call)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return evaluation.means()

    # ------------------------------------------------------------------ saving and resuming
    def network_checkpoint(self) -> dict[str, dict[str, torch.Tensor]]:
        """BasicSR's checkpoint dict: ``params`` (and ``params_ema`` with EMA), tensors on the CPU."""
        def cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}

        ckpt = {"params": cpu_state(self.net_g)}
        if self.ema is not None:
            ckpt["params_ema"] = cpu_state(self.ema.net)
        return ckpt

    def save_networks(self, models_dir: str | Path, label: int | str) -> Path:
        """Write ``models/net_g_<label>.pth`` (or ``.safetensors``, ``logger.save_format``) atomically.

        ``.pth``: BasicSR's ``{'params', 'params_ema'}``. ``.safetensors``: the weights validation
        uses (``params_ema`` with EMA, else ``params``) as a flat, self-describing file
        (:func:`lkdn.loading.save_network_file`: ``network_g`` options and scale in the
        metadata, plus ``param_key`` and ``iter``), loadable by ``lkdn/test.py``,
        :func:`lkdn.loading.network_from_file` and spandrel; with EMA the training weights
        ``params`` travel in the training state (:meth:`training_state`).
        """
        ckpt = self.network_checkpoint()
        if self.save_format == "pth":
            return save_file(ckpt, Path(models_dir) / f"net_g_{label}.pth")
        key = "params_ema" if "params_ema" in ckpt else "params"
        return save_network_file(ckpt[key], Path(models_dir) / f"net_g_{label}{SAFETENSORS_SUFFIX}", self.opt["network_g"],
                                 scale=self.opt.get("scale"), extra_metadata={"param_key": key, "iter": str(label)})

    def load_networks(self, path: str | Path) -> None:
        """Load ``params`` (and ``params_ema``) of a checkpoint strictly (resume).

        A flat ``.safetensors`` file of an EMA run holds ``params_ema``; it is loaded into both
        networks, and :meth:`load_training_state` then restores ``params`` from the state.
        """
        load_network(self.net_g, path, param_key="params", strict=True)
        if self.ema is not None:
            load_network(self.ema.net, path, param_key="params_ema", strict=True)
        self._flat_network_file = Path(path).suffix == SAFETENSORS_SUFFIX

    def training_state(self) -> dict[str, Any]:
        """Optimizer, scheduler and gradient-scaler states (the model's part of a training state).

        Also ``bad_steps`` (skipped steps in a row) and, when the network file cannot hold them
        (``.safetensors`` with EMA), the training weights ``net_g_params``.
        """
        state = {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "optimizer_types": [type(o).__name__ for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "schedule": self.schedule_options(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "bad_steps": self.bad_steps,
        }
        if self.save_format == "safetensors" and self.ema is not None:
            state["net_g_params"] = self.network_checkpoint()["params"]
        return state

    def schedule_options(self) -> dict[str, Any]:
        """What sets the learning rate of an iteration: ``optim_g.lr``, ``scheduler`` and ``warmup_iter``."""
        train_opt = self.opt.get("train") or {}
        return thaw({"lr": (train_opt.get("optim_g") or {}).get("lr"), "scheduler": train_opt.get("scheduler"),
                     "warmup_iter": train_opt["warmup_iter"]})

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`training_state` saved.

        The optimizer must be the one the state was saved with (its moments are its own). When the
        schedule (``optim_g.lr``, ``scheduler``, ``warmup_iter``) changed since, the saved scheduler
        state is not loaded and :attr:`reschedule` is set: the trainer then replays the new schedule
        up to the resumed iteration, so the new learning rate applies (with a warning) instead of the
        old one silently.
        """
        self._load_optimizers(state)
        self._load_schedule(state)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self._load_net_g_params(state)

    def _load_optimizers(self, state: Mapping[str, Any]) -> None:
        """Load the optimizer states, which must come from the same optimizer type."""
        types = [type(o).__name__ for o in self.optimizers]
        saved_types = state.get("optimizer_types", types)
        if len(state["optimizers"]) != len(self.optimizers) or list(saved_types) != types:
            raise ValueError(
                f"the training state was saved with optimizer {', '.join(saved_types)} but train.optim_g.type is "
                f"{', '.join(types)}: an optimizer's state cannot continue in another; resume with the old type, or start "
                "a new run from the state's network (path.pretrain_network_g: models/net_g_<iter>.pth)"
            )
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            try:
                optimizer.load_state_dict(saved)
            except (ValueError, KeyError) as err:
                raise ValueError(f"the training state's optimizer state does not fit the network and train.optim_g "
                                 f"({err}); start a new run from the state's network instead") from err

    def _load_schedule(self, state: Mapping[str, Any]) -> None:
        """Load the scheduler states, or set :attr:`reschedule` when the schedule options changed."""
        self.reschedule = (len(state["schedulers"]) != len(self.schedulers)
                           or state.get("schedule", self.schedule_options()) != self.schedule_options())
        if self.reschedule:
            logger.warning("The learning-rate schedule changed since the state was saved (%s -> %s): the new schedule "
                           "applies from the resumed iteration on", state.get("schedule", "?"), self.schedule_options())
        else:
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                scheduler.load_state_dict(saved)

    def _load_net_g_params(self, state: Mapping[str, Any]) -> None:
        """Load the training weights the state holds beside a flat EMA network file."""
        if state.get("net_g_params") is not None:
            params = extract_state_dict(state["net_g_params"], source="training state net_g_params")
            report = mismatch_report(self.net_g, params)
            if report:
                raise ValueError(f"training state: net_g_params do not fit {type(self.net_g).__name__}:\n{report}")
            self.net_g.load_state_dict(params)
        elif self.ema is not None and self._flat_network_file:
            logger.warning("The network file holds only params_ema and the state no net_g_params: training "
                           "continues from the EMA weights")


# -------------------------------------------------------------------- BatchNorm population mode


def batchnorm_modules(net: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``net`` (1d, 2d, 3d, SyncBatchNorm)."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


def set_train_mode(net: nn.Module, *, bn_population: bool) -> int:
    """``net.train()``, then BatchNorm layers to eval mode when ``bn_population``; returns how many."""
    net.train()
    if not bn_population:
        return 0
    layers = batchnorm_modules(net)
    for layer in layers:
        layer.eval()
    return len(layers)
