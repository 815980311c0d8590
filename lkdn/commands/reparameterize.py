"""Fold a trained network into its deploy form, verify it, and write the deploy checkpoint.

    lkdn-reparam -opt options/train/LKDN/train_LKDN-S_x4_from_scratch.yml \\
        --input experiments/LKDN-S_C42_A42_adam_ema_x4_DF2K_from_scratch_950k/models/net_g_latest.pth \\
        --output experiments/pretrained_models/LKDN-S_deploy_x4.pth --fold-num-in \\
        --output-opt options/test/LKDN/test_LKDN-S_deploy_x4.yml

``-opt`` is any YAML (train or test) whose ``network_g`` is the training form; it is validated
as every entry point validates it, after ``--force-yml`` overrides. ``--input`` is a checkpoint,
or a training run's folder (``experiments/<name>``, or its ``models/``): its latest checkpoint is
folded (``net_g_latest`` once training has ended, else the highest ``net_g_<iter>``). For a
checkpoint of a training run, ``-opt`` may be left out: the run's saved options
(``experiments/<name>/<name>_options.yml``, the template with the overrides it was trained
with) are used, and they replace the run's own template given as ``-opt``, so the deploy YAML
tests on the run's real folders. The weights are taken from ``--param-key`` (``params_ema`` by
default, falling back to ``params``; bare state dicts too); a warning says when the EMA has
seen too few updates to be trained (the run's iteration and ``train.ema_decay``, from its
saved options). Every foldable module (any module
with ``fuse()``) is replaced by its deploy module, and the network built from the deploy options
is loaded strictly with the folded weights and compared with the original on a random input
(eval mode, float32 and float64). The deploy options are the architecture's explicit ones when
its contract declares them (LKDN-S ``conv: BSConvU``, RepSR ``deploy: true``), else the generic
``reparameterized: true``. Only when both checks agree within the tolerances is anything
written: ``{'params': state_dict}`` for ``.pth``, or the flat state dict with
``lkdn_format``/``network_g``/``scale`` metadata for ``.safetensors``. ``--output-opt`` writes the
matching deploy test YAML. Exit status: 0 written, 1 verification failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lkdn.errors import LkdnError
from lkdn.utils import (
    command,
    command_parser,
    file_in_the_way,
    parse_command_line,
    refuse_overwriting_inputs,
    thaw,
    write_text_atomic,
)
from lkdn.zoo import resolve_weights

if TYPE_CHECKING:
    from lkdn.options import Options

VERIFY_SIZE = (29, 23)  # odd, not square: catches padding and transposition mistakes
TEST_KEYS = ("name", "model_type", "scale", "num_gpu", "manual_seed")
CHECKPOINT_NAME = re.compile(r"net_g_(\d+|latest)\.(pth|safetensors)")
EMA_UNTRAINED = 0.1  # warn when more than this share of params_ema is still the initial weights


class ReparamError(LkdnError, RuntimeError):
    """The inputs cannot be re-parameterized; the message says which file or key is at fault."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-reparam", __doc__,
        ["lkdn-reparam -opt options/train/LKDN/train_LKDN-S_x4_from_scratch.yml --input experiments/<name>/models/net_g_latest.pth --output experiments/pretrained_models/LKDN-S_deploy_x4.pth --fold-num-in --output-opt options/test/LKDN/test_LKDN-S_deploy_x4.yml"])
    parser.add_argument("-opt", "--opt", type=Path, default=None,
                        help="YAML whose network_g is the training form (default: the training run's saved options)")
    parser.add_argument("--input", required=True, type=Path,
                        help="training checkpoint (.pth or .safetensors), or a run folder: its latest checkpoint")
    parser.add_argument("--output", required=True, type=Path, help="deploy checkpoint to write (.pth or .safetensors)")
    parser.add_argument(
        "--param-key", default="params_ema",
        help="weights to fold: params_ema (default; falls back to params) or params; ignored for bare state dicts",
    )
    parser.add_argument("--fold-num-in", action="store_true", help="also fold the input replication (num_in: 1)")
    parser.add_argument("--force-yml", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. datasets:val:dataroot_gt=/photos (as lkdn/test.py)")
    parser.add_argument("--output-opt", type=Path, help="also write the deploy test YAML here")
    parser.add_argument("--atol", type=float, default=1e-5, help="float32 tolerance of the check (default 1e-5)")
    parser.add_argument(
        "--atol64", type=float, default=1e-9, help="float64 tolerance, relative to the output magnitude (default 1e-9)"
    )
    return parse_command_line(parser, argv)


def chosen_key(ckpt: Any, param_key: str | None) -> str:
    """Which entry of ``ckpt`` :func:`extract_state_dict` takes (for the report)."""
    from lkdn.checkpoint import PREFERRED_KEYS

    if isinstance(ckpt, Mapping) and ckpt and all(hasattr(v, "shape") for v in ckpt.values()):
        return "bare state dict"
    keys = [param_key] if param_key else []
    for key in keys + [k for k in PREFERRED_KEYS if k not in keys]:
        if isinstance(ckpt, Mapping) and isinstance(ckpt.get(key), Mapping):
            return key
    return "?"


def numbered_checkpoints(models: Path) -> list[tuple[int, Path]]:
    """``(iteration, file)`` of the ``net_g_<iter>`` checkpoints in ``models``, by iteration."""
    if not models.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in models.iterdir()
             if (m := CHECKPOINT_NAME.fullmatch(p.name)) and m.group(1) != "latest"]
    return sorted(found)


