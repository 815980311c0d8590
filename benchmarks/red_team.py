"""Red team: hundreds of hostile or careless inputs at every entry point, each outcome classified.

    python benchmarks/red_team.py                       # every case, 2 at a time; totals printed
    python benchmarks/red_team.py --jobs 1 --only inference --json red_team.json --keep

Not part of ``make test`` (it takes minutes). Everything happens in a temporary folder: a tiny
LKDN x2 checkpoint (``.pth`` and ``.safetensors``), train and test options, images, exported
ONNX, and broken files of every kind (truncated, empty, random, hostile pickles and YAML tags
that would create a marker file if they ran, decompression bombs, NaN weights, wrong shapes).
The cases are generated systematically: every training option key and the test keys times a
list of bad values (and the key removed), every script flag times bad values, each broken file
at each entry point that reads that kind of file, and the Python API (``lkdn.Upscaler``,
:func:`lkdn.build_network`, the loaders) on bad arguments.

Each case runs in its own child process (forked from a parent that has imported ``lkdn``, so
a case costs no start-up; ``--spawn`` starts ``python`` afresh instead), in its own folder with
its own copy of the input files, with a timeout and a memory limit. The outcome is one of
:data:`CLASSES`:

* ``clear error``: exit status 1 or 2, no traceback, and an ``error`` line naming the file, key
  or value at fault (one of the case's names);
* ``handled``: exit status 0 and a correct result (the case's check passed);
* ``unclear error``: exit status 1 or 2 without a traceback, but no error line naming the culprit;
* ``traceback``: a Python traceback, another exit status, or a crash (a signal);
* ``silent wrong result``: exit status 0 but the check failed (or the input should have been refused);
* ``data lost or written outside``: an input file changed or vanished, or a file appeared
  outside the case's run folder;
* ``hang``: still running at the timeout (killed);
* ``code executed``: the marker file appeared (a pickle or YAML tag ran code).

The totals by class are printed and, with ``--json``, written with every case's outcome and the
last lines of its output. ``--keep`` keeps the case folders of the outcomes that are not clear.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("clear error", "handled", "unclear error", "traceback", "silent wrong result",
           "data lost or written outside", "hang", "code executed")
MARKER = "CODE_EXECUTED"
"""Created in the case folder by the hostile pickles and YAML tags, if they ever run."""
MEMORY_LIMIT_GB = 6
"""Address space a case may add to what the parent maps (a hostile size must fail, not swap)."""
TINY_NET = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1}
BAD_VALUES: tuple[tuple[str, Any], ...] = (
    ("-1", -1), ("0", 0), ("'abc'", "abc"), ("null", None), ("1.5", 1.5), ("[1, 2]", [1, 2]), ("true", True),
    ("10**9", 10**9),
)
"""What every option key is set to, one case each (and one case with the key removed)."""
PATH_VALUES: tuple[tuple[str, Any], ...] = (
    ("'../../../escape'", "../../../escape"), ("'<sandbox>/outside/x'", "{S}/outside/x"), ("''", ""),
)
"""More values for the keys naming files, folders or names."""


# --------------------------------------------------------------------------- fixtures

# The tiny network and the paired folder every run uses (filled into both templates below).
_NETWORK = """\
network_g:
  type: LKDN
  num_feat: 8
  num_atten: 8
  num_block: 1
  upscale: 2
  num_in: 1
"""
_PAIRED = """\
    type: PairedImageDataset
    dataroot_gt: '{F}/images/hr'
    dataroot_lq: '{F}/images/lr'
    io_backend:
      type: disk
"""

TRAIN_YAML = """\
name: rt
model_type: SRModel
scale: 2
num_gpu: 0
manual_seed: 0
datasets:
  train:
    name: rt_train
    type: PairedImageDataset
    dataroot_gt: '{F}/images/hr'
    dataroot_lq: '{F}/images/lr'
    filename_tmpl: '{{}}'
    io_backend:
      type: disk
    gt_size: 32
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
    name: rt_val
{PAIRED}{NETWORK}path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
train:
  ema_decay: 0.9
  optim_g:
    type: Adam
    lr: !!float 1e-3
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [1000]
    gamma: 0.5
  total_iter: 2
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
val:
  val_freq: 2
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 2
      test_y_channel: true
logger:
  print_freq: 1
  save_checkpoint_freq: 2
  use_tb_logger: false
dist_params:
  backend: gloo
  port: 29500
"""

TEST_YAML = """\
name: rt_test
model_type: SRModel
scale: 2
num_gpu: 0
datasets:
  test_1:
    name: rt_set
{PAIRED}{NETWORK}path:
  pretrain_network_g: '{F}/net.pth'
  strict_load_g: true
val:
  save_img: true
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 2
      test_y_channel: true
