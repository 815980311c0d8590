"""lkdn.images (tiles, self-ensemble), lkdn.images (numpy images) and scripts/inference.py on users' images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, shared_file

from lkdn import build_network
from lkdn.evaluate import super_resolve
from lkdn.images import minimum_tile, run_network, tile_context, tiled_forward, upscale_image, write_image
from lkdn.loading import load_network_from_options
from lkdn.options import SchemaError, load_options

TINY = {"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2}


def _load_script():
    return load_script("scripts/inference.py")


inference_script = _load_script()


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(opt: dict = TINY) -> torch.nn.Module:
    net = build_network(opt).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0, 0.3)  # large enough that tile borders would show
    return net


# --- library: tiling ------------------------------------------------------------------------


def test_receptive_radius_is_exact_for_lkdn() -> None:
    """The analytic radius 3 + 12 * num_block equals the extent of the measured input gradient."""
    opt = {**TINY, "num_block": 2}
    net = tiny_net(opt)
    context = tile_context(net)
    radius = context.pad
    assert radius == 3 + 12 * 2 and context.exact
    size = 2 * radius + 11
    x = torch.rand(1, 3, size, size, requires_grad=True)
    centre = size // 2
    net(x)[0, :, centre * 2, centre * 2].sum().backward()
    rows, cols = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (centre - radius, centre + radius)
    assert (cols.min().item(), cols.max().item()) == (centre - radius, centre + radius)
    assert tile_context(build_network({"type": "LKDN"})).pad == 99  # LKDN: 8 blocks
    assert tile_context(build_network({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"})).pad == 64


def test_tiled_equals_untiled_when_pad_covers_the_receptive_field() -> None:
    net = tiny_net()
    x = torch.rand(2, 3, 41, 37)
    with torch.no_grad():
        full = net(x)
    tiled = run_network(net, x, tile=16)  # default pad: the receptive radius, 15
    assert tiled.shape == full.shape == (2, 3, 82, 74)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)
    too_small = run_network(net, x, tile=16, tile_pad=2)
    assert (too_small - full).abs().max() > 1e-3  # the pad matters
    assert torch.equal(run_network(net, x, tile=64), full)  # one tile: the plain forward


def test_tiled_forward_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="tile must be a positive"):
        tiled_forward(torch.nn.Identity(), torch.rand(1, 3, 8, 8), tile=0, tile_pad=1)
    resize = lambda x: torch.nn.functional.interpolate(x, scale_factor=1.5)  # noqa: E731
    with pytest.raises(ValueError, match="integer scale"):
        tiled_forward(resize, torch.rand(1, 3, 8, 8), tile=4, tile_pad=0)


def test_tile_options_are_validated_with_the_options(tmp_path: Path) -> None:
    path = tmp_path / "t.yml"
    path.write_text("name: t\nscale: 2\nnetwork_g: {type: LKDN, upscale: 2}\nval:\n  tile: {size: 128, pad: -1}\n")
    with pytest.raises(SchemaError, match=r"val\.tile\.pad: must be non-negative, got -1"):
        load_options(path)
    path.write_text("name: t\nscale: 2\nnetwork_g: {type: LKDN, upscale: 2}\nval:\n  tile: {size: 128, padding: 4}\n")
    with pytest.raises(SchemaError, match=r"val\.tile\.padding: unknown key; did you mean 'pad'"):
        load_options(path)


def test_tiny_tiles_are_raised_to_the_minimum(caplog: pytest.LogCaptureFixture) -> None:
    """--tile 1 on an LKDN would run thousands of 199x199 tiles: it is raised, with a warning."""
    net = tiny_net()
    x = torch.rand(1, 3, 45, 64)
    with caplog.at_level("WARNING", logger="lkdn.images"):
        out = run_network(net, x, tile=1)
    assert minimum_tile(15) == 16 and "tile 1 is below the minimum 16 for 15 pixels of context; using 16" in caplog.text
    torch.testing.assert_close(out, run_network(net, x), atol=1e-5, rtol=0)
    assert minimum_tile(99) == 49  # LKDN x4


def test_non_local_networks_get_approximate_tiles() -> None:
    context = tile_context(build_network({"type": "RFDN"}))
    assert not context.exact and context.pad == 32 and "approximate" in context.describe()
    assert not tile_context(build_network({"type": "LKDN", "attention": "esa_cca"})).exact  # ESA/CCA: not local
    assert tile_context(build_network({"type": "LKDN", "attention": "none", "num_block": 2})).exact


# --- library: self-ensemble -----------------------------------------------------------------


def test_self_ensemble_is_the_mean_over_the_dihedral_group() -> None:
    net = tiny_net()
    x = torch.rand(1, 3, 13, 10)
    expected = torch.zeros(1, 3, 26, 20)
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):  # rotations and flipped rotations: the 8 elements, written differently
                inp = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                out = torch.rot90(net(inp), -k, dims=(-2, -1))
                expected += out.flip(-1) if flip else out
    torch.testing.assert_close(run_network(net, x, self_ensemble=True), expected / 8, atol=1e-6, rtol=0)
    tiled = run_network(net, x, self_ensemble=True, tile=5)
    torch.testing.assert_close(tiled, expected / 8, atol=1e-5, rtol=0)


def test_self_ensemble_of_an_equivariant_function_is_the_function() -> None:
    upsample = lambda x: x.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1)  # noqa: E731
    x = torch.rand(1, 3, 7, 9)
    torch.testing.assert_close(run_network(upsample, x, self_ensemble=True), upsample(x))


# --- library: numpy images ------------------------------------------------------------------


def test_upscale_image_kinds() -> None:
    tiny = tiny_net()

    def net(x: torch.Tensor) -> torch.Tensor:
        return run_network(tiny, x)

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    out = upscale_image(net, bgr)
    np.testing.assert_array_equal(out, super_resolve(tiny, bgr))  # same rounding as the test pipeline
    rgb_out = upscale_image(net, np.ascontiguousarray(bgr[..., ::-1]), bgr=False)
    np.testing.assert_array_equal(rgb_out, out[..., ::-1])
    grey = bgr[..., 0]
    grey_out = upscale_image(net, grey)
    assert grey_out.shape == (18, 22) and grey_out.dtype == np.uint8
    assert upscale_image(net, grey[..., None]).shape == (18, 22, 1)
    bgra = np.dstack([bgr, rng.integers(0, 256, (9, 11), dtype=np.uint8)])
    bgra_out = upscale_image(net, bgra)
    np.testing.assert_array_equal(bgra_out[..., :3], out)
    expected_alpha = np.clip(np.round(cv2.resize(bgra[..., 3] / np.float32(255), (22, 18), interpolation=cv2.INTER_CUBIC) * 255), 0, 255)
    np.testing.assert_array_equal(bgra_out[..., 3], expected_alpha.astype(np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        upscale_image(net, bgra, alpha="error")
    deep = bgr.astype(np.uint16) * 257
    deep_out = upscale_image(net, deep)
    assert deep_out.dtype == np.uint16
    assert np.abs(deep_out / 257.0 - out).max() <= 1.0
    with pytest.raises(ValueError, match="int32"):
        upscale_image(net, bgr.astype(np.int32))


def test_loading_needs_weights() -> None:
    with pytest.raises(ValueError, match="pretrain_network_g"):
        load_network_from_options({"network_g": TINY, "path": {}})


def test_images_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails halfway leaves the previous image intact and no temporary file."""
    target = tmp_path / "sr.png"
    good = np.full((8, 8, 3), 7, np.uint8)
    write_image(target, good)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        write_image(target, np.zeros((8, 8, 3), np.uint8))
    np.testing.assert_array_equal(cv2.imread(str(target)), good)
    assert [p.name for p in tmp_path.iterdir()] == ["sr.png"]