def pick_checkpoint(given: Path) -> Path:
    """``--input``: a checkpoint as given, or the latest checkpoint of a run folder (or of its ``models/``)."""
    if given.is_dir():
        models = given / "models" if (given / "models").is_dir() else given
        for suffix in ("pth", "safetensors"):
            if (models / f"net_g_latest.{suffix}").is_file():
                return models / f"net_g_latest.{suffix}"
        numbered = numbered_checkpoints(models)
        if not numbered:
            raise ReparamError(f"--input {given}: no checkpoint in {models} (training writes models/net_g_<iter>.pth "
                               "every logger.save_checkpoint_freq iterations)")
        return numbered[-1][1]
    if not given.exists() and CHECKPOINT_NAME.fullmatch(given.name):
        numbered = numbered_checkpoints(given.parent)
        if numbered:
            raise ReparamError(
                f"--input {given} does not exist (net_g_latest is written when training ends); the latest checkpoint "
                f"is {numbered[-1][1]}: pass it, or the run folder {given.parent.parent} to fold its latest checkpoint")
    return given


def run_folder(checkpoint: Path) -> Path | None:
    """The training run (``experiments/<name>``) that wrote ``checkpoint`` in its ``models/``, when it has saved options."""
    run = checkpoint.absolute().parent.parent
    if checkpoint.absolute().parent.name != "models" or run_options_file(run) is None:
        return None
    return run


def run_options_file(run: Path) -> Path | None:
    """A run's saved options: ``<name>_options.yml`` (the only ``*_options.yml`` of an archived run)."""
    named = run / f"{run.name}_options.yml"
    if named.is_file():
        return named
    found = sorted(run.glob("*_options.yml")) if run.is_dir() else []
    return found[0] if len(found) == 1 else None


def choose_options(given: Path | None, run: Path | None) -> Path:
    """``-opt``, or the run's saved options when it is left out or is the run's own training template."""
    from lkdn.options import load_yaml

    saved = run_options_file(run) if run is not None else None
    if given is None:
        if saved is None:
            raise ReparamError("-opt: give the YAML whose network_g is the training form (it can be left out only "
                               "when --input is a checkpoint of a training run, experiments/<name>/models/...)")
        print(f"options: {saved} (the training run's saved options)")
        return saved
    if saved is not None and given.is_file():
        template, ran = load_yaml(given), load_yaml(saved)
        if isinstance(template, Mapping) and "train" in template and template.get("name") == ran.get("name"):
            print(f"options: {saved}, the run's saved options ({given} with the overrides it was trained with)")
            return saved
    return given


