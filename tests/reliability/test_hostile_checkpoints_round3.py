"""Hostile checkpoints and sizes: no hang, no silent nonsense, no traceback.

Self-describing files whose options imply far more network than their tensors, tiles whose
context dominates the work, tensors of the wrong kind (complex, integer, sparse, expanded
views), weights that overflow to NaN outputs, ambiguous ``module.`` keys, and sizes or numbers
that can never fit: each is a one-line error (or warning) naming the file, key or flag and value.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from reliability_common import TINY_NET, make_images, one_line, script, test_set_options
from safetensors.torch import save_file as save_safetensors

from lkdn import Upscaler, build_network, images
from lkdn import test as test_entry
from lkdn.archs.build import MAX_TENSORS, NetworkTooLargeError
from lkdn.checkpoint import CheckpointError, load_state_dict, save_file
from lkdn.images import NonFiniteOutputError, efficient_tile, tile_overhead
from lkdn.loading import load_network, network_from_file, save_network_file
from lkdn.options import OptionsError, SchemaError, load_options

TINY_TENSORS = 40  # parameter tensors of TINY_NET

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("hostile_ckpt") / "data")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_network(TINY_NET).state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, state) -> Path:
    return save_file({"params": state}, tmp_path_factory.mktemp("w") / "tiny.pth")


options_file = functools.partial(test_set_options, name="hostile")


def described(path: Path, state: dict[str, torch.Tensor], network_g: str, scale: str = "2") -> Path:
    """A self-describing .safetensors file with raw metadata strings (as a hostile writer makes it)."""
    save_safetensors({k: v.contiguous() for k, v in state.items()}, str(path),
                     metadata={"lkdn_format": "1", "network_g": network_g, "scale": scale})
    return path


# ------------------------------------------------------------------ 1. options that imply far more network


def test_metadata_implying_300000_blocks_is_refused_before_building(tmp_path: Path, state, capsys) -> None:
    path = described(tmp_path / "big.safetensors", state, json.dumps({**TINY_NET, "num_block": 300_000}))
    expected = (f"the options build more than {4 * TINY_TENSORS} parameter tensors (4x the {TINY_TENSORS} tensors of "
                f"2520 values {path} holds); check num_feat=8, num_atten=8, num_block=300000")
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        Upscaler.from_checkpoint(path, device="cpu")
    code = script("convert_checkpoint").main(["--input", str(path), "--output", str(tmp_path / "out.pth")])
    assert code == 1 and expected in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out.pth").exists()


def test_options_beyond_the_tensor_ceiling_are_refused_without_weights() -> None:
    with pytest.raises(NetworkTooLargeError, match=rf"network_g \(LKDN\): the options build more than {MAX_TENSORS} "
                                                   r"parameter tensors .*num_block=300000"):
        build_network({**TINY_NET, "num_block": 300_000})


# ------------------------------------------------------------------ 2. tiles whose context dominates


def test_tile_overhead_counts_the_context_each_tile_computes() -> None:
    assert tile_overhead(64, 64, 32, 63) == 4.0  # each of the 4 tiles computes the whole image
    assert tile_overhead(100, 100, 100, 63) == 1.0
    assert tile_overhead(128, 128, 32, 63) == pytest.approx(12.0322265625, abs=1e-12)
    assert efficient_tile(63) == 305  # inner tiles compute (305 + 126)^2 / 305^2 = 2.0x


def test_small_tiles_warn_once_naming_an_efficient_size(caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_overhead_warned", set())
    net = build_network({**TINY_NET, "num_block": 5}).eval()  # receptive radius 3 + 12 * 5 = 63, as LKDN-S
    up = Upscaler(net, device="cpu", optimize=False, tile=32)
    lr = torch.rand(1, 3, 128, 128)
    with caplog.at_level(logging.WARNING, logger="lkdn.images"):
        up(lr)
        up(lr)
        up(lr[..., :64, :64], tile=64)  # one tile: nothing to warn about
    warnings = [r.getMessage() for r in caplog.records if "pixels of context: the network computes" in r.getMessage()]
    assert warnings == ["tile 32 with 63 pixels of context: the network computes 12.0x the pixels of this 128x128 "
                        "input (slow); tiles of 305 or more compute at most 2x, and no tiling computes 1x, where "
                        "memory allows"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lkdn.images"):
        up(torch.rand(1, 3, 320, 320), tile=305)  # 305-pixel tiles: 1.5x, no warning
    assert not [r for r in caplog.records if "pixels of context: the network computes" in r.getMessage()]


# ------------------------------------------------------------------ 3. tensors whose dtype does not fit


def test_complex_weights_with_nan_real_parts_are_refused(tmp_path: Path, state) -> None:
    key = "fea_conv.pw.weight"
    bad = {**state, key: torch.complex(torch.full_like(state[key], float("nan")), torch.ones_like(state[key]))}
    path = save_file({"params": bad}, tmp_path / "complex_nan.pth")
    with pytest.raises(CheckpointError, match=rf"complex_nan\.pth: refused: 1 tensor\(s\) hold NaN or infinity \({key}\)"):
        load_state_dict(path)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int32, torch.bool])
def test_weights_of_a_dtype_that_does_not_fit_are_refused_naming_key_and_dtype(tmp_path: Path, state, dtype,
                                                                               data, capsys) -> None:
    key = "B1.c1_r.pw.weight"
    bad = {**state, key: state[key].to(dtype)}
    path = save_file({"params": bad}, tmp_path / "typed.pth")
    name = str(dtype).removeprefix("torch.")
    expected = (f"typed.pth: refused: 1 tensor(s) of a type that does not fit the network's floating-point "
                f"parameters: {key} ({name})")
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        load_network(build_network(TINY_NET), path)
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        Upscaler.from_config(options_file(tmp_path, data, path), device="cpu")
    code = script("reparameterize").main(["-opt", str(options_file(tmp_path, data, path)), "--input", str(path),
                                          "--output", str(tmp_path / "deploy.pth")])
    assert code == 2 and expected in one_line(capsys.readouterr().err)
    assert not (tmp_path / "deploy.pth").exists()
    st = save_network_file(bad, tmp_path / "typed.safetensors", TINY_NET)
    with pytest.raises(CheckpointError, match=re.escape(f"typed.safetensors: refused: 1 tensor(s) of a type that does "
                                                        f"not fit the network's floating-point parameters: {key} ({name})")):
        network_from_file(st)


# ------------------------------------------------------------------ 4. finite weights, non-finite outputs


def test_weights_that_overflow_give_no_psnr_and_no_image(tmp_path: Path, data, state, capsys) -> None:
    huge = save_file({"params": {k: v * 1e30 if v.is_floating_point() else v for k, v in state.items()}},
                     tmp_path / "huge.pth")
    yml = options_file(tmp_path, data, huge)
    with pytest.raises(NonFiniteOutputError, match=r"LKDN gave \d+ of \d+ output values as NaN or infinity "
                                                   r"\(on a 1x3x32x32 output\)"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path)])
    results = tmp_path / "results" / "hostile"
    assert not (results / "metrics.json").exists()
    assert not list(results.rglob("*.png"))
    out = tmp_path / "out"
    code = script("inference").main(["-opt", str(yml), "--input", str(data[1]), "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and f"0 of 4 image(s) written to {out}" in captured.out
    images = sorted(data[1].glob("*.png"))
    assert len(images) == 4 and all(f"{image}: LKDN gave" in captured.err for image in images), captured.err
    assert not list(out.glob("*.png"))


def test_validation_during_training_refuses_non_finite_outputs(state) -> None:
    from lkdn.models.sr_model import SRModel

    model = SRModel.__new__(SRModel)  # only what test() needs
    net = build_network(TINY_NET)
    net.load_state_dict({k: v * 1e30 if v.is_floating_point() else v for k, v in state.items()})
    model.ema, model.net_g, model.device = None, net, torch.device("cpu")
    with pytest.raises(NonFiniteOutputError, match="LKDN gave"):
        model.test(torch.rand(1, 3, 16, 16))


# ------------------------------------------------------------------ 5. ambiguous keys


def test_a_state_dict_with_module_x_and_x_is_refused_naming_both(tmp_path: Path, state) -> None:
    key = "fea_conv.pw.weight"
    path = save_file({"params": {**state, f"module.{key}": state[key] + 1}}, tmp_path / "both.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"both.pth: ambiguous keys '{key}' and 'module.{key}' name "
                                                        f"the same parameter '{key}'")):
        load_state_dict(path)


# ------------------------------------------------------------------ 6, 7. tensors that are not plain dense data


def test_an_expanded_view_is_refused_before_its_values_are_read(tmp_path: Path, state) -> None:
    path = tmp_path / "expanded.pth"
    torch.save({"params": {**state, "x": torch.zeros(1).expand(2**45)}}, path)  # 2 KB claiming 140 TB
    assert path.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match=re.escape("expanded.pth: tensor 'x' has shape (35184372088832,) "
                                                        "(35184372088832 elements) over a storage of 1 element(s)")):
        load_state_dict(path)


def test_a_sparse_tensor_is_refused(tmp_path: Path, state) -> None:
    path = tmp_path / "sparse.pth"
    torch.save({"params": {**state, "x": torch.eye(3).to_sparse()}}, path)
    with pytest.raises(CheckpointError, match=r"sparse\.pth: tensor 'x' is sparse_coo, not dense"):
        load_state_dict(path)


# ------------------------------------------------------------------ 8. integers of thousands of digits


def test_a_4000_digit_integer_in_metadata_is_one_line(tmp_path: Path, state) -> None:
    text = json.dumps(TINY_NET).replace('"num_block": 1', '"num_block": ' + "9" * 4000)
    path = described(tmp_path / "digits.safetensors", state, text)
    with pytest.raises(CheckpointError) as err:
        Upscaler.from_checkpoint(path, device="cpu")
    assert str(err.value) == (f"{path}: metadata network_g.num_block: an integer of about 4000 digits is out "
                                        "of range (network options are integers from -2147483647 to 2147483647)")
    path = described(tmp_path / "scale.safetensors", state, json.dumps(TINY_NET), scale="9" * 4000)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: metadata 'scale' must be an integer from 1 to "
                                                        "999999999, got '99999999999999999999... (4000 characters)'")):
        network_from_file(path)


# ------------------------------------------------------------------ 9. sizes that can never fit


def test_network_options_that_cannot_fit_are_refused_naming_the_key(tmp_path: Path, data, weights) -> None:
    yml = options_file(tmp_path, data, weights, network={**TINY_NET, "num_feat": 10_000_000})
    with pytest.raises(NetworkTooLargeError, match=r"hostile\.yml: network_g \(LKDN\): the options need more than [\d.]+ GiB of "
                                                   r"parameters \(this machine's memory\); check num_feat=10000000"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path)])
    yml = options_file(tmp_path, data, weights, network={**TINY_NET, "num_feat": -42})
    with pytest.raises(SchemaError, match=r"hostile\.yml:\d+: network_g\.num_feat: must be positive \(a count of "
                                          r"channels or blocks\), got -42"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path)])


def test_export_and_profile_sizes_that_cannot_fit_are_refused(tmp_path: Path, data, weights, capsys) -> None:
    yml = options_file(tmp_path, data, weights)
    code = script("export_onnx").main(["-opt", str(yml), "--output", str(tmp_path / "x.onnx"), "--static",
                                       "--size", "100000", "100000"])
    err = one_line(capsys.readouterr().err)
    assert code == 1 and re.search(r"--size 100000 100000: a 1x3x100000x100000 input needs [\d.]+ GiB for its largest "
                                   r"activation alone, more than the [\d.]+ GiB of cpu memory here", err), err
    assert not (tmp_path / "x.onnx").exists()
    code = script("profile_model").main(["-opt", str(yml), "--output-size", "100000x100000", "--device", "cpu"])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and "--output-size 100000x100000: a 1x3x50000x50000 input needs" in err, err
    for threads in ("0", "-2"):
        code = script("profile_model").main(["-opt", str(yml), "--threads", threads, "--no-timing", "--no-flops"])
        assert code == 2 and one_line(capsys.readouterr().err) == f"error: --threads must be at least 1, got {threads}"


def test_spandrel_shapes_implying_20000_channels_are_refused(tmp_path: Path, state) -> None:
    lkdn_spandrel = pytest.importorskip("lkdn.integrations.spandrel")
    path = save_file({**state, "fea_conv.pw.weight": torch.zeros(20_000, 3, 1, 1)}, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wide\.pth: .*the options build more than 249984 parameter values \(4x "
                                              r"the 40 tensors of 62496 values the state dict holds\).*num_feat=20000"):
        lkdn_spandrel.load_model(path)


# ------------------------------------------------------------------ 10. numbers beyond their range


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("scale", "9" * 5000, "scale: an integer of 5000 digits; expected an integer from 1 to 16"),
    ("manual_seed", str(2**70), "manual_seed: must be an integer from 0 to 18446744073709551615, "
                                "got 1180591620717411303424"),
    ("scale", "17", "scale: must be an integer from 1 to 16, got 17"),
])
def test_numbers_beyond_their_range_name_file_key_and_range(tmp_path: Path, data, weights, key, value,
                                                            expected) -> None:
    yml = options_file(tmp_path, data, weights)
    text = yml.read_text()
    text = re.sub(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M) if f"\n{key}:" in text else \
        text + f"{key}: {value}\n"
    yml.write_text(text)
    with pytest.raises(SchemaError) as err:
        load_options(yml)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith(f"{key}:"))
    assert f"{yml}:{line}: {expected}" in str(err.value)
    assert len(str(err.value)) < 400


def test_a_5000_digit_override_names_the_key(tmp_path: Path, data, weights) -> None:
    with pytest.raises(OptionsError, match=r"^--force-yml scale=<5000 characters>: Exceeds the limit \(4300 digits\)"):
        load_options(options_file(tmp_path, data, weights), overrides=["scale=" + "9" * 5000])


def test_an_option_torch_cannot_unpack_is_one_line_naming_it() -> None:
    with pytest.raises(ValueError) as err:
        build_network({**TINY_NET, "num_feat": 2**70})
    assert "\n" not in str(err.value) and "frame #" not in str(err.value)
    assert str(err.value).startswith("network_g (LKDN): empty(): argument 'size' failed to unpack")
    assert str(err.value).endswith("(options: num_feat=an integer of about 22 digits, num_atten=8, num_block=1, "
                                   "upscale=2, num_in=1)")


def test_a_torch_error_that_names_no_option_gets_the_options() -> None:
    with pytest.raises(ValueError) as err:
        build_network({**TINY_NET, "upscale": "2"})
    assert str(err.value) == ("network_g (LKDN): unsupported operand type(s) for ** or pow(): 'str' and 'int' (options: "
                              "num_feat=8, num_atten=8, num_block=1, upscale='2', num_in=1)")


@pytest.mark.parametrize("key", ["num_feat", "upscale", "num_in_ch", "num_block"])
@pytest.mark.parametrize("value", [0, -42])
def test_counts_below_one_are_refused_before_building(key: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"^network_g \(LKDN\): {key}: expected a positive integer, got {value}$"):
        build_network({**TINY_NET, key: value})


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: Upscaler("LKDN"), TypeError, "net must be a network (torch.nn.Module), got str 'LKDN'"),
    (lambda: Upscaler(build_network(TINY_NET))(torch.rand(1, 3, 20, 20), tile=-3), ValueError,
     "tile must be a positive number of LR pixels (0 or None: no tiling), got -3"),
    (lambda: Upscaler(build_network(TINY_NET))(torch.rand(1, 3, 0, 8)), ValueError,
     "got an empty one of shape (1, 3, 0, 8)"),
    (lambda: Upscaler(build_network(TINY_NET))(torch.full((1, 3, 8, 8), float("nan"))), ValueError,
     "the input holds 192 NaN or infinite value(s) of 192; expected values in [0, 1]"),
    (lambda: Upscaler(build_network(TINY_NET))(torch.rand(1, 5, 8, 8)), ValueError,
     "an input of shape (1, 5, 8, 8) does not fit LKDN: Given groups=1, weight of size [8, 3, 1, 1], expected "
     "input[1, 5, 8, 8] to have 3 channels, but got 5 channels instead"),
    (lambda: Upscaler(build_network(TINY_NET)).upscale_image([[0]]), TypeError,
     "expected a numpy image (H,W or H,W,C), got list"),
])
def test_upscaler_refuses_what_it_cannot_run(call, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call()
