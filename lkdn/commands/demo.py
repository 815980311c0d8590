"""`make demo`: the main job end to end on built-in data, on the CPU in minutes.

1. builds a small dataset from photographs bundled with scikit-image (no download);
2. trains LKDN-S in its training form (RBSB + re-parameterizable upsampler) with Adan and EMA
   through ``lkdn-train`` (``options/demo/train_LKDN-S_demo_x2.yml``), with validation and
   TensorBoard logs;
3. folds it into the deploy form with ``lkdn-reparam``;
4. tests both forms with ``lkdn-test`` on the held-out photographs, and on Set5 when the
   reference lookup finds it (README "Data and weights");
5. prints bicubic vs trained vs deploy (PSNR/SSIM per test set, parameters, CPU time per
   image) and writes ``results/demo/``: ``summary.json``, ``training_curves.png`` (with
   bicubic's PSNR as a line), ``comparison.png`` (the crop of each held-out photograph where
   the network gains most over bicubic, or, when it is below bicubic everywhere, loses least;
   the picture says which).

Every step is a command printed as it runs, so each can be run alone. Run again, the demo
continues where it stopped: training resumes from its latest state (``--auto-resume``), and a
finished training is not repeated; ``--fresh`` starts over.

    lkdn-demo [--iters N] [--batch N] [--workdir DIR] [--fresh]

The demo reads its option files and the data maker (``scripts/data_preparation/make_demo_data.py``)
from the clone, so it runs from a clone (``make demo``), not from an installed wheel alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from lkdn.commands import COMMANDS
from lkdn.errors import CommandError
from lkdn.utils import command, command_parser, parse_command_line, write_json_atomic

REPO = Path(__file__).resolve().parents[2]
"""The clone: the demo's option files and its data maker are read from it."""
TRAIN_OPT = "options/demo/train_LKDN-S_demo_x2.yml"
TEST_OPT = "options/demo/test_LKDN-S_demo_x2.yml"
MAKE_DATA = "scripts/data_preparation/make_demo_data.py"
EXPERIMENT = "demo_LKDN-S_x2"
SCALE = 2
COMPARE_IMAGES = ("coffee", "chelsea")


FORWARDED = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM}
"""Signals passed on to the running step (as which signal): the trainer saves a state on SIGINT / SIGTERM."""
if hasattr(signal, "SIGHUP"):
    FORWARDED[signal.SIGHUP] = signal.SIGTERM  # a closed terminal: save and stop, as for SIGTERM


class StepInterruptedError(Exception):
    """A step stopped after a forwarded signal; ``status`` is the demo's exit status (128 + signal)."""

    def __init__(self, signum: int, step: str) -> None:
        super().__init__(f"{signal.Signals(signum).name} during {step}")
        self.status = 128 + signum


def run(args: Sequence[str], *, cwd: Path) -> None:
    """Run the step ``args`` in ``cwd`` (a command of :data:`lkdn.commands.COMMANDS`, ``lkdn-train ...``, or
    a script of the clone), printing it as a user would type it.

    The step runs in its own process group, so a Ctrl-C in the terminal reaches the demo only,
    which passes it on once (:data:`FORWARDED`) and waits: the trainer finishes its iteration and
    saves a training state before it exits. A second Ctrl-C is passed on too and stops the step
    at once. After a forwarded signal :class:`StepInterruptedError` is raised once the step has exited.
    """
    step, *rest = args
    if step in COMMANDS:
        print(f"\n$ {shlex.join(args)}", flush=True)
        process = [sys.executable, "-m", "lkdn.commands", *args]
    else:
        print(f"\n$ python {shlex.join(args)}", flush=True)
        process = [sys.executable, str(REPO / step), *rest]
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(FORWARDED[signal.Signals(signum)])

    proc = subprocess.Popen(process, cwd=cwd, start_new_session=os.name == "posix")
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise StepInterruptedError(received[0], step)
    if status != 0:
        raise subprocess.CalledProcessError(status, args)


