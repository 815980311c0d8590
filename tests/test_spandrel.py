"""spandrel integration: every architecture of ours that declares a detection in its contract loads
through spandrel's ModelLoader with the right scale and our outputs (official checkpoints where
they exist, checkpoints of ours otherwise); hyperparameters are read back from shapes for many
variants; install() is idempotent and wins detection; spandrel stays optional."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import OFFICIAL_LKDN, ROOT, shared_file

spandrel = pytest.importorskip("spandrel")

import lkdn.integrations.spandrel as lkdn_spandrel  # noqa: E402
from lkdn import build_network  # noqa: E402
from lkdn.archs import our_architectures  # noqa: E402
from lkdn.archs.lkdn_arch import lkdn_options_from_state  # noqa: E402
from lkdn.archs.rfdn_arch import rfdn_options_from_state  # noqa: E402
from lkdn.checkpoint import CheckpointError, save_file  # noqa: E402
from lkdn.loading import load_network  # noqa: E402

OFFICIAL_RFDN = ({"type": "RFDN", "num_feat": 50, "num_block": 4, "attention": "esa", "img_range": 255}, 4)
LKDN_ID, RFDN_ID = "lkdn:LKDN", "lkdn:RFDN"


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    lkdn_spandrel.install()


def _assert_same_output(descriptor, ours: torch.nn.Module, size: int = 20) -> None:
    x = torch.rand(1, descriptor.input_channels, size, size + 3)
    with torch.no_grad():
        expected = ours.eval()(x)
        torch.testing.assert_close(descriptor.model.eval()(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(descriptor(x), expected.clamp(0, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(OFFICIAL_LKDN))
def test_official_lkdn_checkpoints_load_through_spandrel(name: str) -> None:
    opt, scale, _, _ = OFFICIAL_LKDN[name]
    path = shared_file("pretrained", "LKDN", f"{name}.pth")
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == LKDN_ID
    assert descriptor.scale == scale and descriptor.purpose == "SR"
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    _assert_same_output(descriptor, load_network(build_network(opt), path))  # ours prefers params_ema too


def test_official_rfdn_aim_loads_with_img_range_255() -> None:
    opt, scale = OFFICIAL_RFDN
    path = shared_file("pretrained", "RFDN", "RFDN_AIM.pth")
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == RFDN_ID
    assert descriptor.scale == scale and descriptor.model.img_range == 255.0
    assert descriptor.size_requirements.minimum == 15
    _assert_same_output(descriptor, load_network(build_network(opt), path))


LKDN_VARIANTS = [
    {"num_feat": 8, "num_atten": 6, "num_block": 1, "upscale": 2, "num_in": 1},
    {"num_feat": 12, "num_atten": 12, "num_block": 3, "upscale": 3, "num_in": 4, "conv": "BSConvU_rep"},
    {"num_feat": 8, "num_atten": 8, "num_block": 2, "upscale": 4, "num_in": 4, "upsampler": "pixelshuffle_rep"},
    {"num_feat": 10, "num_atten": 4, "num_block": 2, "upscale": 1, "num_in": 2, "conv": "BSConvU_rep",
     "upsampler": "pixelshuffle_rep"},
    {"num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 4, "num_in_ch": 1, "num_out_ch": 1},
    {"num_feat": 8, "num_atten": 8, "num_block": 2, "upscale": 2, "num_in": 1, "attention": "none"},
    {"num_feat": 16, "num_atten": 16, "num_block": 1, "upscale": 2, "num_in": 1, "attention": "esa_cca"},
]


@pytest.mark.parametrize("variant", LKDN_VARIANTS, ids=lambda v: "-".join(f"{k}{v[k]}" for k in v))
def test_lkdn_hyperparameters_read_from_shapes(variant: dict) -> None:
    options = {"type": "LKDN", "num_in_ch": 3, "num_out_ch": 3, "conv": "BSConvU", "upsampler": "pixelshuffledirect",
               **variant}
    try:
        net = build_network(options)
    except ValueError as err:  # an ablation switch this version of the architecture lacks
        pytest.skip(str(err))
    for p in net.parameters():  # non-trivial weights everywhere (LayerNorm weights would be ones)
        torch.nn.init.normal_(p, std=0.1)
    expected = {k: v for k, v in options.items() if v != "lka"}
    assert lkdn_options_from_state(net.state_dict()) == expected
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    assert descriptor.scale == options["upscale"]
    assert descriptor.purpose == ("Restoration" if options["upscale"] == 1 else "SR")
    _assert_same_output(descriptor, net)


@pytest.mark.parametrize(
    "variant",
    [
        {"num_feat": 16, "num_block": 2, "upscale": 2, "attention": "esa"},
        {"num_feat": 24, "num_block": 3, "upscale": 3, "attention": "cca", "cca_reduction": 4},
        {"num_feat": 16, "num_block": 1, "upscale": 4, "attention": "cca", "cca_reduction": 8},
    ],
    ids=["esa", "cca4", "cca8"],
)
def test_rfdn_hyperparameters_read_from_shapes(variant: dict) -> None:
    state = build_network({"type": "RFDN", **variant}).state_dict()
    options = rfdn_options_from_state(state)
    assert options["img_range"] in (1.0, 255.0)  # random weights: either may fit the probe
    net = build_network({"type": "RFDN", **variant, "img_range": options["img_range"]})
    net.load_state_dict(state)
    expected = {"type": "RFDN", "num_in_ch": 3, "num_out_ch": 3, "cca_reduction": 4, **variant}
    if variant["attention"] == "esa":
        expected.pop("cca_reduction")
    assert {k: v for k, v in options.items() if k != "img_range"} == expected
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    assert descriptor.architecture.id == RFDN_ID and descriptor.scale == variant["upscale"]
    assert descriptor.model.img_range == options["img_range"]
    _assert_same_output(descriptor, net)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", ["BSRN"])
def test_official_bsrn_checkpoints_load_through_spandrel(name: str, scale: int) -> None:
    path = shared_file("pretrained", name, f"{name}_x{scale}.pth")
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == f"lkdn:{name}" and descriptor.scale == scale
    _assert_same_output(descriptor, load_network(build_network({"type": name, "upscale": scale}), path), size=24)


DETECTED = sorted(name for name, entry in our_architectures().items() if entry.spandrel is not None)
# What the weights do not hold: BSConvU_idt has the parameters of BSConvU (it reads, and loads, as
# BSConvU); SPAN's and RLFN's img_range are assumed official (255), EFDN's output clamp too. RFDN's
# img_range is probed.
NOT_IN_THE_WEIGHTS = {("LKDN", "conv", "BSConvU_idt"), ("SPAN", "img_range", 1.0), ("RLFN", "img_range", 1.0),
                      ("EFDN", "clamp", False)}
FAMILY_CASES = [
    (name, {**our_architectures()[name].test_options, **variant})
    for name in DETECTED for variant in ({}, *our_architectures()[name].test_variants)
    if not any((name, k, v) in NOT_IN_THE_WEIGHTS for k, v in variant.items())
]


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c[0] + "".join(f"-{k}={v}" for k, v in c[1].items()))
def test_every_family_loads_a_checkpoint_of_ours(case: tuple[str, dict], tmp_path) -> None:
    """A .pth written by our save_file, for every architecture and variant that declares a detection."""
    name, options = case
    net = build_network({"type": name, **options, "upscale": 3 if name != "VDSR" else 4})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = save_file({"params": net.state_dict()}, tmp_path / f"{name}.pth")
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == f"lkdn:{type(net).__name__}"
    assert descriptor.scale == net.upscale
    if name == "RFDN":  # img_range is not in the weights: the probe's choice (random weights fit either)
        net.img_range = descriptor.model.img_range
    _assert_same_output(descriptor, net, size=24)


def test_every_family_of_the_project_declares_a_detection() -> None:
    assert set(DETECTED) >= {"LKDN", "BSRN", "RFDN", "IMDN", "RepSR", "VDSR", "SPAN"}


def test_install_is_idempotent_and_wins_detection() -> None:
    registry = spandrel.MAIN_REGISTRY
    count = len(registry)
    assert lkdn_spandrel.install() == [] and len(registry) == count
    ours = [a.architecture.id for a in registry.architectures("detection")[: len(lkdn_spandrel.architectures())]]
    assert sorted(ours) == sorted(a.id for a in lkdn_spandrel.architectures())

    class Greedy(spandrel.Architecture[torch.nn.Module]):  # a built-in that claims every state dict
        def __init__(self) -> None:
            super().__init__(id="Greedy", detect=lambda state: True)

        def load(self, state_dict):  # pragma: no cover - must never be reached
            raise AssertionError("Greedy was asked to load an LKDN state dict")

    own = spandrel.ArchRegistry()
    own.add(spandrel.ArchSupport.from_architecture(Greedy()))
    assert lkdn_spandrel.install(own) == [a.id for a in lkdn_spandrel.architectures()]
    net = build_network({"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1})
    assert own.load(net.state_dict()).architecture.id == LKDN_ID


def test_import_lkdn_does_not_import_spandrel() -> None:
    code = "import sys, lkdn, lkdn.integrations; print('spandrel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_spandrel_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # what `import spandrel` sees when it is not installed
    monkeypatch.delitem(sys.modules, "lkdn.integrations.spandrel")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[spandrel\]"'):
        importlib.import_module("lkdn.integrations.spandrel")


def test_load_model_reads_through_the_safe_loader(tmp_path) -> None:
    net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2})
    path = save_file({"params": net.state_dict()}, tmp_path / "tiny.pth")
    descriptor = lkdn_spandrel.load_model(path)
    assert descriptor.architecture.id == LKDN_ID and descriptor.scale == 2
    _assert_same_output(descriptor, net)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_load_model_refuses_code_and_unknown_tensors_in_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"params": _RunsCode()}, handle)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load") as err:
        lkdn_spandrel.load_model(tmp_path / "evil.pth")
    assert "\n" not in str(err.value) and not (tmp_path / "pwned_marker").exists()
    path = save_file({"params": {"mystery.weight": torch.zeros(3, 3)}}, tmp_path / "mystery.pth")
    with pytest.raises(CheckpointError, match=r"mystery\.pth: spandrel knows no architecture .*mystery\.weight"):
        lkdn_spandrel.load_model(path)