def checkpoint_iteration(checkpoint: Path, run: Path | None) -> int | None:
    """The training iteration ``checkpoint`` was saved at (its name, or for ``net_g_latest`` the run's end)."""
    match = CHECKPOINT_NAME.fullmatch(checkpoint.name)
    if match is None or run is None:
        return None
    if match.group(1) != "latest":
        return int(match.group(1))
    from lkdn.options import load_yaml
    from lkdn.training.state import latest_state

    state = latest_state(run / "training_states")
    total = (load_yaml(run_options_file(run)).get("train") or {}).get("total_iter")  # type: ignore[arg-type]
    ends = [int(state.stem)] if state is not None else []
    ends += [int(total)] if isinstance(total, (int, float)) else []
    return max(ends) if ends else None


def ema_warning(key: str, iteration: int | None, decay: Any) -> str | None:
    """A warning when ``params_ema`` is mostly the initial weights: ``decay ** iteration`` above 10%."""
    if key != "params_ema" or iteration is None or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        return None
    initial = decay ** iteration
    if initial <= EMA_UNTRAINED:
        return None
    needed = math.ceil(math.log(EMA_UNTRAINED) / math.log(decay))
    return (f"warning: params_ema has seen {iteration} update(s) at train.ema_decay {decay:g}: {100 * initial:.0f}% "
            "of it is still the initial (random) weights, so the folded network is nearly untrained; fold the "
            f"trained weights with --param-key params, or train for at least {needed} iterations")


def deploy_test_options(
    opt: Mapping[str, Any], *, network_opt: Mapping[str, Any], weights: Path, scale: int
) -> dict[str, Any]:
    """The input options with the deploy network and weights; a train config becomes a test one."""
    opt = thaw(opt)
    datasets = opt.get("datasets") or {}
    is_train = "train" in opt or any(str(k).startswith("train") for k in datasets)
    if is_train:
        evaluation = [d for k, d in datasets.items() if not str(k).startswith("train")]
        out = {k: opt[k] for k in TEST_KEYS if k in opt}
        out["datasets"] = {f"test_{i}": d for i, d in enumerate(evaluation, start=1)}
        if isinstance(opt.get("val"), Mapping):
            out["val"] = {k: v for k, v in opt["val"].items() if k != "val_freq"}
    else:
        out = opt
    name = str(out.get("name", "deploy")).removesuffix("_train_form")  # the training form's test run: its deploy twin
    out["name"] = name if name.endswith("_deploy") else f"{name}_deploy"
    out.setdefault("scale", scale)
    out["network_g"] = dict(network_opt)
    path = {} if is_train else dict(out.get("path") or {})
    path.pop("resume_state", None)
    path.update(pretrain_network_g=str(weights), param_key_g="params", strict_load_g=True)
    out["path"] = path
    # keep the usual key order: network_g and path after datasets, val last
    order = [*TEST_KEYS, "datasets", "network_g", "path", "val"]
    return {k: out[k] for k in order if k in out} | {k: v for k, v in out.items() if k not in order}