"""
TRAIN_YAML, TEST_YAML = (t.replace("{PAIRED}", _PAIRED).replace("{NETWORK}", _NETWORK) for t in (TRAIN_YAML, TEST_YAML))


class Evil:
    """Pickled, it calls ``exec`` with code that creates the marker file in the current folder."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({MARKER!r}, 'w').write('pickle')",))


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with one tiny compressed row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def make_fixtures(folder: Path) -> None:
    """Write every input file of the cases into ``folder`` (run in a process of its own: it computes with torch)."""
    import cv2
    import numpy as np
    import torch
    import yaml

    import lkdn  # noqa: F401
    from lkdn import build_network
    from lkdn.export import export_metadata, export_onnx
    from lkdn.loading import save_network_file

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images" / "hr").mkdir(parents=True)
    (folder / "images" / "lr").mkdir(parents=True)
    for i in range(3):
        base = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / "images" / "hr" / f"img{i}.png"), base)
        cv2.imwrite(str(folder / "images" / "lr" / f"img{i}.png"), cv2.resize(base, (32, 32), interpolation=cv2.INTER_AREA))
    single = folder / "single"
    single.mkdir()
    shutil.copy(folder / "images" / "lr" / "img0.png", single / "photo.png")

    net = build_network(TINY_NET)
    state = net.state_dict()
    torch.save({"params": state}, folder / "net.pth")
    save_network_file(state, folder / "net.safetensors", TINY_NET, scale=2)
    export_onnx(net, folder / "net.onnx", metadata=export_metadata(TINY_NET, net, 2))
    (folder / "train.yml").write_text(TRAIN_YAML.format(F=folder))
    (folder / "test.yml").write_text(TEST_YAML.format(F=folder))

    broken = folder / "broken"
    broken.mkdir()
    good_pth = (folder / "net.pth").read_bytes()
    good_st = (folder / "net.safetensors").read_bytes()
    good_onnx = (folder / "net.onnx").read_bytes()
    files: dict[str, bytes] = {
        "truncated.pth": good_pth[: len(good_pth) // 2],
        "empty.pth": b"",
        "random.pth": bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),
        "text.pth": b"this is not a checkpoint\n" * 10,
        "evil_raw.pth": pickle.dumps(Evil()),
        "truncated.safetensors": good_st[: len(good_st) // 2],
        "empty.safetensors": b"",
        "garbage_header.safetensors": struct.pack("<Q", 40) + b"{not json at all, clearly}" + b"\x00" * 64,
        "huge_header.safetensors": struct.pack("<Q", 2**60) + b"{}",
        "truncated.onnx": good_onnx[: len(good_onnx) // 2],
        "random.onnx": bytes(rng.integers(0, 256, 2048, dtype=np.uint8)),
        "garbage.xml": b"<net><layers><layer id='0'",
        "garbage.param": b"7767517\n3 3\nInput in0 0 1 in0\n",
        "empty.param": b"",
        "empty.yml": b"",
        "binary.yml": bytes(range(256)),
        "list.yml": b"- 1\n- 2\n",
        "scalar.yml": b"42\n",
        "evil.yml": f"name: !!python/object/apply:os.system ['touch {MARKER}']\n".encode(),
        "evil_new.yml": f"name: !!python/object/new:os.system ['touch {MARKER}']\n".encode(),
        "laughs.yml": b"a: &a ['x','x','x','x','x','x','x','x','x']\n" + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
            f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n".encode() for i in range(8)),
        "deep.yml": b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n",
        "tabs.yml": b"name: x\n\tscale: 2\n",
        "truncated.png": (folder / "images" / "lr" / "img0.png").read_bytes()[:60],
        "empty.png": b"",
        "text.png": b"not an image\n",
        "bomb.png": png_header_bomb(100000, 100000),
        "bomb_wide.png": png_header_bomb(2**31 - 1, 1),
    }
    torch.save({"params": {k: v.clone().fill_(float("nan")) for k, v in state.items()}}, broken / "nan.pth")
    torch.save({"params": {k: v[..., :1].clone() if v.ndim > 1 else v for k, v in state.items()}}, broken / "shapes.pth")
    torch.save({"params": {f"other.{k}": v for k, v in state.items()}}, broken / "wrong_keys.pth")
    torch.save({"params": Evil()}, broken / "evil_torch.pth")
    torch.save([1, 2, 3], broken / "list.pth")
    for name, data in files.items():
        (broken / name).write_bytes(data)
    # images of unusual kinds that should be handled
    odd = folder / "odd"
    odd.mkdir()
    cv2.imwrite(str(odd / "grey.png"), rng.integers(0, 256, (20, 18), dtype=np.uint8))
    cv2.imwrite(str(odd / "rgba.png"), rng.integers(0, 256, (20, 18, 4), dtype=np.uint8))
    cv2.imwrite(str(odd / "deep16.png"), rng.integers(0, 65536, (20, 18, 3), dtype=np.uint16))
    cv2.imwrite(str(odd / "one_pixel.png"), rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    cv2.imwrite(str(odd / "thin.png"), rng.integers(0, 256, (1, 300, 3), dtype=np.uint8))
    cv2.imwrite(str(odd / "float.tiff"), np.full((20, 18, 3), np.nan, dtype=np.float32))
    (folder / "empty_dir").mkdir()
    records = folder / "records"  # a run folder's records, for scripts/plot_curves.py
    records.mkdir()
    (records / "train_log.jsonl").write_text("".join(
        json.dumps({"iter": i, "epoch": 0, "lr": 1e-3, "time": 0.1, "data_time": 0.01, "l_pix": 0.1 / i}) + "\n"
        for i in range(1, 21)))
    (records / "metrics.jsonl").write_text("".join(
        json.dumps({"iter": i, "epoch": 0, "dataset": "rt_val", "psnr": 20 + i / 10}) + "\n" for i in (5, 10, 20)))
    for side in ("HR", "LR"):  # the HR + LR layout of scripts/ntire_esr.py
        shutil.copytree(folder / "images" / side.lower(), folder / "paired" / side)
    (folder / "options.json").write_text(json.dumps(yaml.safe_load(TEST_YAML.format(F=folder))))


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One hostile input: ``entry`` (a script relative to the clone, or ``api``) with ``args`` or ``code``.

    ``{F}`` in the arguments is the case's copy of the fixtures, ``{C}`` its run folder. ``names``:
    what a clear error names (any one). ``check``: what makes exit status 0 a correct result
    (``None``: the input should have been refused).
    """

    id: str
    entry: str
    args: list[str] = field(default_factory=list)
    names: tuple[str, ...] = ()
    check: Callable[[Path, Path], str | None] | None = None
    code: str = ""
    options: tuple[str, dict[str, Any]] | None = None  # (file name, options) written into the run folder
    timeout: float | None = None


def sr_images(folder: str, expected: dict[str, tuple[int, int]]) -> Callable[[Path, Path], str | None]:
    """Check: every ``name -> (height, width)`` image exists in ``folder`` of the run with that size."""
    def check(run: Path, fixtures: Path) -> str | None:
        import cv2

        for name, size in expected.items():
            image = cv2.imread(str(run / folder / name), cv2.IMREAD_UNCHANGED)
            if image is None:
                return f"{folder}/{name} missing or unreadable"
            if tuple(image.shape[:2]) != size:
                return f"{folder}/{name} is {image.shape[:2]}, expected {size}"
        return None
    return check


def file_exists(*relative: str) -> Callable[[Path, Path], str | None]:
    def check(run: Path, fixtures: Path) -> str | None:
        missing = [r for r in relative if not list(run.glob(r))]
        return f"missing {', '.join(missing)}" if missing else None
    return check


def printed_ok(run: Path, fixtures: Path) -> str | None:
    text = (run.parent / "stdout").read_text(errors="replace")
    return None if "CHECK OK" in text else "the snippet's own checks did not pass"


TRAINED = file_exists("experiments/*/models/net_g_latest.pth")
TESTED = file_exists("results/*/metrics.json")
LR_OUT = {f"img{i}.png": (64, 64) for i in range(3)}


def _set(options: dict[str, Any], dotted: str, value: Any, *, remove: bool = False) -> dict[str, Any]:
    import copy

    options = copy.deepcopy(options)
    node = options
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if remove:
        node.pop(last, None)
    else:
        node[last] = value
    return options


TRAIN_KEYS: dict[str, str] = {
    # key -> "path" for keys naming files or folders (they get PATH_VALUES too), else ""
    "name": "path", "scale": "", "num_gpu": "", "manual_seed": "",
    "datasets.train.type": "", "datasets.train.dataroot_gt": "path", "datasets.train.dataroot_lq": "path",
    "datasets.train.gt_size": "",
    "datasets.train.num_worker_per_gpu": "", "datasets.train.batch_size_per_gpu": "",
    "datasets.train.dataset_enlarge_ratio": "", "datasets.val.dataroot_gt": "path",
    "network_g.type": "", "network_g.num_feat": "", "network_g.upscale": "",
    "path.pretrain_network_g": "path", "path.resume_state": "path",
    "train.ema_decay": "", "train.optim_g.type": "", "train.optim_g.lr": "",
    "train.scheduler.type": "", "train.total_iter": "",
    "train.pixel_opt.type": "",
    "val.val_freq": "",
    "logger.print_freq": "", "logger.save_checkpoint_freq": "",
}
TEST_KEYS: dict[str, str] = {
    "name": "path", "scale": "", "num_gpu": "", "datasets.test_1.type": "", "datasets.test_1.dataroot_gt": "path",
    "datasets.test_1.dataroot_lq": "path", "network_g.type": "", "network_g.upscale": "",
    "path.pretrain_network_g": "path", "path.strict_load_g": "", "val.save_img": "", "val.metrics.psnr.crop_border": "",
}


LONG_BUT_VALID = {("train.total_iter", "10**9")}
"""Values that are valid and only make the run long: not hostile, left out."""
HARMFUL = {("datasets.train.num_worker_per_gpu", "10**9")}
"""Left out because of what they do to the machine the red team runs on: 10**9 loader workers are forked
one after the other (about 16 a second, each a copy of the trainer) until the timeout."""


def option_cases(kind: str, keys: dict[str, str], base_yaml: str, entry: str, check: Callable[[Path, Path], str | None],
                 extra: list[str]) -> Iterable[Case]:
    import yaml

    base = yaml.safe_load(base_yaml.format(F="{F}"))
    for key, what in keys.items():
        last = key.split(".")[-1]
        values = BAD_VALUES + (PATH_VALUES if what == "path" else ())
        for label, value in values:
            if (key, label) in LONG_BUT_VALID | HARMFUL:
                continue
            yield Case(f"{kind}:{key}={label}", entry, ["-opt", "{C}/options.yml", *extra], names=(last, key, str(value)),
                       check=check, options=("options.yml", _set(base, key, value)))
        yield Case(f"{kind}:{key} removed", entry, ["-opt", "{C}/options.yml", *extra], names=(last, key), check=check,
                   options=("options.yml", _set(base, key, None, remove=True)))


BROKEN_CHECKPOINTS = ("truncated.pth", "empty.pth", "random.pth", "text.pth", "evil_raw.pth", "evil_torch.pth",
                      "list.pth", "nan.pth", "shapes.pth", "wrong_keys.pth", "truncated.safetensors",
                      "empty.safetensors", "garbage_header.safetensors", "huge_header.safetensors")
BROKEN_OPTIONS = ("empty.yml", "binary.yml", "list.yml", "scalar.yml", "evil.yml", "evil_new.yml", "laughs.yml",
                  "deep.yml", "tabs.yml")
BROKEN_IMAGES = ("truncated.png", "empty.png", "text.png", "bomb.png", "bomb_wide.png")
BROKEN_EXPORTS = ("truncated.onnx", "random.onnx", "garbage.xml", "garbage.param", "empty.param")


def all_cases() -> list[Case]:
    """Every case (their ids are unique)."""
    cases: list[Case] = []
    cases += option_cases("train", TRAIN_KEYS, TRAIN_YAML, "lkdn/train.py", TRAINED, ["--root_path", "{C}"])
    cases += option_cases("test", TEST_KEYS, TEST_YAML, "lkdn/test.py", TESTED, ["--root", "{C}"])

    # broken files at each entry point that reads that kind
    for name in BROKEN_CHECKPOINTS:
        b = f"{{F}}/broken/{name}"
        cases += [
            Case(f"test.py weights {name}", "lkdn/test.py", ["-opt", "{F}/test.yml", "--root", "{C}", "--force_yml",
                                                             f"path:pretrain_network_g={b}"], names=(name,)),
            Case(f"inference --weights {name}", "scripts/inference.py", ["-opt", "{F}/test.yml", "--weights", b,
                                                                         "--input", "{F}/single", "--output", "{C}/out"],
                 names=(name,)),
            Case(f"reparameterize {name}", "scripts/reparameterize.py", ["-opt", "{F}/test.yml", "--input", b,
                                                                         "--output", "{C}/folded.pth"], names=(name,)),
            Case(f"convert_checkpoint {name}", "scripts/convert_checkpoint.py", ["--input", b, "--output",
                                                                                 "{C}/x.safetensors", "-opt",
                                                                                 "{F}/test.yml"], names=(name,)),
            Case(f"export_onnx {name}", "scripts/export_onnx.py", ["-opt", "{F}/test.yml", "--weights", b, "--output",
                                                                   "{C}/x.onnx"], names=(name,)),
            Case(f"train resume_state {name}", "lkdn/train.py", ["-opt", "{F}/train.yml", "--root_path", "{C}",
                                                                 "--force_yml", f"path:resume_state={b}"],
                 names=(name,)),
            Case(f"api from_checkpoint {name}", "api", code=f"Upscaler.from_checkpoint({b!r})", names=(name,)),
        ]
    for name in BROKEN_OPTIONS:
        b = f"{{F}}/broken/{name}"
        cases += [
            Case(f"train.py -opt {name}", "lkdn/train.py", ["-opt", b, "--root_path", "{C}"], names=(name,)),
            Case(f"test.py -opt {name}", "lkdn/test.py", ["-opt", b, "--root", "{C}"], names=(name,)),
            Case(f"inference -opt {name}", "scripts/inference.py", ["-opt", b, "--input", "{F}/single", "--output",
                                                                    "{C}/out"], names=(name,)),
            Case(f"profile_model -opt {name}", "scripts/profile_model.py", ["-opt", b, "--no-timing"], names=(name,)),
            Case(f"export_onnx -opt {name}", "scripts/export_onnx.py", ["-opt", b, "--output", "{C}/x.onnx"],
                 names=(name,)),
            Case(f"api from_config {name}", "api", code=f"Upscaler.from_config({b!r})", names=(name,)),
        ]
    for name in BROKEN_IMAGES:
        b = f"{{F}}/broken/{name}"
        folder = f"{{C}}/in_{name}"
        cases += [
            Case(f"inference --input {name}", "scripts/inference.py", ["-opt", "{F}/test.yml", "--input", b, "--output",
                                                                       "{C}/out"], names=(name,)),
            Case(f"inference folder with {name}", "scripts/inference.py",
                 ["-opt", "{F}/test.yml", "--input", "{F}/bad_folder/" + name.split(".")[0], "--output", "{C}/out"],
                 names=("img1",)),
            Case(f"train data with {name}", "lkdn/train.py", ["-opt", "{F}/train.yml", "--root_path", "{C}",
                                                              "--force_yml",
                                                              f"datasets:train:dataroot_lq={{F}}/bad_pairs/{name.split('.')[0]}/lr",
                                                              f"datasets:train:dataroot_gt={{F}}/bad_pairs/{name.split('.')[0]}/hr"],
                 names=("img1",)),
            Case(f"test data with {name}", "lkdn/test.py", ["-opt", "{F}/test.yml", "--root", "{C}", "--force_yml",
                                                            f"datasets:test_1:dataroot_lq={{F}}/bad_pairs/{name.split('.')[0]}/lr",
                                                            f"datasets:test_1:dataroot_gt={{F}}/bad_pairs/{name.split('.')[0]}/hr"],
                 names=("img1",)),
            Case(f"make_lr input {name}", "scripts/data_preparation/make_lr.py",
                 ["--input", "{F}/bad_folder/" + name.split(".")[0], "--output-hr", f"{folder}/hr", "--output-lr",
                  f"{folder}/lr", "--scale", "2"], names=("img1",)),
            Case(f"api upscale_image file {name}", "api",
                 code=f"from lkdn.images import read_image_unchanged\nup = Upscaler(build_network(TINY))\n"
                      f"up.upscale_image(read_image_unchanged({b!r}))", names=(name,)),
        ]
    for name in BROKEN_EXPORTS:
        b = f"{{F}}/broken/{name}"
        cases += [
            Case(f"inference --model {name}", "scripts/inference.py", ["--model", b, "--input", "{F}/single",
                                                                       "--output", "{C}/out"], names=(name,)),
            Case(f"api ExportedModel {name}", "api", code=f"from lkdn.backends.files import ExportedModel\n"
                                                          f"ExportedModel({b!r})", names=(name,)),
        ]

    # odd but valid images: handled
    for name, size in (("grey.png", (40, 36)), ("rgba.png", (40, 36)), ("deep16.png", (40, 36)),
                       ("one_pixel.png", (2, 2)), ("thin.png", (2, 600))):
        cases.append(Case(f"inference odd image {name}", "scripts/inference.py",
                          ["-opt", "{F}/test.yml", "--input", f"{{F}}/odd/{name}", "--output", "{C}/out"],
                          names=(name,), check=sr_images("out", {name.split(".")[0] + ".png": size})))
    cases.append(Case("inference NaN float image", "scripts/inference.py",
                      ["-opt", "{F}/test.yml", "--input", "{F}/odd/float.tiff", "--output", "{C}/out"],
                      names=("float.tiff", "NaN", "nan")))

    cases += script_flag_cases()
    cases += api_cases()
    ids = [c.id for c in cases]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, duplicates
    return cases


INFER = ["-opt", "{F}/test.yml", "--input", "{F}/images/lr", "--output", "{C}/out"]


def script_flag_cases() -> list[Case]:
    """Each script's flags with bad values, and careless paths (output over input, missing files, folders)."""
    cases: list[Case] = []
    bad_ints = (("-1", "-1"), ("0", "0"), ("abc", "abc"), ("1e9", "1e9"), ("99999999", "99999999"), ("empty", ""))

    def flag_values(prefix: str, script: str, base: list[str], flag: str, values: Iterable[tuple[str, str]],
                    ok: Callable[[Path, Path], str | None] | None = None, accept: tuple[str, ...] = ()) -> None:
        for label, value in values:
            cases.append(Case(f"{prefix} {flag} {label}", script, [*base, flag, value], names=(flag, value),
                              check=ok if label in accept else None))

    # inference
    flag_values("inference", "scripts/inference.py", INFER, "--tile", bad_ints, sr_images("out", LR_OUT),
                accept=("0", "99999999"))
    flag_values("inference", "scripts/inference.py", INFER, "--tile-pad", bad_ints, sr_images("out", LR_OUT),
                accept=("0", "99999999"))  # more context than the image: the whole image, exact
    flag_values("inference", "scripts/inference.py", INFER, "--device",
                (("cuda:7", "cuda:7"), ("mps", "mps"), ("gpu", "gpu"), ("empty", ""), ("cpu:-1", "cpu:-1")),
                sr_images("out", LR_OUT), accept=("empty",))  # an empty --device is the default device
    flag_values("inference", "scripts/inference.py", INFER, "--backend", (("tensorrt", "tensorrt"), ("empty", "")))
    flag_values("inference", "scripts/inference.py", INFER, "--alpha", (("keep", "keep"),))
    flag_values("inference", "scripts/inference.py", INFER, "--scale", (("2", "2"), ("3", "3")))
    flag_values("inference", "scripts/inference.py", INFER, "--force_yml",
                (("no equals", "scale"), ("unknown key", "nonsense:key=1"), ("scale=3", "scale=3"),
                 ("bad yaml", "scale=[")))
    inference_paths = [
        ("--input missing", ["-opt", "{F}/test.yml", "--input", "{F}/nope", "--output", "{C}/out"], ("nope",), None),
        ("--input empty folder", ["-opt", "{F}/test.yml", "--input", "{F}/empty_dir", "--output", "{C}/out"],
         ("empty_dir",), None),
        ("--output is the input folder", ["-opt", "{F}/test.yml", "--input", "{F}/images/lr", "--output",
                                          "{F}/images/lr"], ("lr", "--output"), None),
        ("--output is an input image", ["-opt", "{F}/test.yml", "--input", "{F}/single/photo.png", "--output",
                                        "{F}/single/photo.png"], ("photo.png",), None),
        ("--output is -opt", ["-opt", "{F}/test.yml", "--input", "{F}/single", "--output", "{F}/test.yml"],
         ("test.yml",), None),
        ("--output under a file", ["-opt", "{F}/test.yml", "--input", "{F}/single", "--output", "{F}/net.pth/out"],
         ("net.pth",), None),
        ("-opt missing", ["-opt", "{F}/nope.yml", "--input", "{F}/single", "--output", "{C}/out"], ("nope.yml",), None),
        ("-opt is a folder", ["-opt", "{F}/images", "--input", "{F}/single", "--output", "{C}/out"], ("images",), None),
        ("-opt is json", ["-opt", "{F}/options.json", "--input", "{F}/single", "--output", "{C}/out"],
         ("options.json",), sr_images("out", {"photo.png": (64, 64)})),
        ("--weights missing", [*INFER, "--weights", "{F}/nope.pth"], ("nope.pth",), None),
        ("--weights is a folder", [*INFER, "--weights", "{F}/images"], ("images",), None),
        ("--weights safetensors", [*INFER, "--weights", "{F}/net.safetensors"], ("net.safetensors",),
         sr_images("out", LR_OUT)),
        ("-opt and --model", [*INFER, "--model", "{F}/net.onnx"], ("--model", "-opt"), None),
        ("--model onnx", ["--model", "{F}/net.onnx", "--input", "{F}/images/lr", "--output", "{C}/out"], ("net.onnx",),
         sr_images("out", LR_OUT)),
        ("--model with --weights", ["--model", "{F}/net.onnx", "--weights", "{F}/net.pth", "--input", "{F}/single",
                                    "--output", "{C}/out"], ("--weights",), None),
        ("--model wrong --scale", ["--model", "{F}/net.onnx", "--scale", "4", "--input", "{F}/single", "--output",
                                   "{C}/out"], ("net.onnx", "4"), None),
        ("--model a checkpoint", ["--model", "{F}/net.pth", "--input", "{F}/single", "--output", "{C}/out"],
         ("net.pth",), None),
        ("--model missing", ["--model", "{F}/nope.onnx", "--input", "{F}/single", "--output", "{C}/out"],
         ("nope.onnx",), None),
        ("--model --backend ncnn", ["--model", "{F}/net.onnx", "--backend", "ncnn", "--input", "{F}/single",
                                    "--output", "{C}/out"], ("ncnn", "net.onnx"), None),
        ("--model --device cuda", ["--model", "{F}/net.onnx", "--device", "cuda", "--input", "{F}/single",
                                   "--output", "{C}/out"], ("cuda",), None),
        ("--model --scale 0", ["--model", "{F}/net.onnx", "--scale", "0", "--input", "{F}/single", "--output",
                               "{C}/out"], ("--scale", "0"), None),
        ("--scale without --model", [*INFER, "--scale", "2"], ("--scale",), None),
        ("no arguments", [], ("required", "-opt"), None),
    ]
    for label, args, names, check in inference_paths:
        cases.append(Case(f"inference {label}", "scripts/inference.py", args, names=names, check=check))

    # test.py flags
    test_base = ["-opt", "{F}/test.yml", "--root", "{C}"]
    flag_values("test.py", "lkdn/test.py", test_base, "--device", (("cuda:3", "cuda:3"), ("mps", "mps"), ("x", "x")))
    flag_values("test.py", "lkdn/test.py", test_base, "--backend", (("tensorrt", "tensorrt"),))
    flag_values("test.py", "lkdn/test.py", test_base, "--force_yml",
                (("no equals", "scale"), ("unknown key", "nonsense:key=1"), ("bad yaml", "name=[")))
    flag_values("test.py", "lkdn/test.py", ["-opt", "{F}/test.yml"], "--root",
                (("a file", "{F}/net.pth"), ("under a file", "{F}/net.pth/deeper")))

    # train.py flags
    train_base = ["-opt", "{F}/train.yml", "--root_path", "{C}"]
    flag_values("train.py", "lkdn/train.py", train_base, "--launcher", (("mpi", "mpi"), ("pytorch", "pytorch")))
    flag_values("train.py", "lkdn/train.py", train_base, "--force_yml",
                (("no equals", "scale"), ("unknown key", "nonsense:key=1"), ("bad yaml", "name=["),
                 ("total_iter=-5", "train:total_iter=-5")))
    flag_values("train.py", "lkdn/train.py", ["-opt", "{F}/train.yml"], "--root_path",
                (("a file", "{F}/net.pth"), ("under a file", "{F}/net.pth/deeper")))
    cases.append(Case("train.py -opt missing", "lkdn/train.py", ["-opt", "{F}/nope.yml"], names=("nope.yml",)))
    cases.append(Case("train.py auto_resume fresh", "lkdn/train.py", [*train_base, "--auto_resume"], names=(),
                      check=TRAINED))

    # export scripts
    for script, suffix in (("export_onnx", "onnx"), ("export_openvino", "xml"), ("export_ncnn", "param")):
        base = ["-opt", "{F}/test.yml"]
        path = f"scripts/{script}.py"
        cases += [
            Case(f"{script} ok", path, [*base, "--output", f"{{C}}/x.{suffix}"], names=(),
                 check=file_exists(f"x.{suffix}")),
            Case(f"{script} --output over -opt", path, [*base, "--output", "{F}/test.yml"], names=("test.yml",)),
            Case(f"{script} --output over weights", path, [*base, "--output", "{F}/net.pth"], names=("net.pth",)),
            Case(f"{script} --output is a folder", path, [*base, "--output", "{F}/images"], names=("images",)),
            Case(f"{script} --output wrong suffix", path, [*base, "--output", "{C}/x.txt"], names=("x.txt",),
                 check=file_exists("x.txt") if suffix == "onnx" else None),  # ONNX is one file: any name does
            Case(f"{script} --output under a file", path, [*base, "--output", f"{{F}}/net.pth/x.{suffix}"],
                 names=("net.pth",)),
            Case(f"{script} --check-image broken", path, [*base, "--output", f"{{C}}/x.{suffix}", "--check-image",
                                                          "{F}/broken/text.png"], names=("text.png",)),
            Case(f"{script} --check-image missing", path, [*base, "--output", f"{{C}}/x.{suffix}", "--check-image",
                                                           "{F}/nope.png"], names=("nope.png",)),
        ]
        for label, value in bad_ints[:3]:
            cases.append(Case(f"{script} --threads {label}", path, [*base, "--output", f"{{C}}/x.{suffix}",
                                                                    "--threads", value], names=("--threads", value)))
    for label, value in (("opset 5", ["--opset", "5"]), ("opset 999", ["--opset", "999"]),
                         ("size 0", ["--static", "--size", "0", "0"]), ("size -3", ["--static", "--size", "-3", "4"]),
                         ("tolerance -1", ["--tolerance", "-1"]), ("tolerance nan", ["--tolerance", "nan"]),
                         ("dynamic and static", ["--dynamic", "--static"])):
        cases.append(Case(f"export_onnx {label}", "scripts/export_onnx.py",
                          ["-opt", "{F}/test.yml", "--output", "{C}/x.onnx", *value], names=tuple(value)))
    cases.append(Case("export_openvino int8 no calibration", "scripts/export_openvino.py",
                      ["-opt", "{F}/test.yml", "--output", "{C}/x.xml", "--precision", "int8"],
                      names=("--calibration", "int8", "calibration")))
    cases.append(Case("export_openvino calibration empty", "scripts/export_openvino.py",
                      ["-opt", "{F}/test.yml", "--output", "{C}/x.xml", "--precision", "int8", "--calibration",
                       "{F}/empty_dir"], names=("empty_dir",)))
    cases.append(Case("export_ncnn precision int8", "scripts/export_ncnn.py",
                      ["-opt", "{F}/test.yml", "--output", "{C}/x.param", "--precision", "int8"],
                      names=("int8", "--precision")))

    # reparameterize / convert / strip
    rep = ["-opt", "{F}/test.yml", "--input", "{F}/net.pth"]
    cases += [
        Case("reparameterize ok", "scripts/reparameterize.py", [*rep, "--output", "{C}/folded.pth"], names=(),
             check=file_exists("folded.pth")),
        Case("reparameterize output over input", "scripts/reparameterize.py", [*rep, "--output", "{F}/net.pth"],
             names=("net.pth",)),
        Case("reparameterize output-opt over -opt", "scripts/reparameterize.py",
             [*rep, "--output", "{C}/folded.pth", "--output-opt", "{F}/test.yml"], names=("test.yml",)),
        Case("reparameterize atol -1", "scripts/reparameterize.py", [*rep, "--output", "{C}/f.pth", "--atol", "-1"],
             names=("--atol", "-1")),
        Case("reparameterize atol abc", "scripts/reparameterize.py", [*rep, "--output", "{C}/f.pth", "--atol", "abc"],
             names=("--atol", "abc")),
        Case("reparameterize input missing", "scripts/reparameterize.py",
             ["-opt", "{F}/test.yml", "--input", "{F}/nope.pth", "--output", "{C}/f.pth"], names=("nope.pth",)),
        Case("convert ok", "scripts/convert_checkpoint.py", ["--input", "{F}/net.pth", "--output", "{C}/x.safetensors",
                                                             "-opt", "{F}/test.yml"], names=(),
             check=file_exists("x.safetensors")),
        Case("convert output over input", "scripts/convert_checkpoint.py",
             ["--input", "{F}/net.pth", "--output", "{F}/net.pth", "-opt", "{F}/test.yml"], names=("net.pth",)),
        Case("convert bad network-json", "scripts/convert_checkpoint.py",
             ["--input", "{F}/net.pth", "--output", "{C}/x.safetensors", "--network-json", "{not json"],
             names=("--network-json", "{not json", "network-json")),
        Case("convert network-json wrong arch", "scripts/convert_checkpoint.py",
             ["--input", "{F}/net.pth", "--output", "{C}/x.safetensors", "--network-json", '{"type": "SPAN"}'],
             names=("SPAN", "net.pth")),
        Case("convert scale 0", "scripts/convert_checkpoint.py",
             ["--input", "{F}/net.pth", "--output", "{C}/x.safetensors", "-opt", "{F}/test.yml", "--scale", "0"],
             names=("--scale", "0")),
        Case("convert param-key missing", "scripts/convert_checkpoint.py",
             ["--input", "{F}/net.pth", "--output", "{C}/x.safetensors", "-opt", "{F}/test.yml", "--param-key",
              "nokey"], names=("nokey",)),
        Case("strip in-place and output", "scripts/strip_checkpoint.py",  # --in-place only allows output == input
             ["--input", "{F}/net.pth", "--output", "{C}/s.pth", "--in-place"], names=(), check=file_exists("s.pth")),
        Case("strip input missing", "scripts/strip_checkpoint.py", ["--input", "{F}/nope.pth", "--output", "{C}/s.pth"],
             names=("nope.pth",)),
        Case("strip evil", "scripts/strip_checkpoint.py", ["--input", "{F}/broken/evil_raw.pth", "--output",
                                                           "{C}/s.pth"], names=("evil_raw.pth",)),
    ]

    # profile, download, compare, plot, make_lr, demo, ntire
    prof = ["-opt", "{F}/test.yml", "--no-timing"]
    flag_values("profile_model", "scripts/profile_model.py", prof, "--lr-size",
                (("0", "0"), ("-5", "-5"), ("abc", "abc"), ("huge", "100000")))
    flag_values("profile_model", "scripts/profile_model.py", ["-opt", "{F}/test.yml"], "--runs",
                (("0", "0"), ("-1", "-1")))
    flag_values("profile_model", "scripts/profile_model.py", prof, "--threads", (("0", "0"), ("-2", "-2")))
    flag_values("profile_model", "scripts/profile_model.py", prof, "--json", (("over -opt", "{F}/test.yml"),))
    flag_values("download", "scripts/download.py", ["--dest", "{C}/dl"], "--names",
                (("unknown", "NoSuchModel_x9"), ("path", "../../etc/passwd")))
    flag_values("download", "scripts/download.py", ["--names", "LKDN_x4", "--dest", "{C}/dl"], "--timeout",
                (("0", "0"), ("-1", "-1")))
    flag_values("download", "scripts/download.py", ["--names", "LKDN_x4", "--dest", "{C}/dl"], "--base-url",
                (("file", "file:///etc/"), ("garbage", "not a url")))
    plot = ["{F}/records", "--output", "{C}/p.png"]
    flag_values("plot_curves", "scripts/plot_curves.py", plot, "--smooth", (("-1", "-1"), ("0", "0")),
                file_exists("p.png"), accept=("0",))
    flag_values("plot_curves", "scripts/plot_curves.py", plot, "--metric", (("unknown", "lpips"),))
    flag_values("plot_curves", "scripts/plot_curves.py", plot, "--reference",
                (("no equals", "bicubic"), ("not a number", "bicubic=abc")))
    cases.append(Case("plot_curves no records", "scripts/plot_curves.py", ["{F}/empty_dir", "--output", "{C}/p.png"],
                      names=("empty_dir",)))
    cases.append(Case("plot_curves output over a record", "scripts/plot_curves.py",
                      ["{F}/records", "--output", "{F}/records/metrics.jsonl"], names=("metrics.jsonl",)))
    compare = ["--hr", "{F}/images/hr", "--lr", "{F}/images/lr", "--output", "{C}/c.png", "--images", "img0"]
    flag_values("compare_images", "scripts/compare_images.py", [*compare, "--sr", "x={F}/images/hr"], "--scale",
                (("0", "0"), ("3", "3"), ("-2", "-2")))
    flag_values("compare_images", "scripts/compare_images.py", [*compare, "--scale", "2"], "--sr",
                (("no equals", "{F}/images/hr"), ("missing", "x={F}/nope")))
    cases[-1].names += ("{F}/nope",)
    flag_values("compare_images", "scripts/compare_images.py", [*compare, "--scale", "2", "--sr", "x={F}/images/hr"],
                "--crop", (("0", "0"), ("-4", "-4"), ("huge", "100000")))
    flag_values("compare_images", "scripts/compare_images.py", [*compare, "--scale", "2", "--sr", "x={F}/images/hr"],
                "--images", (("unknown", "nosuchimage"),))
    make_lr = ["--input", "{F}/images/hr", "--output-hr", "{C}/hr", "--output-lr", "{C}/lr"]
    flag_values("make_lr", "scripts/data_preparation/make_lr.py", make_lr, "--scale",
                (("0", "0"), ("-2", "-2"), ("abc", "abc"), ("100", "100")))
    flag_values("make_lr", "scripts/data_preparation/make_lr.py", [*make_lr, "--scale", "2"], "--method",
                (("nearest", "nearest"), ("unknown", "magic")))
    cases.append(Case("make_lr output over input", "scripts/data_preparation/make_lr.py",
                      ["--input", "{F}/images/hr", "--output-hr", "{F}/images/hr", "--output-lr", "{C}/lr", "--scale",
                       "2"], names=("hr", "--output-hr")))
    cases.append(Case("make_lr ok", "scripts/data_preparation/make_lr.py", [*make_lr, "--scale", "2"], names=(),
                      check=sr_images("lr", {f"img{i}.png": (32, 32) for i in range(3)})))
    flag_values("demo", "scripts/demo.py", ["--workdir", "{C}/demo"], "--iters",
                (("0", "0"), ("-1", "-1"), ("abc", "abc")))
    flag_values("demo", "scripts/demo.py", ["--workdir", "{C}/demo"], "--batch", (("0", "0"), ("abc", "abc")))
    flag_values("demo", "scripts/demo.py", ["--iters", "1"], "--workdir", (("a file", "{F}/net.pth"),))
    ntire = ["-opt", "{F}/test.yml", "--baseline", "{F}/test.yml", "--dataset", "{F}/paired", "--output", "{C}/nt"]
    flag_values("ntire_esr", "scripts/ntire_esr.py", ntire, "--max-images", (("0", "0"), ("-1", "-1")))
    flag_values("ntire_esr", "scripts/ntire_esr.py", ntire, "--year", (("1999", "1999"),))
    flag_values("ntire_esr", "scripts/ntire_esr.py", ntire[:-2], "--output", (("over -opt", "{F}/test.yml"),))
    flag_values("compare_models", "scripts/compare_models.py", ["-opt", "{F}/test.yml", "--workdir", "{C}/cm"],
                "--runs", (("0", "0"), ("-3", "-3")))
    flag_values("compare_models", "scripts/compare_models.py", ["-opt", "{F}/test.yml", "--workdir", "{C}/cm"],
                "--output-size", (("abc", "abc"), ("0x0", "0x0")))
    return cases


API_PRELUDE = """\
import math, os, numpy as np, torch
import lkdn
from lkdn import Upscaler, build_network
TINY = {tiny!r}
F = {F!r}
"""


def api_cases() -> list[Case]:
    """The Python API on bad arguments; a clear error is an exception of ours or a ValueError naming the value."""
    raw: list[tuple[str, str, tuple[str, ...], bool]] = [
        # (label, code, names, should succeed (the code prints CHECK OK itself))
        ("Upscaler scale 0", "Upscaler(build_network(TINY), scale=0)", ("scale", "0"), False),
        ("Upscaler scale -2", "Upscaler(build_network(TINY), scale=-2)", ("scale", "-2"), False),
        ("Upscaler scale '2'", "Upscaler(build_network(TINY), scale='2')", ("scale", "'2'"), False),
        ("Upscaler scale True", "Upscaler(build_network(TINY), scale=True)", ("scale", "True"), False),
        ("Upscaler scale 4 for x2", "Upscaler(build_network(TINY), scale=4)", ("scale", "4"), False),
        ("Upscaler precision int4", "Upscaler(build_network(TINY), precision='int4')", ("precision", "int4"), False),
        ("Upscaler backend tensorrt", "Upscaler(build_network(TINY), backend='tensorrt')", ("tensorrt",), False),
        ("Upscaler device mps", "Upscaler(build_network(TINY), device='mps')", ("mps",), False),
        ("Upscaler device cuda:9", "Upscaler(build_network(TINY), device='cuda:9')", ("cuda:9", "cuda"), False),
        ("Upscaler device garbage", "Upscaler(build_network(TINY), device='gpu0')", ("gpu0",), False),
        ("Upscaler tile -3", "Upscaler(build_network(TINY))(torch.rand(1, 3, 20, 20), tile=-3)", ("tile", "-3"),
         False),
        ("Upscaler tile_pad -1", "Upscaler(build_network(TINY))(torch.rand(1, 3, 20, 20), tile=16, tile_pad=-1)",
         ("tile_pad", "-1"), False),
        ("Upscaler not a network", "Upscaler('LKDN')", ("LKDN", "net", "str"), False),
        ("Upscaler None", "Upscaler(None)", ("None", "net"), False),
        ("call with a 3-d tensor", "Upscaler(build_network(TINY))(torch.rand(3, 20, 20))", ("shape", "(3, 20, 20)"),
         False),
        ("call with an int tensor", "Upscaler(build_network(TINY))(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))",
         ("float", "uint8"), False),
        ("call with a numpy array", "Upscaler(build_network(TINY))(np.zeros((1, 3, 8, 8), np.float32))",
         ("ndarray", "tensor"), False),
        ("call with 5 channels", "Upscaler(build_network(TINY))(torch.rand(1, 5, 8, 8))", ("5", "channel"), False),
        ("call with empty tensor", "Upscaler(build_network(TINY))(torch.rand(1, 3, 0, 8))", ("0", "empty", "size"),
         False),
        ("call with NaN", "out = Upscaler(build_network(TINY))(torch.full((1, 3, 8, 8), float('nan')))\n"
                          "assert out.shape == (1, 3, 16, 16)\nprint('CHECK OK')", ("nan", "NaN"), True),
        ("call with values 0..255", "out = Upscaler(build_network(TINY))(torch.rand(1, 3, 8, 8) * 255)\n"
                                    "assert 0 <= float(out.min()) and float(out.max()) <= 1\nprint('CHECK OK')",
         ("255", "[0, 1]"), True),
        ("upscale_image object array", "Upscaler(build_network(TINY)).upscale_image(np.array([[None]]))",
         ("object", "dtype"), False),
        ("upscale_image 5 channels", "Upscaler(build_network(TINY)).upscale_image(np.zeros((8, 8, 5), np.uint8))",
         ("5", "channel"), False),
        ("upscale_image empty", "Upscaler(build_network(TINY)).upscale_image(np.zeros((0, 8, 3), np.uint8))",
         ("0", "empty", "size"), False),
        ("upscale_image int32", "Upscaler(build_network(TINY)).upscale_image(np.zeros((8, 8, 3), np.int32))",
         ("int32",), False),
        ("upscale_image float64 > 1", "out = Upscaler(build_network(TINY)).upscale_image(np.full((8, 8, 3), 300.0))\n"
                                      "assert out.shape == (16, 16, 3)\nprint('CHECK OK')", ("300", "range"), True),
        ("upscale_image 4-d", "Upscaler(build_network(TINY)).upscale_image(np.zeros((1, 8, 8, 3), np.uint8))",
         ("shape", "(1, 8, 8, 3)"), False),
        ("upscale_image alpha junk", "Upscaler(build_network(TINY)).upscale_image(np.zeros((8, 8, 4), np.uint8), "
                                     "alpha='keep')", ("alpha", "keep"), False),
        ("upscale_image list", "Upscaler(build_network(TINY)).upscale_image([[1, 2], [3, 4]])", ("list", "ndarray"),
         False),
        ("build_network unknown type", "build_network({'type': 'NoSuchNet'})", ("NoSuchNet",), False),
        ("build_network no type", "build_network({'num_feat': 8})", ("type",), False),
        ("build_network bad kwarg", "build_network({**TINY, 'colour': 3})", ("colour",), False),
        ("build_network num_feat 0", "build_network({**TINY, 'num_feat': 0})", ("num_feat", "0"), False),
        ("build_network num_feat -8", "build_network({**TINY, 'num_feat': -8})", ("num_feat", "-8"), False),
        ("build_network upscale 0", "build_network({**TINY, 'upscale': 0})", ("upscale", "0"), False),
        ("build_network upscale '2'", "build_network({**TINY, 'upscale': '2'})", ("upscale", "'2'", "2"), False),
        ("build_network num_feat 10**9", "build_network({**TINY, 'num_feat': 10**9})", ("num_feat", "1000000000"),
         False),
        ("build_network a list", "build_network(['LKDN'])", ("list", "mapping"), False),
        ("from_config missing", "Upscaler.from_config(F + '/nope.yml')", ("nope.yml",), False),
        ("from_config folder", "Upscaler.from_config(F + '/images')", ("images",), False),
        ("from_config overrides junk", "Upscaler.from_config(F + '/test.yml', overrides=['scale'])", ("scale",),
         False),
        ("from_config scale mismatch", "Upscaler.from_config(F + '/test.yml', scale=3)", ("scale", "3"), False),
        ("from_config ok", "up = Upscaler.from_config(F + '/test.yml')\nassert up.scale == 2\nprint('CHECK OK')",
         (), True),
        ("from_checkpoint pth", "Upscaler.from_checkpoint(F + '/net.pth')", ("net.pth",), False),
        ("from_checkpoint ok", "up = Upscaler.from_checkpoint(F + '/net.safetensors')\n"
                               "assert up(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)\nprint('CHECK OK')", (), True),
        ("load_network_from_options missing weights",
         "from lkdn.options import load_options\nlkdn.load_network_from_options(load_options(F + '/test.yml'), "
         "weights=F + '/nope.pth')", ("nope.pth",), False),
        ("ExportedModel scale 3", "from lkdn.backends.files import ExportedModel\nExportedModel(F + '/net.onnx', "
                                  "scale=3)", ("scale 3", "net.onnx"), False),
        ("ExportedModel ok", "from lkdn.backends.files import ExportedModel\nm = ExportedModel(F + '/net.onnx')\n"
                             "out = m(torch.rand(1, 3, 9, 7))\nassert out.shape == (1, 3, 18, 14) and "
                             "0 <= float(out.min()) and float(out.max()) <= 1\nprint('CHECK OK')", (), True),
        ("convert to unknown backend", "from lkdn.backends import convert\nconvert(build_network(TINY), 'tensorrt')",
         ("tensorrt",), False),
        ("convert torch backend", "from lkdn.backends import convert\nconvert(build_network(TINY), 'torch')",
         ("torch",), False),
        ("convert threads 0", "from lkdn.backends import convert\nconvert(build_network(TINY), 'onnxruntime', "
                              "threads=0)", ("threads", "0"), False),
        ("load_options bad override", "from lkdn.options import load_options\nload_options(F + '/test.yml', "
                                      "overrides=['network_g:num_feat=abc'])", ("num_feat", "abc"), False),
        ("load_yaml evil", "from lkdn.options import load_yaml\nload_yaml(F + '/broken/evil.yml')", ("evil.yml",),
         False),
        ("load_file evil", "from lkdn.checkpoint import load_file\nload_file(F + '/broken/evil_raw.pth')",
         ("evil_raw.pth",), False),
        ("load_file evil torch", "from lkdn.checkpoint import load_file\nload_file(F + '/broken/evil_torch.pth')",
         ("evil_torch.pth",), False),
        ("network_from_file pth", "from lkdn.loading import network_from_file\n"
                                  "network_from_file(F + '/net.pth')", ("net.pth",), False),
    ]
    return [Case(f"api {label}", "api", code=code, names=names, check=printed_ok if ok else None)
            for label, code, names, ok in raw]


# --------------------------------------------------------------------------- running


def digests(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


CLEAR_API_ERRORS = ("ValueError", "FileNotFoundError", "KeyError", "TypeError")
"""Exception types that count as a clear error from the Python API when their message names the value
(besides the ones defined in ``lkdn``, which are all meant for users)."""


def run_api(code: str, fixtures: Path) -> int:
    """Run an API snippet; a clear exception becomes ``error: <type>: <message>`` and status 1."""
    import traceback

    namespace: dict[str, Any] = {}
    try:
        exec(API_PRELUDE.format(tiny=TINY_NET, F=str(fixtures)) + code, namespace)
    except Exception as err:
        ours = type(err).__module__.startswith("lkdn") or any(
            c.__module__.startswith("lkdn") for c in type(err).__mro__[1:-2])
        if ours or type(err).__name__ in CLEAR_API_ERRORS:
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        traceback.print_exc()
        return 1
    return 0


def child(case: Case, run: Path, fixtures: Path, env: dict[str, str]) -> None:
    """The body of a forked case (never returns)."""
    import resource
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)
        out = os.open(run.parent / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(run.parent / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.chdir(run)
        os.environ.clear()
        os.environ.update(env)
        with contextlib.suppress(OSError, ValueError):
            vm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmSize:")) * 1024
            limit = vm + MEMORY_LIMIT_GB * 2**30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if case.entry == "api":
            code = run_api(case.code, fixtures)
        else:
            script = ROOT / case.entry
            sys.argv = [str(script), *[fill(a, fixtures, run) for a in case.args]]
            try:
                runpy.run_path(str(script), run_name="__main__")
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
    except BaseException:  # what Python itself prints for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def fill(text: str, fixtures: Path, run: Path) -> str:
    """``{F}``: the case's fixtures, ``{C}``: its run folder, ``{S}``: the sandbox (outside every case)."""
    return text.replace("{F}", str(fixtures)).replace("{C}", str(run)).replace("{S}", str(run.parents[2]))


def _fill_options(value: Any, fixtures: Path, run: Path) -> Any:
    if isinstance(value, str):
        return fill(value, fixtures, run)
    if isinstance(value, dict):
        return {k: _fill_options(v, fixtures, run) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_options(v, fixtures, run) for v in value]
    return value


@dataclass
class Outcome:
    id: str
    entry: str
    outcome: str
    status: int | None
    seconds: float
    detail: str


ERROR_BLOCK = 6
"""Lines read as one error message: the line saying ``error`` and those after it (an indented list of problems)."""


def error_lines(stderr: str) -> list[str]:
    """Each error message of ``stderr``: its ``error`` line joined with the lines that follow it."""
    lines = stderr.splitlines()
    return [" ".join(part.strip() for part in lines[i:i + ERROR_BLOCK]) for i, line in enumerate(lines)
            if re.search(r"\b(error|failed)\b", line, re.IGNORECASE)]


def classify(case: Case, status: int | None, timed_out: bool, folder: Path, fixtures: Path, before: dict[str, str],
             sandbox_entries: set[str], sandbox: Path) -> tuple[str, str]:
    stderr = (folder / "stderr").read_text(errors="replace") if (folder / "stderr").exists() else ""
    run = folder / "run"
    if (run / MARKER).exists() or (folder / MARKER).exists() or (fixtures / MARKER).exists():
        return "code executed", "the marker file appeared"
    after = digests(fixtures)
    changed = sorted(k for k in before if after.get(k) != before[k])
    if changed:
        return "data lost or written outside", f"input files changed or removed: {', '.join(changed[:5])}"
    outside = sorted(p.name for p in folder.iterdir() if p.name not in ("run", "in", "stdout", "stderr"))
    outside += sorted(p.name for p in sandbox.iterdir() if p.name not in sandbox_entries)
    if outside:
        return "data lost or written outside", f"written outside the run folder: {', '.join(outside[:5])}"
    if timed_out:
        return "hang", f"still running after {case.timeout} s"
    tail = " | ".join(stderr.strip().splitlines()[-3:])[-600:]
    if "Traceback (most recent call last)" in stderr:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return "traceback", last[-400:]
    if status is None or status < 0:
        return "traceback", f"killed by signal {-status if status else '?'}; {tail}"
    if status == 0:
        if case.check is None:
            return "silent wrong result", f"exit status 0 on an input that should be refused; {tail}"
        problem = case.check(run, fixtures)
        if problem:
            return "silent wrong result", problem
        return "handled", ""
    if status not in (1, 2):
        return "traceback", f"exit status {status}; {tail}"
    lines = error_lines(stderr)
    names = [fill(n, fixtures, run) for n in case.names]
    if lines and (not names or any(n.lower() in line.lower() for line in lines for n in names if n)):
        return "clear error", lines[-1][-300:]
    return "unclear error", (lines[-1] if lines else tail)[-400:]


def run_cases(cases: list[Case], *, jobs: int, timeout: float, sandbox: Path, fixtures_src: Path, keep: bool,
              spawn: bool) -> list[Outcome]:
    import yaml

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LKDN_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))
    env.pop("LKDN_TRACEBACK", None)
    cases_dir = sandbox / "cases"
    cases_dir.mkdir()
    sandbox_entries = {p.name for p in sandbox.iterdir()}
    pending = list(enumerate(cases))
    running: dict[int, tuple[Case, Path, float, dict[str, str], Any]] = {}
    outcomes: list[Outcome] = []
    while pending or running:
        while pending and len(running) < jobs:
            index, case = pending.pop(0)
            folder = cases_dir / f"{index:04d}"
            run = folder / "run"
            fixtures = folder / "in"
            shutil.copytree(fixtures_src, fixtures, symlinks=True)
            # the fixtures name their own folder inside: point them at this copy
            for name in ("train.yml", "test.yml", "options.json"):
                path = fixtures / name
                path.write_text(path.read_text().replace(str(fixtures_src), str(fixtures)))
            run.mkdir(parents=True)
            if case.options is not None:
                name, options = case.options
                (run / name).write_text(yaml.safe_dump(_fill_options(options, fixtures, run)))
            before = digests(fixtures)
            case.timeout = case.timeout or timeout
            if spawn:
                handle = _spawn(case, run, fixtures, env)
                running[handle.pid] = (case, folder, time.monotonic(), before, handle)
            else:
                pid = os.fork()
                if pid == 0:
                    child(case, run, fixtures, env)
                running[pid] = (case, folder, time.monotonic(), before, None)
        time.sleep(0.02)
        for pid in list(running):
            case, folder, start, before, handle = running[pid]
            if handle is not None:
                status = handle.poll()
                done = status is not None
            else:
                waited, raw = os.waitpid(pid, os.WNOHANG)
                done = waited == pid
                status = (os.waitstatus_to_exitcode(raw) if done else None)
            timed_out = False
            if not done and time.monotonic() - start > case.timeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if handle is not None:
                    handle.wait()
                else:
                    os.waitpid(pid, 0)
                done, timed_out, status = True, True, None
            if not done:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # what the case started and left behind
            del running[pid]
            outcome, detail = classify(case, status, timed_out, folder, folder / "in", before, sandbox_entries,
                                       sandbox)
            for extra in [p for p in sandbox.iterdir() if p.name not in sandbox_entries]:
                shutil.rmtree(extra, ignore_errors=True) if extra.is_dir() else extra.unlink(missing_ok=True)
            result = Outcome(case.id, case.entry, outcome, status, round(time.monotonic() - start, 2), detail)
            outcomes.append(result)
            print(f"[{len(outcomes):4d}/{len(cases)}] {outcome:28s} {case.id}" + (f"  -- {detail[:160]}" if outcome
                                                                                 not in ("clear error", "handled") else ""),
                  flush=True)
            if not keep or outcome in ("clear error", "handled"):
                shutil.rmtree(folder, ignore_errors=True)
    return outcomes


def _spawn(case: Case, run: Path, fixtures: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if case.entry == "api":
        command = [sys.executable, str(Path(__file__).resolve()), "--api-case", case.code, "--api-fixtures",
                   str(fixtures)]
    else:
        command = [sys.executable, str(ROOT / case.entry), *[fill(a, fixtures, run) for a in case.args]]
    out = open(run.parent / "stdout", "wb")  # noqa: SIM115 (kept open by the child)
    err = open(run.parent / "stderr", "wb")  # noqa: SIM115
    return subprocess.Popen(command, cwd=run, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    parser.add_argument("--only", default=None, help="only the cases whose id contains this text")
    parser.add_argument("--json", type=Path, default=None, help="write every outcome and the totals here")
    parser.add_argument("--keep", action="store_true", help="keep the folders of the cases that were not clear")
    parser.add_argument("--spawn", action="store_true", help="start a fresh python per case instead of forking")
    parser.add_argument("--sample", type=int, default=1, help="only every N-th case (a quick look)")
    parser.add_argument("--list", action="store_true", help="list the case ids and stop")
    parser.add_argument("--make-fixtures", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--api-fixtures", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_fixtures is not None:
        make_fixtures(args.make_fixtures)
        return 0
    if args.api_case is not None:
        return run_api(args.api_case, args.api_fixtures)
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("--jobs and --timeout must be positive")
    cases = all_cases()
    if args.only:
        cases = [c for c in cases if args.only in c.id]
    cases = cases[::max(args.sample, 1)]
    if args.list:
        print("\n".join(c.id for c in cases))
        print(f"{len(cases)} cases")
        return 0
    sandbox = Path(tempfile.mkdtemp(prefix="lkdn-red-team-"))
    print(f"{len(cases)} cases in {sandbox}", flush=True)
    started = time.time()
    try:
        fixtures = sandbox / "fixtures"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make-fixtures", str(fixtures)], check=True,
                       env=dict(os.environ, LKDN_OFFLINE="1"))
        _make_bad_folders(fixtures)
        if not args.spawn:
            import lkdn  # noqa: F401 (imported once; each forked case starts with it)
            import lkdn.test  # noqa: F401
            import lkdn.train  # noqa: F401
        outcomes = run_cases(cases, jobs=args.jobs, timeout=args.timeout, sandbox=sandbox, fixtures_src=fixtures,
                             keep=args.keep, spawn=args.spawn)
    finally:
        if not args.keep:
            shutil.rmtree(sandbox, ignore_errors=True)
    totals = Counter(o.outcome for o in outcomes)
    print(f"\n{len(outcomes)} cases in {time.time() - started:.0f} s ({'spawned' if args.spawn else 'forked'}, "
          f"{args.jobs} at a time)")
    for name in CLASSES:
        print(f"  {name:30s} {totals.get(name, 0):4d}")
    entries = sorted({o.entry for o in outcomes})
    print("\n" + "entry point".ljust(40) + "".join(f"{c.split()[0][:9]:>10s}" for c in CLASSES))
    for entry in entries:
        counts = Counter(o.outcome for o in outcomes if o.entry == entry)
        print(entry.ljust(40) + "".join(f"{counts.get(c, 0):>10d}" for c in CLASSES))
    for o in outcomes:
        if o.outcome not in ("clear error", "handled"):
            print(f"  {o.outcome}: {o.id}: {o.detail[:300]}")
    if args.json is not None:
        args.json.write_text(json.dumps({"totals": {k: totals.get(k, 0) for k in CLASSES},
                                         "cases": [o.__dict__ for o in outcomes]}, indent=1))
    return 0


def _make_bad_folders(fixtures: Path) -> None:
    """A folder of good images plus one broken one, and paired HR/LR folders with it, per broken image."""
    for name in BROKEN_IMAGES:
        stem = name.split(".")[0]
        folder = fixtures / "bad_folder" / stem
        folder.mkdir(parents=True)
        shutil.copy(fixtures / "images" / "lr" / "img0.png", folder / "img0.png")
        shutil.copy(fixtures / "broken" / name, folder / f"img1{Path(name).suffix}")
        for side in ("hr", "lr"):
            pair = fixtures / "bad_pairs" / stem / side
            pair.mkdir(parents=True)
            for i in range(3):
                shutil.copy(fixtures / "images" / side / f"img{i}.png", pair / f"img{i}.png")
        shutil.copy(fixtures / "broken" / name, fixtures / "bad_pairs" / stem / "lr" / "img1.png")


if __name__ == "__main__":
    sys.exit(main())
