"""Shared test fixtures: reference files (skipped cleanly when absent) and the test device.

Reference files (official checkpoints, Set5) are looked for as the scripts look for them
(:mod:`lkdn.zoo`, README "Data and weights"): ``$LKDN_SHARED``, then this checkout's
``experiments/pretrained_models/`` and ``datasets/``, then ``../shared``.
``LKDN_SHARED=/nonexistent make test`` runs the suite as on a fresh clone. Downloads are off
(``LKDN_OFFLINE=1``): a test never reaches the network.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis.vendor import pretty

os.environ.setdefault("LKDN_OFFLINE", "1")

import lkdn  # noqa: E402,F401 (installs basicsr's torchvision alias before any test imports basicsr)
from lkdn.zoo import find_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Hypothesis: no test may depend on the machine's speed (CI machines are shared and slow), so no
# deadline and no too-slow health check; examples are derandomized and not stored between runs.
# A failing example names its tensors by shape and dtype rather than dumping their values.
settings.register_profile("lkdn", deadline=None, derandomize=True, database=None, print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("lkdn")


def _short_tensor_repr(tensor: torch.Tensor, printer: pretty.RepresentationPrinter, cycle: bool) -> None:
    printer.text(f"tensor(shape={tuple(tensor.shape)}, dtype={tensor.dtype})")


pretty.for_type_by_name("torch", "Tensor", _short_tensor_repr)
pretty.for_type_by_name("torch.nn.parameter", "Parameter", _short_tensor_repr)



def load_script(relative: str) -> ModuleType:
    """A script of the checkout (``"scripts/export_onnx.py"``) as a fresh module, to call its ``main`` in-process.

    It is registered in ``sys.modules`` under a name of its own (``lkdn_test_<path>``): dataclasses
    and forked worker processes look their module up there.
    """
    path = ROOT / relative
    shim = re.match(r"from (lkdn\.commands\.\w+) import main\n", path.read_text(encoding="utf-8"))
    if shim:  # a script that runs a command of the package: that command's module
        path = Path(importlib.util.find_spec(shim.group(1)).origin)
    name = "lkdn_test_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Official checkpoints: file -> (network options, scale, Set5 PSNR, Set5 SSIM), measured with the official code.
OFFICIAL_LKDN = {
    "LKDN_x2": ({"type": "LKDN", "upscale": 2}, 2, 38.12, 0.9610),
    "LKDN_x3": ({"type": "LKDN", "upscale": 3}, 3, 34.53, 0.9283),
    "LKDN_x4": ({"type": "LKDN", "upscale": 4}, 4, 32.39, 0.8980),
    "LKDN-S_x4": ({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}, 4, 32.11, 0.8938),
    "LKDN-S_del_rep_x4": ({"type": "LKDN_S"}, 4, 32.11, 0.8938),
}


def shared_file(kind: str, *parts: str) -> Path:
    """A reference file (``kind``: pretrained or benchmarks) from the lookup order, or skip the test saying how to get it."""
    path = find_reference(kind, *parts)
    if path is None:
        where = "/".join(parts)
        how = ("lkdn-download --names " + Path(parts[-1]).stem if kind == "pretrained"
               else "the sources and layout in datasets/README.md")
        pytest.skip(f"needs the reference file {kind}/{where}, not found in $LKDN_SHARED, experiments/pretrained_models/, "
                    f"datasets/ or ../shared; get it with {how} (README 'Data and weights')")
    return path


def reference_root() -> Path | None:
    """The official code of the field (``<shared>/reference``: ``ntire_esr/<year>/models/``, ``IMDN/``), or None.

    Looked for as the other reference files are: ``$LKDN_SHARED/reference`` when the variable is
    set (``LKDN_SHARED=/nonexistent`` hides it, as on a fresh clone), else ``../shared/reference``.
    """
    env = os.environ.get("LKDN_SHARED")
    root = Path(env) / "reference" if env else ROOT.parent / "shared" / "reference"
    return root if root.is_dir() else None


@contextlib.contextmanager
def cuda_is_a_no_op() -> Iterator[None]:
    """``Module.cuda()`` and ``Tensor.cuda()`` return ``self`` inside the block.

    Several official constructors move themselves to CUDA (or run a CUDA warm-up); this runs
    them on the CPU unchanged, as ``<shared>/reference/README.md`` describes.
    """
    module_cuda, tensor_cuda = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = module_cuda, tensor_cuda  # type: ignore[method-assign]


def official_module(relative: str) -> ModuleType:
    """An official model file of ``<shared>/reference`` (``"ntire_esr/2025/models/team24_SPANF.py"``), imported
    as a fresh module with its own folder on ``sys.path`` (for its sibling imports) and in a package of
    that folder (for its relative imports), or skip the test.

    Tests compare our networks with it; nothing of it is used outside the tests.
    """
    root = reference_root()
    path = None if root is None else root / relative
    if path is None or not path.is_file():
        pytest.skip(f"needs the official code reference/{relative}, not found in $LKDN_SHARED/reference or "
                    "../shared/reference (it is only used to compare our networks with the official ones)")
    # a package for the file's folder, so relative imports of its siblings (``from . import block``) work
    package = "official_" + str(Path(relative).parent).replace("/", "_").replace("-", "_").replace(".", "_")
    holder = sys.modules.setdefault(package, ModuleType(package))
    holder.__path__ = [str(path.parent)]
    name = f"{package}.{path.stem}"
    folders = [str(path.parent), str(path.parent.parent)]
    sys.path[:0] = folders
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        with cuda_is_a_no_op():
            spec.loader.exec_module(module)
    finally:
        for folder in folders:
            sys.path.remove(folder)
    return module


@pytest.fixture
def device() -> torch.device:
    """Test device from LKDN_TEST_DEVICE (cpu by default)."""
    return torch.device(os.environ.get("LKDN_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread (restored after): tiny tensors on shared cores run faster
    without OpenMP start-up and contention. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """An entry point's main() configures the lkdn/basicsr loggers for a process; put them back afterwards."""
    saved = {}
    for name in ("lkdn", "basicsr"):
        log = logging.getLogger(name)
        saved[name] = (list(log.handlers), log.level, log.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if handler not in handlers:
                log.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in log.handlers:
                log.addHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
