"""Benchmark a trained network on paired test sets: ``lkdn-test -opt options/test/LKDN/test_LKDN_x4.yml``.

(``python lkdn/test.py -opt ...``, BasicSR's command, runs this too.)

BasicSR's test schema (``name, scale, num_gpu, datasets.test_*, network_g, path, val``). For
every dataset: super-resolve each LR image (optionally tiled, ``val.tile: {size, pad}``, and/or
with the x8 self-ensemble, ``val.self_ensemble: true``), round to uint8 with
``basicsr.utils.tensor2img`` and score against the GT with ``basicsr.metrics.calculate_metric``
and the options of ``val.metrics``, exactly as BasicSR's ``SRModel.validation`` does. Writes
under ``results/<name>/``: the log, SR images when ``val.save_img``
(``visualization/<dataset>/<image>_<suffix or name>.png``) and ``metrics.json``; prints a
table with one row per dataset. A dataset whose folder is missing is an error, or is skipped
with a warning when the dataset says ``optional: true``. Missing data and missing weights are
reported together, before ``results/<name>/`` is created. Scoring is :func:`lkdn.evaluate.evaluate`,
the same function training validation and the published-number tests use.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lkdn.commands import BACKENDS
from lkdn.errors import LkdnError
from lkdn.utils import command, command_parser, parse_command_line, setup_logging, thaw, write_json_atomic
from lkdn.zoo import checkpoint_for_path, find_checkpoint

if TYPE_CHECKING:
    import torch

    from lkdn.options import Options

#: the default of ``--root-path``: the clone's root (BasicSR's), or the current folder where lkdn is installed
ROOT = Path(__file__).resolve().parents[2]
if not (ROOT / "setup.py").is_file():
    ROOT = Path.cwd()

logger = logging.getLogger("lkdn.test")

DATAROOT_KEYS = ("dataroot_gt", "dataroot_lq")


class DatasetMissingError(LkdnError, FileNotFoundError):
    """A test dataset's folder does not exist; the message names the folder and the option key."""


