"""Every entry point validates and loads the same way: one options object, one loader, one message.

A checkpoint missing one tensor, with ``path.strict_load_g: ~`` (strict, as absent), is refused
with the same message by training, ``lkdn/test.py``, ``Upscaler.from_config``, ONNX export,
re-parameterization, conversion and ``scripts/inference.py``; ``network_g.type: LKDNN`` gets
"did you mean 'LKDN'" from each of them and from the profiler; nothing reaches basicsr's printing
``Registry.get``, and basicsr's own architectures are not ours to build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_script
from reliability_common import METRICS, TINY, VAL, make_images

from lkdn import Upscaler, build_network
from lkdn import test as test_entry
from lkdn.checkpoint import save_file
from lkdn.training.pipeline import train_pipeline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def script(name: str):
    return load_script(f"scripts/{name}.py")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("contract")
    hr, lr = make_images(tmp / "data")
    state = build_network(TINY["network_g"]).state_dict()
    missing = next(iter(state))
    save_file({"params": {k: v for k, v in state.items() if k != missing}}, tmp / "short.pth")
    datasets = {"train": {**TINY["datasets"]["train"], "dataroot_gt": str(hr), "dataroot_lq": str(lr)},
                "val": {**VAL, "dataroot_gt": str(hr), "dataroot_lq": str(lr)}}
    opt = {**TINY, "datasets": datasets, "val": {"val_freq": 4, "metrics": METRICS},
           "path": {"pretrain_network_g": str(tmp / "short.pth"), "strict_load_g": None}}
    good = tmp / "short.yml"
    good.write_text(yaml.safe_dump(opt))
    typo = tmp / "typo.yml"
    typo.write_text(yaml.safe_dump({**opt, "network_g": {**TINY["network_g"], "type": "LKDNN"}}))
    test_opt = {**opt, "datasets": {"test_1": datasets["val"]}}
    del test_opt["train"]
    test_yml = tmp / "short_test.yml"
    test_yml.write_text(yaml.safe_dump(test_opt))
    test_typo = tmp / "typo_test.yml"
    test_typo.write_text(yaml.safe_dump({**test_opt, "network_g": {**TINY["network_g"], "type": "LKDNN"}}))
    images = tmp / "images"
    images.mkdir()
    (images / "a.png").write_bytes((Path(lr) / "a.png").read_bytes())
    return {"tmp": tmp, "train": good, "typo": typo, "test": test_yml, "test_typo": test_typo, "images": images,
            "missing": missing, "weights": tmp / "short.pth"}


def entry_points(setup: dict) -> dict[str, Callable[[Path], None]]:
    """Each entry point run on a YAML; a failure comes out as an exception or as 'error: ...' on stderr."""
    tmp = setup["tmp"]

    def cli(module: str, *args: str) -> Callable[[Path], int]:
        return lambda yml: script(module).main(["-opt", str(yml), *args])

    return {
        "train": lambda yml: train_pipeline(argv=["-opt", str(yml), "--root_path", str(tmp / "train_root")]),
        "test": lambda yml: test_entry.score(["-opt", str(yml), "--root", str(tmp / "test_root")]),
        "Upscaler.from_config": lambda yml: Upscaler.from_config(yml, device="cpu"),
        "export_onnx": cli("export_onnx", "--output", str(tmp / "x.onnx")),
        "reparameterize": cli("reparameterize", "--input", str(setup["weights"]), "--output", str(tmp / "d.pth")),
        "convert_checkpoint": lambda yml: script("convert_checkpoint").main(
            ["--input", str(setup["weights"]), "--output", str(tmp / "c.safetensors"), "-opt", str(yml)]),
        "inference": cli("inference", "--input", str(setup["images"]), "--output", str(tmp / "out")),
    }


def failure(run: Callable[[Path], object], yml: Path, capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = run(yml)
    except Exception as err:  # noqa: BLE001 - the library entry points raise, the scripts print
        return str(err)
    assert code not in (0, None), "the entry point accepted the options"
    return capsys.readouterr().err


@pytest.mark.parametrize("name", ["train", "test", "Upscaler.from_config", "export_onnx", "reparameterize",
                                  "convert_checkpoint", "inference"])
def test_a_missing_tensor_is_refused_with_the_same_message(setup: dict, name: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    yml = setup["test"] if name in ("test", "inference", "Upscaler.from_config", "export_onnx") else setup["train"]
    message = failure(entry_points(setup)[name], yml, capsys)
    assert f"{setup['weights']} does not fit LKDN:\nmissing keys (1):\n  {setup['missing']}" in message, message
    assert "Hint: check network_g (LKDN: " in message


@pytest.mark.parametrize("name", ["train", "test", "Upscaler.from_config", "export_onnx", "reparameterize",
                                  "convert_checkpoint", "inference", "profile_model"])
def test_a_typo_in_the_network_type_gets_the_nearest_name(setup: dict, name: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    runs = entry_points(setup) | {"profile_model": lambda yml: script("profile_model").main(
        ["-opt", str(yml), "--no-timing", "--no-flops"])}
    yml = setup["test_typo"] if name in ("test", "inference") else setup["typo"]
    message = failure(runs[name], yml, capsys)
    assert "network_g.type: unknown network 'LKDNN'; did you mean 'LKDN'?" in message, message
    assert "typo" in message  # the file is named


def test_basicsr_architectures_are_not_ours_to_build() -> None:
    """SpyNet (basicsr's) loads a file itself in its constructor: our builders never reach it."""
    from basicsr.utils.registry import ARCH_REGISTRY

    assert "SpyNet" in ARCH_REGISTRY
    with pytest.raises(ValueError, match="network_g.type: unknown network 'SpyNet'"):
        build_network({"type": "SpyNet", "load_path": "evil.pth"})


def test_options_are_read_only_downstream(setup: dict) -> None:
    from lkdn.options import load_options

    opt = load_options(setup["test"])
    with pytest.raises(TypeError, match="read-only"):
        opt["network_g"]["num_feat"] = 64  # type: ignore[index]
    assert opt.scale == 2 and opt.network_g["upscale"] == 2
    assert isinstance(opt.network_g["num_feat"], int) and torch.is_tensor(torch.zeros(1))