def mean_metrics(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(m[key] for m in per_image.values()) for key in ("psnr", "ssim")}


def bicubic_metrics(hr_dir: Path, lr_dir: Path) -> dict[str, float]:
    """PSNR/SSIM of MATLAB-bicubic upscaling, with the benchmark protocol."""
    from lkdn.evaluate import image_metrics
    from lkdn.images import image_pairs, read_image
    from lkdn.resize import bicubic_resize

    per_image = {
        hr.stem: image_metrics(bicubic_resize(read_image(lr), SCALE), read_image(hr), crop_border=SCALE)
        for hr, lr in image_pairs(hr_dir, lr_dir)
    }
    return mean_metrics(per_image)


def seconds_per_image(test_opt: Path, weights: Path, lr_dir: Path) -> tuple[int, float]:
    """Parameters and median CPU seconds per held-out image of the network of ``test_opt``."""
    from lkdn.evaluate import super_resolve
    from lkdn.images import read_image
    from lkdn.loading import load_network_from_options
    from lkdn.options import load_options

    net = load_network_from_options(load_options(test_opt), weights=weights)
    images = [read_image(p) for p in sorted(lr_dir.iterdir())]
    times = []
    super_resolve(net, images[0])  # warm-up
    for _ in range(3):  # the median of three passes over the images: the machine may be shared
        for image in images:
            start = time.perf_counter()
            super_resolve(net, image)
            times.append(time.perf_counter() - start)
    return sum(p.numel() for p in net.parameters()), statistics.median(times)


def read_metrics(workdir: Path, name: str) -> dict[str, dict[str, float]]:
    data = json.loads((workdir / "results" / name / "metrics.json").read_text())
    return {dataset: {"psnr": v["psnr"], "ssim": v["ssim"]} for dataset, v in data.items()}


def verdict(gain: float) -> str:
    """The demo's last word: the trained network against bicubic on the held-out photographs (``gain`` in dB)."""
    if round(gain, 2) > 0:
        return f"trained LKDN-S beats bicubic on the held-out photographs by {gain:.2f} dB"
    if round(gain, 2) == 0:
        return "trained LKDN-S is level with bicubic on the held-out photographs (within 0.01 dB)"
    return (f"trained LKDN-S is {-gain:.2f} dB below bicubic on the held-out photographs: train longer "
            "(more --iters) for it to overtake bicubic")


def print_table(summary: dict) -> None:
    forms = ("bicubic", "trained", "deploy")
    print("\n" + "test set".ljust(12) + "".join(f"{f:>20s}" for f in forms))
    for dataset, row in summary["test_sets"].items():
        cells = "".join(f"{row[f]['psnr']:>11.2f}/{row[f]['ssim']:.4f}" for f in forms)
        print(dataset.ljust(12) + cells)
    models = summary["models"]
    print("\n" + "form".ljust(12) + f"{'parameters':>12s}{'CPU s/image':>14s}")
    for form in ("trained", "deploy"):
        print(form.ljust(12) + f"{models[form]['params']:>12,d}{models[form]['seconds_per_image']:>14.3f}")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """The demo; a Ctrl-C lets the running step finish saving, and the same command continues from there."""
    try:
        return demo(argv)
    except StepInterruptedError as stop:
        print(f"\ninterrupted ({stop}); what was done is kept: run the same command again (without --fresh) "
              "to continue", file=sys.stderr)
        return stop.status
    except CommandError as err:  # an unusable --workdir: status 2, as argparse's usage errors
        print(f"error: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"error: the step `{shlex.join(err.cmd)}` failed with exit status {err.returncode}", file=sys.stderr)
        return 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-demo", __doc__,
        ["lkdn-demo",
         "lkdn-demo --iters 200 --batch 8 --workdir /tmp/lkdn-demo --fresh"])
    parser.add_argument("--iters", type=int, default=None, help=f"training iterations (default: train.total_iter of {TRAIN_OPT})")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"training batch size (default: datasets.train.batch_size_per_gpu of {TRAIN_OPT})")
    parser.add_argument("--workdir", type=Path, default=REPO,
                        help="where datasets/, experiments/, tb_logger/ and results/ go (default: the clone)")
    parser.add_argument("--fresh", action="store_true",
                        help="start the training over (the previous run folder is archived) instead of continuing it")
    args = parse_command_line(parser, argv)  # parsed before torch is imported, so --help is fast
    for name, value in (("--iters", args.iters), ("--batch", args.batch)):
        if value is not None and value < 1:
            parser.error(f"{name} must be a positive integer, got {value}")
    return args


