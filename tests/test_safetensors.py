"""Self-describing safetensors files: .pth -> .safetensors -> load is exact, metadata round trip,
the conversion script and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import OFFICIAL_LKDN, load_script, shared_file

from lkdn import build_network
from lkdn.checkpoint import CheckpointError, load_file, load_state_dict, save_file
from lkdn.loading import LKDN_FORMAT, load_network, network_from_file, read_metadata, save_network_file

TINY_REP = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 2, "upscale": 3, "conv": "BSConvU_rep",
            "upsampler": "pixelshuffle_rep"}


def _script():
    return load_script("scripts/convert_checkpoint.py")


@pytest.mark.parametrize("name", ["LKDN_x4", "LKDN-S_x4"])
def test_official_pth_to_safetensors_is_exact(name: str, tmp_path: Path) -> None:
    opt, scale, _, _ = OFFICIAL_LKDN[name]
    pth = shared_file("pretrained", "LKDN", f"{name}.pth")
    out = tmp_path / f"{name}.safetensors"
    assert _script().main(["--input", str(pth), "--output", str(out), "--network-json", json.dumps(opt)]) == 0
    original, converted = load_state_dict(pth), load_state_dict(out)  # params_ema
    assert sorted(converted) == sorted(original)  # safetensors stores keys sorted
    for key, value in original.items():
        assert converted[key].dtype == value.dtype and torch.equal(converted[key], value), key
    assert read_metadata(out) == {"lkdn_format": LKDN_FORMAT, "network_g": opt, "scale": scale}
    net = network_from_file(out).eval()
    ours = load_network(build_network(opt), pth).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(net(x), ours(x))


def test_safetensors_back_to_pth_from_its_own_metadata(tmp_path: Path) -> None:
    state = build_network(TINY_REP).state_dict()
    save_network_file(state, tmp_path / "a.safetensors", TINY_REP)
    assert _script().main(["--input", str(tmp_path / "a.safetensors"), "--output", str(tmp_path / "b.pth")]) == 0
    ckpt = load_file(tmp_path / "b.pth")
    assert list(ckpt) == ["params"]
    assert all(torch.equal(ckpt["params"][k], v) for k, v in state.items()) and ckpt["params"].keys() == state.keys()
    assert read_metadata(tmp_path / "b.pth") == {}


def test_metadata_format_and_scale_from_the_network(tmp_path: Path) -> None:
    options = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1}  # upscale: the default, 4
    path = save_network_file(build_network(options).state_dict(), tmp_path / "s.safetensors", options)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata()
    assert raw == {"lkdn_format": "1", "network_g": json.dumps(options), "scale": "4"}
    assert read_metadata(path)["network_g"] == options


def test_unreadable_metadata_is_reported(tmp_path: Path) -> None:
    state = {"w": torch.ones(2)}
    save_file(state, tmp_path / "future.safetensors", metadata={"lkdn_format": "9", "network_g": "{}", "scale": "2"})
    with pytest.raises(CheckpointError, match="future.safetensors: lkdn_format '9' is not supported"):
        read_metadata(tmp_path / "future.safetensors")
    save_file(state, tmp_path / "bad.safetensors", metadata={"lkdn_format": "1", "network_g": "{oops", "scale": "2"})
    with pytest.raises(CheckpointError, match="bad.safetensors: metadata 'network_g' is not valid JSON"):
        read_metadata(tmp_path / "bad.safetensors")
    save_file(state, tmp_path / "plain.safetensors")
    assert read_metadata(tmp_path / "plain.safetensors") == {}
    with pytest.raises(CheckpointError, match="plain.safetensors: no 'network_g' metadata"):
        network_from_file(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="expected a flat state dict"):
        save_network_file({"params": state}, tmp_path / "nested.safetensors", TINY_REP)


def test_script_refuses_options_that_do_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_file({"params": build_network(TINY_REP).state_dict()}, tmp_path / "rep.pth")
    deploy = TINY_REP | {"conv": "BSConvU", "upsampler": "pixelshuffledirect"}
    out = tmp_path / "rep.safetensors"
    assert _script().main(["--input", str(tmp_path / "rep.pth"), "--output", str(out), "--network-json", json.dumps(deploy)]) == 1
    err = capsys.readouterr().err
    assert "rep.pth does not fit LKDN" in err and "unexpected keys" in err and "B1.c1_r.rep1x1.weight" in err
    assert not out.exists()
    assert _script().main(["--input", str(tmp_path / "rep.pth"), "--output", str(out)]) == 1
    assert "rep.pth does not describe its network: pass -opt or --network-json" in capsys.readouterr().err