# --- scripts/inference.py -------------------------------------------------------------------


@pytest.fixture
def deploy_yaml(tmp_path: Path) -> Path:
    """A test YAML for the official LKDN-S deploy checkpoint (small and fast)."""
    weights = shared_file("pretrained", "LKDN", "LKDN-S_del_rep_x4.pth")
    text = (ROOT / "options" / "test" / "LKDN" / "test_LKDN-S_del_rep_x4.yml").read_text()
    text = text.replace("experiments/pretrained_models/LKDN/LKDN-S_del_rep_x4.pth", str(weights))
    text = text.replace("num_gpu: auto", "num_gpu: 0")
    path = tmp_path / "deploy.yml"
    path.write_text(text)
    return path


def test_script_writes_every_kind_of_image(tmp_path: Path, deploy_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    colour = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(src / "colour.png"), colour)
    cv2.imwrite(str(src / "grey.png"), colour[..., 1])
    cv2.imwrite(str(src / "alpha.png"), np.dstack([colour, np.full((12, 10), 200, np.uint8)]))
    cv2.imwrite(str(src / "deep.png"), colour.astype(np.uint16) * 257)
    (src / "broken.png").write_bytes(b"\x89PNG truncated")
    (src / "notes.txt").write_text("not an image: ignored")
    code = inference_script.main(["-opt", str(deploy_yaml), "--input", str(src), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1  # broken.png failed, the rest was written
    assert "broken.png" in captured.err and "4 of 5 image(s)" in captured.out
    read = lambda name: cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)  # noqa: E731
    net = load_network_from_options({"network_g": {"type": "LKDN_S"}, "path": {"pretrain_network_g": str(shared_file("pretrained", "LKDN", "LKDN-S_del_rep_x4.pth"))}})
    sr = super_resolve(net, colour)
    np.testing.assert_array_equal(read("colour.png"), sr)
    assert read("grey.png").shape == (48, 40)
    alpha = read("alpha.png")
    assert alpha.shape == (48, 40, 4)
    np.testing.assert_array_equal(alpha[..., :3], sr)
    assert (alpha[..., 3] == 200).all()
    deep = read("deep.png")
    assert deep.dtype == np.uint16 and deep.shape == (48, 40, 3)
    assert np.abs(deep / 257.0 - sr).max() <= 1.0
    assert not (tmp_path / "out" / "broken.png").exists()


def test_script_tiles_self_ensemble_and_refuses_alpha(tmp_path: Path, deploy_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (70, 66, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    base = ["-opt", str(deploy_yaml), "--input", str(tmp_path / "img.png")]
    assert inference_script.main([*base, "--output", str(tmp_path / "plain")]) == 0
    assert inference_script.main([*base, "--output", str(tmp_path / "tiled"), "--tile", "32"]) == 0  # 3x3 tiles
    plain = cv2.imread(str(tmp_path / "plain" / "img.png"))
    tiled = cv2.imread(str(tmp_path / "tiled" / "img.png"))
    assert np.abs(plain.astype(int) - tiled.astype(int)).max() <= 1  # exact up to float rounding at .5
    assert inference_script.main([*base, "--output", str(tmp_path / "se"), "--self-ensemble"]) == 0
    ensemble = cv2.imread(str(tmp_path / "se" / "img.png"))
    assert ensemble.shape == plain.shape and not np.array_equal(ensemble, plain)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([image, image[..., 0]]))
    code = inference_script.main(["-opt", str(deploy_yaml), "--input", str(tmp_path / "rgba.png"), "--output", str(tmp_path / "a"), "--alpha", "error"])
    assert code == 1
    assert "rgba.png" in capsys.readouterr().err


def test_script_bad_input_names_it(tmp_path: Path, deploy_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing_here"
    assert inference_script.main(["-opt", str(deploy_yaml), "--input", str(missing), "--output", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_image_pairs_match_hr_to_lr_by_template_in_hr_lr_order(tmp_path: Path) -> None:
    from lkdn.images import DataError, image_pairs

    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    pixel = np.zeros((4, 4, 3), np.uint8)
    for path in (hr_dir / "a.png", hr_dir / "b.png", lr_dir / "ax4.png", lr_dir / "b.png", lr_dir / "bx4.jpg"):
        cv2.imwrite(str(path), pixel)
    pairs = image_pairs(hr_dir, lr_dir, templates=("{}x4", "{}"))
    assert [(hr.name, lr.name) for hr, lr in pairs] == [("a.png", "ax4.png"), ("b.png", "bx4.jpg")]
    assert [lr.name for _, lr in image_pairs(hr_dir, lr_dir, templates=("{}", "{}x4"))] == ["ax4.png", "b.png"]
    with pytest.raises(DataError, match=r"LR: no LR image a\.\* for HR image .*a\.png"):
        image_pairs(hr_dir, lr_dir)
    with pytest.raises(DataError, match="image folder not found: .*missing"):
        image_pairs(hr_dir, tmp_path / "missing")