def results_folder(workdir: Path, given: Path) -> Path:
    """``<workdir>/results/demo``, created; a :class:`~lkdn.errors.CommandError` naming ``--workdir`` when it cannot be."""
    missing = [path for path in (TRAIN_OPT, TEST_OPT, MAKE_DATA) if not (REPO / path).is_file()]
    if missing:
        raise CommandError(f"the demo runs from a clone of lkdn: {', '.join(missing)} not found under {REPO}")
    out = workdir / "results" / "demo"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocking = next((p for p in (workdir, *workdir.parents) if p.exists() and not p.is_dir()), workdir)
        raise CommandError(f"--workdir {given}: {blocking} is a file, not a folder; give a folder (it is created "
                           "when absent)") from err
    except OSError as err:
        raise CommandError(f"--workdir {given}: cannot create {out} ({err.strerror or err})") from err
    return out


def train(args: argparse.Namespace, workdir: Path) -> None:
    """``lkdn-train`` on the demo recipe, with ``--iters`` and ``--batch`` as overrides; continues a stopped run."""
    overrides = []
    if args.iters is not None:
        n = args.iters
        overrides += [f"train:total_iter={n}", f"train:scheduler:periods=[{n}]", f"train:warmup_iter={min(20, n // 4)}",
                      f"val:val_freq={max(n // 6, 1)}", f"logger:save_checkpoint_freq={max(n // 6, 1)}",
                      f"logger:print_freq={max(n // 30, 1)}"]
    if args.batch is not None:
        overrides.append(f"datasets:train:batch_size_per_gpu={args.batch}")
    train_cmd = ["lkdn-train", "-opt", str(REPO / TRAIN_OPT), "--root-path", str(workdir)]
    if not args.fresh:
        train_cmd.append("--auto-resume")  # the same command continues an interrupted demo
    run(train_cmd + (["--force-yml", *overrides] if overrides else []), cwd=workdir)


def fold(workdir: Path, out: Path) -> tuple[Path, Path, Path]:
    """``lkdn-reparam`` of the trained weights: (trained weights, deploy weights, deploy test options)."""
    models = workdir / "experiments" / EXPERIMENT / "models"
    weights, deploy_weights = models / "net_g_latest.pth", models / "net_g_deploy.pth"
    deploy_opt = out / "test_LKDN-S_demo_deploy_x2.yml"
    run(["lkdn-reparam", "-opt", str(REPO / TEST_OPT), "--input", str(weights), "--output",
         str(deploy_weights), "--fold-num-in", "--output-opt", str(deploy_opt)], cwd=workdir)
    return weights, deploy_weights, deploy_opt


def test_both(workdir: Path, weights: Path, deploy_weights: Path, deploy_opt: Path) -> dict[str, tuple[Path, Path]]:
    """``lkdn-test`` of both forms on the held-out photographs (and Set5 when found); the test sets' (HR, LR)."""
    from lkdn.zoo import find_benchmark

    test_sets = {"demo_test": (workdir / f"datasets/demo/test/GTmod{SCALE}", workdir / f"datasets/demo/test/LRbicx{SCALE}")}
    set5_overrides = []
    set5 = find_benchmark("Set5", SCALE)  # the reference lookup order (README "Data and weights")
    if set5 is not None:
        test_sets["Set5"] = set5
        set5_overrides = [f"datasets:test_2:dataroot_gt={set5[0]}", f"datasets:test_2:dataroot_lq={set5[1]}"]
    for options, checkpoint in ((REPO / TEST_OPT, weights), (deploy_opt, deploy_weights)):
        run(["lkdn-test", "-opt", str(options), "--root-path", str(workdir), "--force-yml",
             f"path:pretrain_network_g={checkpoint}", *set5_overrides], cwd=workdir)
    return test_sets


