"""Training losses: only file-free basicsr losses and our PerceptualLoss, whose VGG weights come
through the safe loader from a file the options name (checked against the hash in its name)."""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from basicsr.utils.registry import LOSS_REGISTRY

import lkdn  # noqa: F401
from lkdn.checkpoint import CheckpointError, save_file
from lkdn.options import SchemaError, parse_options
from lkdn.training.optim import FILE_FREE_LOSSES, PerceptualLoss, build_loss, loss_class

FILE_WORDS = ("path", "file", "pretrain", "url", "weights", "load")


def vgg_file(folder: Path, *, layers: int = 4, named_by_hash: bool = True) -> Path:
    """The first ``layers`` feature layers of a randomly initialized torchvision VGG19, saved as torchvision names
    its files (``vgg19-<sha256 prefix>.pth``) or under a plain name."""
    torch.manual_seed(0)
    features = torchvision.models.vgg19(weights=None).features[:layers]
    path = save_file({f"features.{k}": v for k, v in features.state_dict().items()}, folder / "vgg19.pth")
    if not named_by_hash:
        return path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path.rename(folder / f"vgg19-{digest[:8]}.pth")


def test_accepted_basicsr_losses_take_no_file() -> None:
    for name in FILE_FREE_LOSSES:
        parameters = inspect.signature(LOSS_REGISTRY.get(name)).parameters
        assert not [p for p in parameters if any(word in p for word in FILE_WORDS)], name


@pytest.mark.parametrize("name", sorted(set(LOSS_REGISTRY.keys()) - {*FILE_FREE_LOSSES, "PerceptualLoss"}))
def test_other_basicsr_losses_are_refused_by_name(name: str) -> None:
    with pytest.raises(KeyError, match=f"basicsr's {name} is not a loss lkdn trains with"):
        loss_class(name)


def test_unknown_loss_gets_did_you_mean() -> None:
    with pytest.raises(KeyError, match="unknown loss 'L1loss'; did you mean 'L1Loss'"):
        loss_class("L1loss")


def test_perceptual_loss_is_the_feature_distance_of_the_given_vgg(tmp_path: Path) -> None:
    weights = vgg_file(tmp_path)
    loss = build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_2": 0.5, "relu1_1": 2.0},
                       "vgg_weights": str(weights), "perceptual_weight": 3.0})
    assert isinstance(loss, PerceptualLoss)
    features = torchvision.models.vgg19(weights=None).features[:3]
    features.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(weights).items()
                              if int(k.split(".")[1]) < 3})
    x, gt = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def layers(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        relu1_1 = features[1](features[0]((image - mean) / std))
        return relu1_1, features[2](relu1_1)

    (a1, a2), (b1, b2) = layers(x), layers(gt)
    expected = 3.0 * (2.0 * torch.nn.functional.l1_loss(a1, b1) + 0.5 * torch.nn.functional.l1_loss(a2, b2))
    percep, style = loss(x, gt)
    torch.testing.assert_close(percep, expected, rtol=1e-6, atol=1e-7)
    assert style is None
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.vgg_net.training


def test_perceptual_loss_l2_criterion_works(tmp_path: Path) -> None:  # basicsr's own 'l2' names a missing class
    loss = build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1.0}, "criterion": "l2",
                       "vgg_weights": str(vgg_file(tmp_path))})
    assert isinstance(loss.criterion, torch.nn.MSELoss)


def test_vgg_weights_missing_names_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/vgg19-dcbb9e9d.pth here
    with pytest.raises(CheckpointError, match=r"download https://download\.pytorch\.org/models/vgg19-dcbb9e9d\.pth "
                                              r"to experiments/pretrained_models/vgg19-dcbb9e9d\.pth"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1.0}})


def test_vgg_weights_whose_hash_contradicts_their_name_are_refused(tmp_path: Path) -> None:
    weights = vgg_file(tmp_path)
    wrong = weights.rename(tmp_path / "vgg19-00000000.pth")
    with pytest.raises(CheckpointError, match=r"vgg19-00000000\.pth: SHA-256 .* does not start with 00000000"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1.0}, "vgg_weights": str(wrong)})


def test_vgg_weights_that_run_code_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("touch pwned_marker",))

    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "vgg.pth", "wb") as handle:
        pickle.dump({"features.0.weight": RunsCode()}, handle)
    with pytest.raises(CheckpointError, match="refused to load"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1.0}, "vgg_weights": "vgg.pth"})
    assert not (tmp_path / "pwned_marker").exists()


def test_too_few_vgg_layers_and_bad_names_are_clear(tmp_path: Path) -> None:
    weights = str(vgg_file(tmp_path, layers=2, named_by_hash=False))
    with pytest.raises(CheckpointError, match=r"vgg19\.pth: not vgg19 weights \(no features\.2\.bias\)"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_2": 1.0}, "vgg_weights": weights})
    with pytest.raises(ValueError, match="perceptual_opt.layer_weights: unknown vgg19 layer 'conv1_3'"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_3": 1.0}, "vgg_weights": weights})
    with pytest.raises(ValueError, match="perceptual_opt.vgg_type: unknown VGG type 'vgg20'"):
        build_loss({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1.0}, "vgg_type": "vgg20"})


def test_options_naming_a_gan_loss_or_a_stray_key_fail_validation(tmp_path: Path) -> None:
    base = {"name": "x", "scale": 2, "network_g": {"type": "LKDN", "upscale": 2},
            "train": {"optim_g": {"type": "Adam", "lr": 1e-3}, "total_iter": 1}}
    for loss, expected in (({"type": "GANLoss", "gan_type": "vanilla"}, "train.perceptual_opt.type: basicsr's GANLoss is not a loss"),
                           ({"type": "PerceptualLoss", "layer_weights": {"conv1_1": 1}, "vgg_weight": "x.pth"},
                            "perceptual_opt.vgg_weight: unknown key; did you mean 'vgg_weights'")):
        path = tmp_path / "x.yml"
        path.write_text(yaml.safe_dump({**base, "train": {**base["train"], "perceptual_opt": loss}}))
        with pytest.raises(SchemaError, match=expected):
            parse_options(path, is_train=True)