#: the errors that are builtin, with messages of their own (an unwritable results folder), reported as
#: one line as the :class:`~lkdn.errors.LkdnError` ones are
BUILTIN_ERRORS = (ValueError, OSError)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``lkdn-test`` (``--root`` and the underscore spellings are accepted too)."""
    parser = command_parser(
        "lkdn-test", __doc__.splitlines()[0],
        ["lkdn-test -opt options/test/LKDN/test_LKDN_x4.yml",
         "lkdn-test -opt options/test/LKDN/test_LKDN_x4.yml --force-yml num_gpu=0 --root-path runs --backend auto"],
        formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-opt", required=True, help="path to the test option YAML")
    parser.add_argument(
        "--force-yml", nargs="+", default=[], metavar="KEY=VALUE",
        help="override options, e.g. num_gpu=0 datasets:test_1:dataroot_gt=../data/HR",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: from num_gpu; CUDA when present)")
    parser.add_argument(
        "--backend", default="torch", choices=(*BACKENDS, "auto"),
        help="inference runtime (default torch); onnxruntime, openvino, ncnn run the folded network on the CPU,\n"
             "verified against PyTorch when built; auto: the fastest of those installed (docs/deployment.md)",
    )
    parser.add_argument(
        "--root-path", default=str(ROOT),
        help="folder under which results/<name>/ is written (default: the clone's root, or the current folder)",
    )
    return parse_command_line(parser, argv, aliases={"--root": "--root-path"})


def check_dataset_folders(key: str, dataset_opt: Mapping[str, Any]) -> str | None:
    """Return ``None`` when the folders of ``datasets.<key>`` exist, else a message naming them.

    Raises:
        DatasetMissingError: a folder is missing and the dataset is not ``optional``.
    """
    for root_key in DATAROOT_KEYS:
        folder = dataset_opt.get(root_key)
        if folder is None or os.path.exists(folder):
            continue
        message = f"datasets.{key}.{root_key}: folder not found: {folder} (dataset {dataset_opt.get('name', key)})"
        if dataset_opt.get("optional", False):
            return message
        raise DatasetMissingError(
            f"{message}. Prepare it (datasets/README.md), point the option at it (--force-yml "
            f"datasets:{key}:{root_key}=<folder>), or mark the dataset 'optional: true' to skip it when absent."
        )
    return None


def _weights_problem(opt: Mapping[str, Any], *, fetch: bool) -> str | None:
    """What is wrong with the weights of ``opt`` (None: they are here, or were just fetched when ``fetch``)."""
    from lkdn.checkpoint import CheckpointError
    from lkdn.loading import weights_file

    source = (opt.get("path") or {}).get("pretrain_network_g")
    if not source:
        return "path.pretrain_network_g: no weights named; set it to your weights (published ones: " \
               "lkdn-download --list)"
    if fetch:  # a published checkpoint downloads on first use
        try:
            found = weights_file(opt)
        except CheckpointError as err:
            return f"path.pretrain_network_g: {err}"
        return None if found.exists() else f"path.pretrain_network_g: checkpoint not found: {found}"
    path = Path(os.path.expanduser(str(source)))
    name = checkpoint_for_path(path)
    if path.exists() or (name is not None and find_checkpoint(name) is not None):
        return None
    if name is not None:
        return (f"path.pretrain_network_g: {source} is missing; get it with lkdn-download --names {name} "
                "(or let this command download it once the data is there)")
    return f"path.pretrain_network_g: checkpoint not found: {source}; point it at your weights"


def check_inputs(opt: Options) -> None:
    """Check every required test folder and the weights together, before anything is written.

    Missing data and missing weights are reported in one message (a published checkpoint is not
    downloaded while the data is missing); then each dataset is built (empty folders, LR/HR
    names that do not match are :class:`DataError`).

    Raises:
        DatasetMissingError: a required folder is missing (the message adds any weights problem).
        CheckpointError: the data is here and the weights are not (and could not be downloaded).
    """
    from lkdn.checkpoint import CheckpointError

    problems = []
    for key, dataset_opt in sorted(opt.section("datasets").items()):
        try:
            check_dataset_folders(key, dataset_opt)
        except DatasetMissingError as err:
            problems.append(str(err))
    weights = _weights_problem(opt, fetch=not problems)
    if problems:
        raise DatasetMissingError("; and ".join(problems + ([weights] if weights else [])))
    if weights:
        raise CheckpointError(weights)
    for key, dataset_opt in sorted(opt.section("datasets").items()):
        if check_dataset_folders(key, dataset_opt) is None:
            build_test_loader(key, dataset_opt)


def build_test_loader(key: str, dataset_opt: Mapping[str, Any]) -> torch.utils.data.DataLoader:
    """``datasets.<key>`` through basicsr's ``DATASET_REGISTRY``, checked, in a batch-1 loader in file order.

    The dataset is checked and wrapped (:func:`lkdn.data.safe_dataset.build_checked_dataset`):
    missing folders, empty folders, unreadable images and LR/HR pairs that do not fit the scale are
    :class:`DataError` naming the files.
    """
    import basicsr.data  # noqa: F401 (registers basicsr's datasets)
    import torch

    from lkdn.data.safe_dataset import build_checked_dataset

    options = {"io_backend": {"type": "disk"}, **thaw(dataset_opt)}
    dataset = build_checked_dataset(options, where=f"datasets.{key}")
    return torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)


def save_path(opt: Mapping[str, Any], dataset_name: str, image_name: str) -> Path:
    """Where BasicSR saves a test image: ``visualization/<dataset>/<image>_<suffix or name>.png``."""
    suffix = (opt.get("val") or {}).get("suffix") or opt["name"]
    return Path(opt["path"]["visualization"]) / dataset_name / f"{image_name}_{suffix}.png"


def format_table(results: Mapping[str, Mapping[str, Any]], skipped: Sequence[str], metric_names: Sequence[str]) -> str:
    """One row per dataset: name, number of images, then each metric (PSNR 2 decimals, others 4)."""
    header = ["dataset", "images", *metric_names]
    rows = [header]
    for name, entry in results.items():
        cells = [name, str(entry["num_images"])]
        for metric in metric_names:
            value = entry.get(metric)
            cells.append("-" if value is None else (f"{value:.2f}" if "psnr" in metric.lower() else f"{value:.4f}"))
        rows.append(cells)
    rows += [[name, "skipped", *(["-"] * len(metric_names))] for name in skipped]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def test_pipeline(opt: Options, *, device: torch.device, backend: str = "torch") -> dict[str, Any]:
    """Run every test dataset of ``opt`` with ``backend`` (:class:`lkdn.Upscaler`); write ``metrics.json``; return its content."""
    from lkdn.evaluate import evaluate
    from lkdn.images import write_image
    from lkdn.options import OptionsError, Val, with_defaults
    from lkdn.upscaler import Upscaler

    datasets = opt.section("datasets")
    if not datasets:
        raise OptionsError("datasets: no test dataset in the options")
    # Fail on a missing required folder before spending time on the network.
    to_run, skipped = [], []
    for key, dataset_opt in sorted(datasets.items()):
        missing = check_dataset_folders(key, dataset_opt)
        name = str(dataset_opt.get("name", key))
        if missing:
            logger.warning("skipping optional dataset %s: %s", name, missing)
            skipped.append(name)
        else:
            to_run.append((key, name, dataset_opt))
    val = with_defaults(opt.section("val"), Val)
    # the Upscaler's exact rewrites (re-parameterization, channels_last, ...): output within 1e-4
    net = Upscaler.from_options(opt, device=device, backend=backend)
    logger.info("network %s on %s: %s", opt.network_g.get("type"), device, net)
    metrics = val.get("metrics")
    results: dict[str, Any] = {}
    for key, name, dataset_opt in to_run:
        loader = build_test_loader(key, dataset_opt)
        logger.info("Testing %s: %d images", name, len(loader.dataset))
        start = time.perf_counter()
        save = None
        if val["save_img"]:
            def save(image_name: str, image: Any, name: str = name) -> None:
                write_image(save_path(opt, name, image_name), image)
        evaluation = evaluate(net, loader, metrics=metrics, device=device, save=save, desc=f"Test {name}",
                              total=len(loader.dataset))
        results[name] = evaluation.as_json()
        if net.tile:
            results[name]["tiles"] = f"{net.tile} LR pixels, {net.tile_pad} of context: {net.tiling.describe()}"
        summary = ", ".join(f"{k}: {v:.4f}" for k, v in evaluation.means().items())
        logger.info("%s: %s (%d images, %.1f s)", name, summary or "no metrics", len(loader.dataset),
                    time.perf_counter() - start)
    metrics_file = Path(opt["path"]["results_root"]) / "metrics.json"
    write_json_atomic(metrics_file, results)
    logger.info("metrics written to %s", metrics_file)
    print(format_table(results, skipped, list(metrics or {})))  # noqa: T201 (the command's table)
    return results


def score(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments and options, set up logging under ``results/<name>/`` and run the test; the metrics
    (``metrics.json``). Clear errors are raised (:func:`main` prints them)."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    import torch
    import yaml

    from lkdn.options import OptionsError, device_of, parse_options
    from lkdn.upscaler import resolve_device

    opt = parse_options(args.opt, is_train=False, overrides=args.force_yml, root_path=args.root_path)  # validates
    if args.device is not None:
        device = resolve_device(args.device)
    else:  # the non-torch backends run on the CPU
        device = device_of(opt) if args.backend == "torch" else torch.device("cpu")
    if not opt.section("datasets"):
        raise OptionsError("datasets: no test dataset in the options")
    check_inputs(opt)  # data and weights, before results/<name>/ is created
    results_root = Path(opt["path"]["results_root"])
    try:
        results_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the results folder {results_root} ({err.strerror or err}); choose another "
                      "--root-path or make it writable") from err
    stamp = time.strftime("%Y%m%d_%H%M%S")
    setup_logging(results_root / f"test_{opt.name}_{stamp}.log")
    logger.info("options from %s:\n%s", args.opt, yaml.safe_dump(thaw(opt), sort_keys=False))
    return test_pipeline(opt, device=device, backend=args.backend)



@command(clear=BUILTIN_ERRORS)
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-test``: :func:`score`; 0, or 1 after one ``error: ...`` line."""
    score(argv)
    return 0
