"""How deep the two main paths run: the lkdn files whose functions one job calls, and how often it opens its YAML.

    python benchmarks/bench_paths.py            # both paths, a Markdown table
    python benchmarks/bench_paths.py --list     # and the files of each path
    python benchmarks/run.py --only paths       # the section of docs/benchmarks.md

* **inference**: one 48x48 image through ``lkdn-infer -opt <test YAML>`` (a small LKDN x2 with its
  weights), as a user runs it.
* **train**: the shipped LKDN x2 recipe through ``python lkdn/train.py -opt`` up to the first optimizer step,
  where it stops; shrunk to run anywhere (a small LKDN x2 on four 64x64 pairs from disk, no validation).

Each path runs in a fresh interpreter under ``sys.setprofile``; a file counts when one of its
functions is called (module and class bodies run by an import do not count). Files under ``lkdn/archs/``
are the networks and are counted apart. An audit hook counts the ``open`` calls on the YAML.
Not a timing: the counts are the same on every machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

NETWORK = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1}

TEST_YAML = """name: paths
scale: 2
num_gpu: 0
network_g: {network}
path:
  pretrain_network_g: {weights}
"""

RECIPE = ROOT / "options" / "train" / "LKDN" / "train_LKDN_x2.yml"


def small_recipe(hr: Path, lr: Path) -> dict:
    """The shipped LKDN x2 recipe, as a user runs it, shrunk: the small network, four 64x64 pairs
    from disk on the CPU, four iterations, no validation and no TensorBoard."""
    opt = yaml.safe_load(RECIPE.read_text())
    train = opt["datasets"]["train"]
    train.update(dataroot_gt=str(hr), dataroot_lq=str(lr), io_backend={"type": "disk"}, gt_size=32,
                 num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    opt.update(name="paths", num_gpu=0, manual_seed=7, network_g=dict(NETWORK), datasets={"train": train},
               logger={"print_freq": 1, "save_checkpoint_freq": 1000, "use_tb_logger": False})
    del opt["val"]
    opt["train"]["total_iter"] = 4
    return opt


class FirstStep(BaseException):  # noqa: N818 (a stop signal, not an error; BaseException passes every handler)
    """Raised after the first optimizer step to end the traced training."""


def make_inputs(folder: Path) -> dict[str, Path]:
    """The images, weights and YAMLs of both paths, under ``folder``."""
    import cv2
    import numpy as np
    import torch

    from lkdn.archs import build_network

    hr_dir, lr_dir = folder / "HR", folder / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        hr = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(hr_dir / f"{index}.png"), hr)
        cv2.imwrite(str(lr_dir / f"{index}.png"), cv2.resize(hr, (32, 32), interpolation=cv2.INTER_CUBIC))
    weights = folder / "net.pth"
    torch.save({"params": build_network(dict(NETWORK)).state_dict()}, weights)
    network = json.dumps(NETWORK)
    test_yml = folder / "test.yml"
    test_yml.write_text(TEST_YAML.format(network=network, weights=weights))
    train_yml = folder / "train.yml"
    train_yml.write_text(yaml.safe_dump(small_recipe(hr_dir, lr_dir)))
    return {"test_yml": test_yml, "train_yml": train_yml, "image": lr_dir / "0.png", "out": folder / "out"}


def trace(job: str, inputs: dict[str, str]) -> dict[str, object]:
    """Run ``job`` in this process under the profile and audit hooks; the files it called into and the YAML opens."""

    package = Path(__import__("lkdn").__file__).resolve().parent  # this tree's lkdn
    yml = Path(inputs["test_yml" if job == "inference" else "train_yml"]).resolve()
    called: set[str] = set()
    opens = []

    def profile(frame, event, arg):  # noqa: ANN001, ANN202, ARG001 (sys.setprofile's signature)
        if event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED:  # functions, not module or class bodies
            called.add(frame.f_code.co_filename)

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            try:
                if Path(args[0]).resolve() == yml:
                    opens.append(str(args[0]))
            except (OSError, ValueError):
                pass

    def stop(optimizer, args, kwargs):  # noqa: ANN001, ANN202, ARG001 (torch's hook signature)
        raise FirstStep

    sys.addaudithook(audit)
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(stop)
    if job == "inference":
        script = ROOT / "scripts" / "inference.py"
        sys.argv = [str(script), "-opt", inputs["test_yml"], "--input", inputs["image"], "--output", inputs["out"]]
    else:
        script = ROOT / "lkdn" / "train.py"
        sys.argv = [str(script), "-opt", inputs["train_yml"], "--root-path", str(Path(inputs["out"]).parent)]
    sys.setprofile(profile)
    stopped = False
    try:
        runpy.run_path(str(script), run_name="__main__")
    except FirstStep:
        stopped = True
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    finally:
        sys.setprofile(None)
    if job == "train" and not stopped:
        raise RuntimeError("training ended without an optimizer step")
    ours = sorted({str(Path(f).resolve().relative_to(package.parent)) for f in called
                   if Path(f).resolve().is_relative_to(package)})
    return {"files": [f for f in ours if not f.startswith("lkdn/archs/")],
            "archs": [f for f in ours if f.startswith("lkdn/archs/")], "yaml_opens": len(opens)}


def measure(job: str, inputs: dict[str, Path]) -> dict[str, object]:
    """:func:`trace` of ``job`` in a fresh interpreter."""
    arguments = json.dumps({key: str(value) for key, value in inputs.items()})
    command = [sys.executable, str(Path(__file__).resolve()), "--trace", job, arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=str(inputs["out"].parent))
    if done.returncode != 0:
        raise RuntimeError(f"{job} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


#: the most lkdn files outside lkdn/archs/ each path may call (the layering goal of the README)
GOALS = {"inference": 8, "train": 14}


def measure_both() -> dict[str, dict[str, object]]:
    """Both paths, each in a fresh interpreter, on inputs made in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        return {job: measure(job, inputs) for job in ("inference", "train")}


def table(results: dict[str, dict[str, object]], *, files: bool) -> str:
    """The Markdown table of ``results`` (and, with ``files``, the files of each path)."""
    lines = ["| path | lkdn files called (outside `lkdn/archs/`) | goal | `lkdn/archs/` files | YAML opened |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for job, result in results.items():
        lines.append(f"| {job} | {len(result['files'])} | {GOALS[job]} | {len(result['archs'])} | "
                     f"{result['yaml_opens']} |")
    if files:
        lines += [""] + [f"* {job}: " + ", ".join(f"`{f}`" for f in result["files"]) for job, result in results.items()]
    return "\n".join(lines)


def run(ctx: dict) -> str:  # noqa: ARG001 (benchmarks/run.py's signature; the counts need no threads)
    """The section of docs/benchmarks.md."""
    return "\n".join([
        "## Code paths: the lkdn files one image and one training start run through",
        "",
        "One 48x48 image through `lkdn-infer -opt <test YAML>`, and the shipped LKDN x2 recipe (shrunk: a small network, "
        "four 64x64 pairs, no validation) through `lkdn/train.py` up to its first optimizer step, each in a fresh interpreter under `sys.setprofile`: a file counts when one of "
        "its functions is called (module bodies run by an import do not). The networks (`lkdn/archs/`) are "
        "counted apart. Not a timing: the counts are the same on every machine.",
        "",
        table(measure_both(), files=True),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the files of each path")
    parser.add_argument("--trace", nargs=2, metavar=("JOB", "INPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trace:
        print(json.dumps(trace(args.trace[0], json.loads(args.trace[1]))))  # noqa: T201 (read by the parent)
        return 0
    print(table(measure_both(), files=args.list))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