def summary(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"


def load_input(args: argparse.Namespace) -> tuple[Options, Any, str]:
    """The validated options, the network with the input weights, and the checkpoint key they came from."""
    from lkdn.archs import build_network
    from lkdn.checkpoint import load_file
    from lkdn.loading import load_weights_from_options
    from lkdn.options import load_options, load_yaml

    args.input = pick_checkpoint(args.input)
    run = run_folder(args.input)
    args.opt = choose_options(args.opt, run)
    refuse_overwriting_inputs({"--output": args.output, "--output-opt": args.output_opt}, {"--input": args.input, "-opt": args.opt})
    for given, name in ((args.output, "--output"), (args.output_opt, "--output-opt")):
        if given is not None and given.is_dir():
            raise ReparamError(f"{name} {given} is a folder; give a file name")
        blocking = file_in_the_way(given) if given is not None else None
        if blocking is not None:
            raise ReparamError(f"{name} {given}: {blocking} is a file, not a folder; choose another path")
    opt = load_options(args.opt, overrides=args.force_yml)
    args.input = resolve_weights(args.input)  # a published checkpoint: its copy in the lookup order, or the download
    key = chosen_key(load_file(args.input), args.param_key)
    net = load_weights_from_options(build_network(opt.network_g), opt, weights=args.input, param_key=args.param_key)
    decay = (opt.get("train") or {}).get("ema_decay")
    if decay is None and run is not None:
        decay = (load_yaml(run_options_file(run)).get("train") or {}).get("ema_decay")  # type: ignore[arg-type]
    warning = ema_warning(key, checkpoint_iteration(args.input, run), decay)
    if warning:
        print(warning, file=sys.stderr)
    return opt, net.eval(), key


def reparameterize(args: argparse.Namespace) -> int:
    """Fold, verify and write; 0, or 1 when the verification fails (nothing written)."""
    from lkdn.archs import build_network
    from lkdn.deploy import input_channels
    from lkdn.loading import deploy_form, save_network_file
    from lkdn.options import OptionsError
    from lkdn.profiling import count_parameters
    from lkdn.reparam import fold_summary, verify_reparameterization

    opt, net, key = load_input(args)
    network_opt = opt.network_g
    if args.fold_num_in and not callable(getattr(net, "fold_num_in", None)):
        raise ReparamError(f"--fold-num-in: {network_opt.get('type')} has no input replication to fold")
    folds = fold_summary(net)
    print(f"loaded {args.input} ({key}): {network_opt.get('type')}, {count_parameters(net):,d} parameters")
    if not folds and not args.fold_num_in:
        print(f"warning: {network_opt.get('type')} has no foldable module; the weights are copied unchanged")

    folded, deploy_opt = deploy_form(net, network_opt, fold_num_in=args.fold_num_in)
    deploy = build_network(deploy_opt, where="deploy network_g").eval()
    deploy.load_state_dict(folded.state_dict())

    check = verify_reparameterization(
        net, deploy, fold_num_in=args.fold_num_in, input_shape=(1, input_channels(deploy), *VERIFY_SIZE),
        atol=args.atol, atol64=args.atol64,
    )
    print(check.describe())
    if not check.ok:
        print(
            f"error: verification failed: the deploy network differs from the original by "
            f"{check.max_diff32:.3g} (float32) / {check.max_diff64:.3g} (float64), more than the tolerances "
            f"{check.atol:.3g} / {check.atol64:.3g}; nothing written to {args.output}",
            file=sys.stderr,
        )
        return 1
    measured = check.output_shape[-1] // VERIFY_SIZE[-1]
    if measured not in (1, opt.scale):  # 1: networks that take a pre-upsampled input (VDSR)
        raise OptionsError(f"{args.opt}: scale {opt.scale} but the network upscales by {measured}")

    save_network_file(deploy.state_dict(), args.output, deploy_opt, scale=opt.scale)
    before, after = count_parameters(net), count_parameters(deploy)
    print(f"folded: {summary(folds)}" + (f"; num_in {getattr(net, 'num_in', '?')} -> 1" if args.fold_num_in else ""))
    print(f"parameters: {before:,d} -> {after:,d} ({after - before:+,d}, {100 * (after - before) / before:+.1f}%)")
    print(f"wrote {args.output} (deploy network_g: {json.dumps(deploy_opt)})")
    if args.output_opt is not None:
        test_opt = deploy_test_options(opt.as_written(), network_opt=deploy_opt, weights=args.output, scale=opt.scale)
        header = (
            f"# Deploy form written by lkdn-reparam from {args.opt} and {args.input} ({key}).\n"
            f"# Verified against the training form: {check.describe()}.\n"
        )
        try:
            write_text_atomic(args.output_opt, header + yaml.safe_dump(test_opt, sort_keys=False))
        except OSError as err:
            raise ReparamError(f"cannot write --output-opt {args.output_opt}: {err.strerror or err} (the deploy "
                               f"checkpoint {args.output} was written)") from err
        print(f"wrote {args.output_opt}")
    return 0


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-reparam``: 0 written, 1 verification failed, 2 after one ``error: ...`` line for a bad input."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    try:
        return reparameterize(args)
    except (LkdnError, ValueError) as err:  # the options, the checkpoint, a download: bad input, status 2
        print(f"error: {err}", file=sys.stderr)
        return 2
