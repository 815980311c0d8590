"""Hostile inputs: no command writes over one of its inputs, outside its results folder, or one result over another.

Each test runs the entry point in this process (its ``main``) on a tiny network and checks both
the one-line error (naming the file or key at fault) and that every input is byte for byte as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import yaml
from reliability_common import make_images, one_line, script, test_set_options, tiny_weights, write_yaml

from lkdn import test as test_entry
from lkdn.options import SchemaError
from lkdn.utils import OutputIsInputError, refuse_overwriting_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("outputs") / "data")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("w"))


run_options = functools.partial(test_set_options, name="outputs")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the shared check


def test_the_same_file_by_any_name_is_an_input(tmp_path: Path) -> None:
    source = tmp_path / "in.yml"
    source.write_text("x")
    (tmp_path / "link.yml").symlink_to(source)
    os.link(source, tmp_path / "hard.yml")
    for name in ("in.yml", "link.yml", "hard.yml", "sub/../in.yml"):
        with pytest.raises(OutputIsInputError, match=rf"--output .*{name} is the -opt( \(.*in\.yml\))?: .*overwrite"):
            refuse_overwriting_inputs({"--output": tmp_path / name}, {"--weights": None, "-opt": source})
    (tmp_path / "sub").mkdir()
    refuse_overwriting_inputs({"--output": tmp_path / "new.yml", "--output-opt": None}, {"-opt": source})  # no error


# ------------------------------------------------------------------ scripts/inference.py


def test_inference_refuses_to_write_into_its_input_folder(tmp_path: Path, data, weights, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes((data[1] / name).read_bytes())
    before = snapshot(photos)
    yml = run_options(tmp_path, data, weights)
    inference = script("inference")
    assert inference.main(["-opt", str(yml), "--input", str(photos), "--output", str(photos)]) == 2
    assert f"--output folder {photos} is the --input" in one_line(capsys.readouterr().err)
    # one image, the result written beside it: <photos>/a.png is the input itself
    assert inference.main(["-opt", str(yml), "--input", str(photos / "a.png"), "--output", str(photos)]) == 2
    assert f"result a.png {photos / 'a.png'} is the input image" in one_line(capsys.readouterr().err)
    assert snapshot(photos) == before
    # a sub-folder of the inputs is another folder: written, inputs untouched
    assert inference.main(["-opt", str(yml), "--input", str(photos), "--output", str(photos / "x2")]) == 0
    assert "2 of 2 image(s) written" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(photos).items() if not k.startswith("x2")} == before
    assert sorted(p.name for p in (photos / "x2").iterdir()) == ["a.png", "b.png"]


def test_inference_refuses_two_inputs_of_one_stem(tmp_path: Path, data, weights, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "x.png").write_bytes((data[1] / "a.png").read_bytes())
    (photos / "x.bmp").write_bytes((data[1] / "b.png").read_bytes())
    out = tmp_path / "out"
    code = script("inference").main(["-opt", str(run_options(tmp_path, data, weights)), "--input", str(photos),
                                     "--output", str(out)])
    err = one_line(capsys.readouterr().err)
    assert code == 2
    assert f"{photos / 'x.bmp'} and {photos / 'x.png'} would both be written as {out / 'x.png'}; rename one" in err
    assert not out.exists()


# ------------------------------------------------------------------ val.suffix of the test options


@pytest.mark.parametrize("suffix", ["../../../../OUTSIDE", "../../../x", "/tmp/lkdn_abs_suffix", "sub/x", ".."])
def test_a_suffix_is_one_safe_name(tmp_path: Path, data, weights, suffix: str) -> None:
    yml = run_options(tmp_path, data, weights, val={"suffix": suffix})
    with pytest.raises(SchemaError, match=rf"val\.suffix: '{suffix}' is not a valid name: use a single folder name"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path / "root")])
    assert not (tmp_path / "root").exists() and not Path("/tmp/lkdn_abs_suffix").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs.yml"]


def test_a_safe_suffix_names_every_image(tmp_path: Path, data, weights) -> None:
    test_entry.score(["-opt", str(run_options(tmp_path, data, weights, val={"suffix": "x2_sr"})), "--root", str(tmp_path)])
    written = tmp_path / "results" / "outputs" / "visualization" / "set"
    assert sorted(p.name for p in written.iterdir()) == [f"{n}_x2_sr.png" for n in "abcd"]


# ------------------------------------------------------------------ exports and checkpoint scripts


@pytest.mark.parametrize("which", ["-opt", "--weights", "path.pretrain_network_g", "--check-image"])
def test_an_export_never_writes_over_an_input(tmp_path: Path, data, weights, capsys, which: str) -> None:
    yml = run_options(tmp_path, data, weights)
    own = tmp_path / "own.pth"
    own.write_bytes(weights.read_bytes())
    image = tmp_path / "check.png"
    image.write_bytes((data[1] / "a.png").read_bytes())
    if which == "path.pretrain_network_g":
        opt = yaml.safe_load(yml.read_text())
        opt["path"]["pretrain_network_g"] = str(own)
        yml = write_yaml(tmp_path, opt)
    victim = {"-opt": yml, "--weights": own, "path.pretrain_network_g": own, "--check-image": image}[which]
    before = snapshot(tmp_path)
    argv = ["-opt", str(yml), "--output", str(victim), "--check-image", str(image)]
    argv += ["--weights", str(own)] if which == "--weights" else []
    assert script("export_onnx").main(argv) == 1
    assert f"--output {victim} is the {which}: writing it would overwrite an input file" in one_line(
        capsys.readouterr().err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["export_openvino", "export_ncnn"])
def test_the_weights_beside_an_ir_are_never_an_input(tmp_path: Path, data, weights, capsys, name: str) -> None:
    own = tmp_path / "own.bin"  # a checkpoint under the name an IR's weights would take
    own.write_bytes(weights.read_bytes())
    suffix = ".xml" if name == "export_openvino" else ".param"
    assert script(name).main(["-opt", str(run_options(tmp_path, data, weights)), "--weights", str(own),
                              "--output", str(own.with_suffix(suffix))]) == 1
    assert f"the .bin file of --output {own} is the --weights" in one_line(capsys.readouterr().err)
    assert own.read_bytes() == weights.read_bytes() and not own.with_suffix(suffix).exists()


@pytest.mark.parametrize(("name", "other", "owner"), [("export_openvino", ".param", "ncnn graph"),
                                                      ("export_ncnn", ".xml", "OpenVINO IR")])
def test_an_ir_never_takes_the_weights_of_the_other_format(tmp_path: Path, data, weights, capsys, name: str,
                                                           other: str, owner: str) -> None:
    (tmp_path / f"own_x2{other}").write_text("graph of the first export")
    (tmp_path / "own_x2.bin").write_bytes(b"weights of the first export")
    before = snapshot(tmp_path)
    output = tmp_path / ("own_x2.xml" if other == ".param" else "own_x2.param")
    assert script(name).main(["-opt", str(run_options(tmp_path, data, weights)), "--output", str(output)]) == 1
    err = one_line(capsys.readouterr().err)
    assert f"{tmp_path / 'own_x2.bin'} is the weights file of the {owner} {tmp_path / f'own_x2{other}'}" in err
    assert "choose another output name" in err
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "outputs.yml"} == before


def test_convert_never_writes_over_its_options(tmp_path: Path, data, weights, capsys) -> None:
    yml = run_options(tmp_path, data, weights)
    before = yml.read_bytes()
    code = script("convert_checkpoint").main(["--input", str(weights), "--output", str(yml), "-opt", str(yml)])
    assert code == 1 and f"--output {yml} is the -opt" in one_line(capsys.readouterr().err)
    assert yml.read_bytes() == before


def test_figures_never_replace_what_they_show(tmp_path: Path, data, capsys) -> None:
    hr, lr = data
    before = snapshot(hr.parent)
    code = script("compare_images").main(["--hr", str(hr), "--lr", str(lr), "--images", "a", "--scale", "2",
                                          "--output", str(hr / "a.png")])
    assert code == 2 and f"--output {hr / 'a.png'} is the --hr image" in one_line(capsys.readouterr().err)
    assert snapshot(hr.parent) == before
    run = tmp_path / "experiments" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"iter": 10, "psnr": 30.0}\n')
    code = script("plot_curves").main([str(run), "--output", str(run / "metrics.jsonl")])
    assert code == 2 and f"--output {run / 'metrics.jsonl'} is the log metrics.jsonl" in one_line(capsys.readouterr().err)
    assert (run / "metrics.jsonl").read_text() == '{"iter": 10, "psnr": 30.0}\n'
