"""Fuzzing (hypothesis, bounded) every weights loader: ``.pth`` and ``.safetensors`` files, with
random tensors, keys, containers and self-describing metadata, give a network or one clear error
naming the file; none runs code, allocates what the tensors do not hold, or raises anything else.

Entry points fuzzed: the safe loader (``load_file`` / ``extract_state_dict`` / ``load_network``),
self-describing files (``network_from_file``, ``Upscaler.from_checkpoint``), the options loader
(``load_network_from_options``), and the scripts ``convert_checkpoint.py``, ``strip_checkpoint.py``
and ``reparameterize.py`` (their ``main``: an exit status and one ``error:`` line).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import load_script
from hypothesis import given, settings
from hypothesis import strategies as st

from lkdn import Upscaler, build_network
from lkdn.checkpoint import CheckpointError
from lkdn.loading import load_network, load_network_from_options, network_from_file
from lkdn.options import OptionsError, SchemaError, load_options

FUZZ = settings(max_examples=60)  # no deadline, derandomized, short reprs: the suite-wide profile (conftest.py)
TINY_NET = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "num_in": 1}
CLEAR = (CheckpointError, OptionsError, SchemaError, ValueError)
PWNED = "pwned_marker"

torch.manual_seed(0)
GOOD = build_network(TINY_NET).state_dict()


class _RunsCode:
    def __reduce__(self):
        return (open, (PWNED, "w"))  # noqa: SIM115 (what a malicious file would do)


def _script(name: str) -> Any:
    return load_script(f"scripts/{name}.py")


SCRIPTS = {name: _script(name) for name in ("convert_checkpoint", "strip_checkpoint", "reparameterize")}

dtypes = st.sampled_from([torch.float32, torch.float16, torch.float64, torch.int64, torch.uint8, torch.bool])
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
values = st.sampled_from([0.0, 1.0, -2.5, math.nan, math.inf])


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    return torch.full(draw(shapes), draw(values)).to(draw(dtypes))


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    """A mutation of the tiny network's state dict: keys dropped, renamed, added; tensors replaced."""
    state = dict(GOOD)
    keys = sorted(state)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "rename", "add", "replace", "none"]))
        key = draw(st.sampled_from(keys))
        if action == "drop":
            state.pop(key, None)
        elif action == "rename":
            if key in state:
                state["module." * draw(st.integers(0, 1)) + key + draw(st.sampled_from(["", "_x", ".weight"]))] = \
                    state.pop(key)
        elif action == "add":
            state[draw(st.text(min_size=1, max_size=10))] = draw(tensors())
        elif action == "replace" and key in state:
            state[key] = draw(tensors())
    return state


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(),
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
network_options = st.one_of(
    st.just(TINY_NET),
    st.builds(lambda k, v: {**TINY_NET, k: v}, st.sampled_from(sorted(TINY_NET) + ["load_path", "extra"]), json_values),
    st.builds(lambda t: {**TINY_NET, "type": t}, st.sampled_from(["SpyNet", "VGGFeatureExtractor", "LKDNN", "BSRN",
                                                                  "SPAN", "", "os.system"])),
    json_values,
)
metadata = st.one_of(
    st.none(),
    st.builds(lambda net, scale, fmt: {"lkdn_format": fmt, "network_g": net, "scale": scale},
              network_options.map(lambda o: json.dumps(o, allow_nan=True)) | st.text(max_size=40),
              st.sampled_from(["2", "4", "0", "-3", "x", "2.0", "1e9"]), st.sampled_from(["1", "2", ""])),
    st.dictionaries(st.sampled_from(["lkdn_format", "network_g", "scale", "other"]), st.text(max_size=30), max_size=4),
)
containers = st.sampled_from(["params", "params_ema", "both", "bare", "list", "nested", "code", "string"])


def _container(kind: str, state: dict[str, torch.Tensor]) -> Any:
    return {"params": {"params": state}, "params_ema": {"params_ema": state}, "both": {"params": state,
            "params_ema": state}, "bare": state, "list": [state], "nested": {"params": {"params": state}},
            "code": {"params": _RunsCode()}, "string": "not a checkpoint"}[kind]


def _write(folder: Path, state: dict[str, torch.Tensor], kind: str, suffix: str, meta: dict | None) -> Path | None:
    path = folder / f"fuzz{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
        except Exception:  # noqa: BLE001 - safetensors refuses some inputs itself (empty names, shared memory)
            return None
        return path
    if kind == "code":
        with open(path, "wb") as handle:
            pickle.dump(_container(kind, state), handle)
        return path
    torch.save(_container(kind, state), path)
    return path


def _expect_clear(call: Any, path: Path) -> Any:
    try:
        return call()
    except CLEAR as err:
        assert str(path.name) in str(err) or "network_g" in str(err) or "scale" in str(err), str(err)
        return None


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_weights")
    (folder / "tiny.yml").write_text(yaml.safe_dump({"name": "fuzz", "scale": 2, "network_g": TINY_NET}))
    return folder


@FUZZ
@given(state=state_dicts(), kind=containers, suffix=st.sampled_from([".pth", ".safetensors"]), meta=metadata)
def test_every_loader_gives_a_network_or_one_clear_error(work: Path, state, kind, suffix, meta, monkeypatch,
                                                         capsys) -> None:
    monkeypatch.chdir(work)
    path = _write(work, state, kind, suffix, meta)
    if path is None:
        return
    net = build_network(TINY_NET)
    _expect_clear(lambda: load_network(net, path), path)
    opt = load_options(work / "tiny.yml")
    _expect_clear(lambda: load_network_from_options(opt, weights=path), path)
    if suffix == ".safetensors":
        built = _expect_clear(lambda: network_from_file(path), path)
        if built is not None:
            net, options = built[:2] if isinstance(built, tuple) else (built, None)
            assert isinstance(net, torch.nn.Module)
            assert type(net).__module__.startswith("lkdn.archs.")  # only our own architectures are ever built
        _expect_clear(lambda: Upscaler.from_checkpoint(path, device="cpu"), path)
    for name, argv in (
        ("convert_checkpoint", ["--input", str(path), "--output", str(work / "out.safetensors"), "-opt", "tiny.yml"]),
        ("strip_checkpoint", ["--input", str(path), "--output", str(work / f"stripped{suffix}")]),
        ("reparameterize", ["-opt", "tiny.yml", "--input", str(path), "--output", str(work / "deploy.pth")]),
    ):
        code = SCRIPTS[name].main(argv)
        err = capsys.readouterr().err
        assert code in (0, 1, 2), (name, code)
        assert "Traceback" not in err, (name, err)
        if code:
            assert "error" in err, (name, err)
    assert not (work / PWNED).exists()