def summarize(workdir: Path, test_sets: dict[str, tuple[Path, Path]], weights: Path, deploy_weights: Path,
              deploy_opt: Path) -> dict[str, Any]:
    """Bicubic, trained and deploy PSNR/SSIM per test set, parameters and CPU time per image, iterations."""
    import torch

    from lkdn.options import load_yaml

    trained = read_metrics(workdir, load_yaml(REPO / TEST_OPT)["name"])
    deployed = read_metrics(workdir, load_yaml(deploy_opt)["name"])
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    lr_dir = test_sets["demo_test"][1]
    params_t, sec_t = seconds_per_image(REPO / TEST_OPT, weights, lr_dir)
    params_d, sec_d = seconds_per_image(deploy_opt, deploy_weights, lr_dir)
    return {
        "test_sets": {
            name: {"bicubic": bicubic_metrics(hr, lr), "trained": trained[name], "deploy": deployed[name]}
            for name, (hr, lr) in test_sets.items()
        },
        "models": {
            "trained": {"params": params_t, "seconds_per_image": sec_t, "weights": str(weights)},
            "deploy": {"params": params_d, "seconds_per_image": sec_d, "weights": str(deploy_weights)},
        },
        "cpu_threads": torch.get_num_threads(),
        "iterations": load_yaml(workdir / "experiments" / EXPERIMENT / f"{EXPERIMENT}_options.yml")["train"]["total_iter"],
    }


def draw(workdir: Path, out: Path, summary: dict[str, Any], test_sets: dict[str, tuple[Path, Path]],
         deploy_opt: Path) -> None:
    """``lkdn-plot-curves`` (bicubic's PSNR as a line) and ``lkdn-compare-images`` (the largest-gain crops)."""
    from lkdn.options import load_yaml

    bicubic = summary["test_sets"]["demo_test"]["bicubic"]["psnr"]
    run(["lkdn-plot-curves", str(workdir / "experiments" / EXPERIMENT), "--output", str(out / "training_curves.png"),
         "--dataset", "demo_test", "--reference", f"bicubic={bicubic:.2f}", "--smooth", "5"], cwd=workdir)
    hr_dir, lr_dir = test_sets["demo_test"]
    sr_dir = workdir / "results" / load_yaml(deploy_opt)["name"] / "visualization" / "demo_test"
    run(["lkdn-compare-images", "--hr", str(hr_dir), "--lr", str(lr_dir), "--scale", str(SCALE), "--sr",
         f"LKDN-S={sr_dir}", "--images", *COMPARE_IMAGES, "--pick", "gain", "--output", str(out / "comparison.png")],
        cwd=workdir)


def demo(argv: Sequence[str] | None = None) -> int:
    """Every step of the demo, in order (the module's docstring)."""
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    out = results_folder(workdir, args.workdir)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    started = time.perf_counter()
    run([MAKE_DATA, "--root", "datasets/demo", "--scale", str(SCALE)], cwd=workdir)
    train(args, workdir)
    weights, deploy_weights, deploy_opt = fold(workdir, out)
    test_sets = test_both(workdir, weights, deploy_weights, deploy_opt)
    summary = summarize(workdir, test_sets, weights, deploy_weights, deploy_opt)
    write_json_atomic(out / "summary.json", summary)
    draw(workdir, out, summary, test_sets, deploy_opt)
    print_table(summary)
    gain = summary["test_sets"]["demo_test"]["trained"]["psnr"] - summary["test_sets"]["demo_test"]["bicubic"]["psnr"]
    print(f"\n{verdict(gain)}")
    print(f"results: {out} (summary.json, training_curves.png, comparison.png); {time.perf_counter() - started:.0f} s")
    return 0
