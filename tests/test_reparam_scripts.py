"""scripts/reparameterize.py and scripts/strip_checkpoint.py: outputs, verification, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.utils.registry import ARCH_REGISTRY
from conftest import OFFICIAL_LKDN, ROOT, load_script, shared_file
from safetensors import safe_open

import lkdn  # noqa: F401 (registers)
from lkdn import build_network
from lkdn.archs.bsconv import RBSB
from lkdn.checkpoint import load_file, save_file
from lkdn.evaluate import evaluate_folder
from lkdn.loading import load_network
from lkdn.profiling import count_parameters
from lkdn.reparam import reparameterize_model

TINY_TRAIN = {
    "type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 4,
    "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep",
}
TINY_DEPLOY = TINY_TRAIN | {"conv": "BSConvU", "upsampler": "pixelshuffledirect"}
LKDN_S_TRAIN = {
    "type": "LKDN_S", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 42, "num_atten": 42, "num_block": 5,
    "upscale": 4, "num_in": 4, "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep",
}


reparameterize = load_script("scripts/reparameterize.py")
strip_checkpoint = load_script("scripts/strip_checkpoint.py")


pytestmark = pytest.mark.usefixtures("one_thread")


def train_options(network_g: dict, *, set5: Path | None = None) -> dict:
    """A BasicSR train config (what a user passes to -opt after training)."""
    val = {"name": "Set5", "type": "PairedImageDataset", "io_backend": {"type": "disk"}}
    if set5 is not None:
        val |= {"dataroot_gt": str(set5 / "HR"), "dataroot_lq": str(set5 / "LR")}
    return {
        "name": "train_net", "model_type": "SRModel", "scale": network_g["upscale"], "num_gpu": "auto", "manual_seed": 0,
        "datasets": {
            "train": {"name": "DF2K", "type": "PairedImageDataset", "gt_size": 192, "io_backend": {"type": "disk"}},
            "val": val,
        },
        "network_g": network_g,
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {"ema_decay": 0.999, "total_iter": 1000},
        "val": {"val_freq": 500, "save_img": False, "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}}},
        "logger": {"print_freq": 100},
        "dist_params": {"backend": "nccl", "port": 29500},
    }


def write_yaml(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """A tiny training-form network saved with distinct params and params_ema, and its train YAML."""
    nets = {key: build_network(TINY_TRAIN) for key in ("params", "params_ema")}
    for net in nets.values():  # non-zero identity-branch parameters (rep1x1 starts near zero otherwise)
        with torch.no_grad():
            for param in net.parameters():
                param.add_(torch.randn_like(param) * 0.1)
    ckpt = save_file({key: net.state_dict() for key, net in nets.items()}, tmp_path / "net_g.pth")
    opt = write_yaml(train_options(TINY_TRAIN), tmp_path / "train.yml")
    return {"nets": nets, "ckpt": ckpt, "opt": opt}


def run_reparameterize(*args: object) -> int:
    return reparameterize.main([str(a) for a in args])


# ---------------------------------------------------------------- the official checkpoint, through the real script


def test_script_folds_official_lkdn_s_into_a_deploy_checkpoint_and_yaml(tmp_path: Path) -> None:
    ckpt = shared_file("pretrained", "LKDN", "LKDN-S_x4.pth")
    set5 = shared_file("benchmarks", "Set5", "x4")
    opt = write_yaml(train_options(LKDN_S_TRAIN, set5=set5), tmp_path / "train_LKDN-S_x4.yml")
    out, out_opt = tmp_path / "LKDN-S_deploy_x4.pth", tmp_path / "test_LKDN-S_deploy_x4.yml"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reparameterize.py"), "-opt", str(opt), "--input", str(ckpt),
         "--output", str(out), "--fold-num-in", "--output-opt", str(out_opt)],
        capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "(params_ema)" in result.stdout
    assert "parameters: 172,449 -> 128,799" in result.stdout
    assert "folded: 1 PixelShuffleRep, 15 RBSB; num_in 4 -> 1" in result.stdout
    assert list(load_file(out)) == ["params"]

    test_opt = yaml.safe_load(out_opt.read_text(encoding="utf-8"))
    assert test_opt["network_g"] == LKDN_S_TRAIN | {"num_in": 1, "conv": "BSConvU", "upsampler": "pixelshuffledirect"}
    assert test_opt["path"] == {"pretrain_network_g": str(out), "param_key_g": "params", "strict_load_g": True}
    assert list(test_opt["datasets"]) == ["test_1"] and test_opt["datasets"]["test_1"]["name"] == "Set5"
    assert not {"train", "logger", "dist_params"} & set(test_opt)
    assert "val_freq" not in test_opt["val"] and test_opt["name"] == "train_net_deploy"

    net = build_network(test_opt["network_g"])
    load_network(net, test_opt["path"]["pretrain_network_g"], param_key=test_opt["path"]["param_key_g"], strict=True)
    assert count_parameters(net) == 128_799
    dataset = test_opt["datasets"]["test_1"]
    metrics = evaluate_folder(net, dataset["dataroot_gt"], dataset["dataroot_lq"], scale=test_opt["scale"]).values()
    _, _, psnr, ssim = OFFICIAL_LKDN["LKDN-S_del_rep_x4"]
    assert sum(m["psnr"] for m in metrics) / len(metrics) == pytest.approx(psnr, abs=0.01)
    assert sum(m["ssim"] for m in metrics) / len(metrics) == pytest.approx(ssim, abs=0.0005)


# ---------------------------------------------------------------- outputs and options (in process, tiny network)


def test_safetensors_output_describes_itself(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "deploy.safetensors"
    assert run_reparameterize("-opt", tiny["opt"], "--input", tiny["ckpt"], "--output", out) == 0
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert set(metadata) == {"lkdn_format", "network_g", "scale"}
    assert metadata["lkdn_format"] == "1" and metadata["scale"] == "2"
    network_g = json.loads(metadata["network_g"])
    assert network_g == TINY_DEPLOY
    net = load_network(build_network(network_g), out, strict=True).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(net(x), tiny["nets"]["params_ema"].eval()(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("param_key", "used"), [("params_ema", "params_ema"), ("params", "params")])
def test_param_key_chooses_the_weights(tiny: dict, tmp_path: Path, param_key: str, used: str) -> None:
    out = tmp_path / "deploy.pth"
    assert run_reparameterize("-opt", tiny["opt"], "--input", tiny["ckpt"], "--output", out, "--param-key", param_key) == 0
    expected = reparameterize_model(tiny["nets"][used]).state_dict()
    written = load_file(out)["params"]
    assert set(written) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(written[key], value, atol=0, rtol=0)


def test_ema_falls_back_to_params(tiny: dict, tmp_path: Path) -> None:
    only_params = save_file({"params": tiny["nets"]["params"].state_dict()}, tmp_path / "raw.pth")
    out = tmp_path / "deploy.pth"
    assert run_reparameterize("-opt", tiny["opt"], "--input", only_params, "--output", out) == 0
    expected = reparameterize_model(tiny["nets"]["params"]).state_dict()
    assert all(torch.equal(load_file(out)["params"][k], v) for k, v in expected.items())


def test_test_config_input_keeps_its_datasets_and_paths(tiny: dict, tmp_path: Path) -> None:
    test_opt = {
        "name": "test_tiny", "model_type": "SRModel", "scale": 2, "num_gpu": 0,
        "datasets": {"test_1": {"name": "Set5"}, "test_2": {"name": "Set14"}},
        "network_g": TINY_TRAIN, "path": {"pretrain_network_g": "old.pth", "results_root": "r"},
        "val": {"save_img": True},
    }
    out, out_opt = tmp_path / "deploy.pth", tmp_path / "deploy.yml"
    opt = write_yaml(test_opt, tmp_path / "test.yml")
    assert run_reparameterize("-opt", opt, "--input", tiny["ckpt"], "--output", out, "--output-opt", out_opt) == 0
    written = yaml.safe_load(out_opt.read_text(encoding="utf-8"))
    assert written["datasets"] == test_opt["datasets"] and written["val"] == test_opt["val"]
    assert written["path"] == {"pretrain_network_g": str(out), "results_root": "r", "param_key_g": "params",
                               "strict_load_g": True}
    assert written["network_g"] == TINY_DEPLOY and written["name"] == "test_tiny_deploy"


def test_any_registered_architecture_with_fuse_repsr(tmp_path: Path) -> None:
    if "RepSR" not in ARCH_REGISTRY:
        pytest.skip("RepSR is not registered")
    network_g = {"type": "RepSR", "num_feat": 8, "num_block": 2, "upscale": 3}
    net = build_network(network_g)
    with torch.no_grad():  # BN population statistics far from (0, 1), so the fold has work to do
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    ckpt = save_file({"params": net.state_dict()}, tmp_path / "repsr.pth")
    opt = write_yaml(train_options(network_g), tmp_path / "train_repsr.yml")
    out = tmp_path / "repsr_deploy.safetensors"
    assert run_reparameterize("-opt", opt, "--input", ckpt, "--output", out) == 0
    with safe_open(str(out), framework="pt") as handle:
        network_deploy = json.loads(handle.metadata()["network_g"])
    assert network_deploy == network_g | {"deploy": True}
    deploy = load_network(build_network(network_deploy), out, strict=True).eval()
    assert count_parameters(deploy) < count_parameters(net)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), net.eval()(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- refusals: nothing is written


def test_broken_fuse_is_refused_and_nothing_is_written(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    correct = RBSB.fuse

    def broken(self: RBSB) -> torch.nn.Module:
        fused = correct(self)
        fused.dw.bias.sub_(self.rep1x1.bias)  # forgets the 1x1 branch's bias
        return fused

    monkeypatch.setattr(RBSB, "fuse", broken)
    out, out_opt = tmp_path / "deploy.pth", tmp_path / "deploy.yml"
    out.write_bytes(b"previous deploy checkpoint")
    code = run_reparameterize("-opt", tiny["opt"], "--input", tiny["ckpt"], "--output", out, "--output-opt", out_opt)
    assert code == 1
    err = capsys.readouterr().err
    assert "verification failed" in err and "nothing written" in err
    diff = float(err.split("differs from the original by ")[1].split(" ")[0])
    assert diff > 1e-3
    assert out.read_bytes() == b"previous deploy checkpoint" and not out_opt.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.pth", "net_g.pth", "train.yml"]


def test_tiny_tolerance_is_refused(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "deploy.safetensors"
    assert run_reparameterize("-opt", tiny["opt"], "--input", tiny["ckpt"], "--output", out, "--atol", "1e-15") == 1
    assert "verification failed" in capsys.readouterr().err
    assert not out.exists()


def test_checkpoint_that_does_not_fit_is_refused(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    opt = write_yaml(train_options(TINY_TRAIN | {"num_feat": 10, "num_atten": 10}), tmp_path / "wrong.yml")
    out = tmp_path / "deploy.pth"
    assert run_reparameterize("-opt", opt, "--input", tiny["ckpt"], "--output", out) == 2
    err = capsys.readouterr().err
    assert "does not fit LKDN" in err and "shape mismatches" in err and "num_feat" in err
    assert not out.exists()


def test_output_over_an_input_is_refused(tiny: dict, capsys: pytest.CaptureFixture) -> None:
    before = tiny["ckpt"].read_bytes()
    assert run_reparameterize("-opt", tiny["opt"], "--input", tiny["ckpt"], "--output", tiny["ckpt"]) == 2
    assert "would overwrite an input file" in capsys.readouterr().err
    assert tiny["ckpt"].read_bytes() == before


def test_scale_that_contradicts_upscale_is_refused(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    opt = write_yaml(train_options(TINY_TRAIN) | {"scale": 3}, tmp_path / "bad_scale.yml")
    assert run_reparameterize("-opt", opt, "--input", tiny["ckpt"], "--output", tmp_path / "d.pth") == 2
    assert "network_g.upscale: 2 differs from the top-level scale 3" in capsys.readouterr().err


# ---------------------------------------------------------------- strip_checkpoint.py


@pytest.fixture
def full_ckpt(tmp_path: Path) -> Path:
    state = {"w": torch.arange(4.0), "b": torch.ones(2)}
    return save_file(
        {"params": state, "params_ema": {k: v + 1 for k, v in state.items()}, "iter": 7, "optimizer": {"lr": 0.1}},
        tmp_path / "full.pth",
    )


@pytest.mark.parametrize(
    ("param_key", "kept"), [("params_ema", ["params_ema"]), ("params", ["params"]), ("both", ["params_ema", "params"])]
)
def test_strip_keeps_exactly_the_chosen_weights(full_ckpt: Path, tmp_path: Path, param_key: str, kept: list) -> None:
    out = tmp_path / "small.pth"
    assert strip_checkpoint.main(["--input", str(full_ckpt), "--output", str(out), "--param-key", param_key]) == 0
    written, original = load_file(out), load_file(full_ckpt)
    assert sorted(written) == sorted(kept)
    for key in kept:
        assert set(written[key]) == {"w", "b"}
        assert all(torch.equal(written[key][k], original[key][k]) for k in ("w", "b"))
    assert out.stat().st_size < full_ckpt.stat().st_size


def test_strip_falls_back_to_params_and_passes_bare_dicts(tmp_path: Path) -> None:
    only_params = save_file({"params": {"module.w": torch.ones(3)}, "iter": 1}, tmp_path / "p.pth")
    assert strip_checkpoint.main(["--input", str(only_params), "--output", str(tmp_path / "a.pth")]) == 0
    assert list(load_file(tmp_path / "a.pth")) == ["params"]
    assert list(load_file(tmp_path / "a.pth")["params"]) == ["w"]
    bare = save_file({"module.w": torch.ones(3)}, tmp_path / "bare.pth")
    assert strip_checkpoint.main(["--input", str(bare), "--output", str(tmp_path / "b.safetensors")]) == 0
    assert list(load_file(tmp_path / "b.safetensors")) == ["w"]


def test_strip_safetensors_is_one_flat_state_dict(full_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "small.safetensors"
    assert strip_checkpoint.main(["--input", str(full_ckpt), "--output", str(out), "--param-key", "params"]) == 0
    assert torch.equal(load_file(out)["w"], torch.arange(4.0))
    out.unlink()
    assert strip_checkpoint.main(["--input", str(full_ckpt), "--output", str(out), "--param-key", "both"]) == 2
    assert "one flat state dict" in capsys.readouterr().err and not out.exists()


def test_strip_missing_key_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    only_params = save_file({"params": {"w": torch.ones(3)}}, tmp_path / "p.pth")
    out = tmp_path / "o.pth"
    assert strip_checkpoint.main(["--input", str(only_params), "--output", str(out), "--param-key", "both"]) == 2
    assert "no state dict under 'params_ema'" in capsys.readouterr().err and not out.exists()
