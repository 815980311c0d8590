"""Hostile values, round 3: float images by their range, option values basicsr would trip on, the
small scripts' arguments, locks and archiving. Each test failed before its fix."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from reliability_common import METRICS, TINY_NET, make_images, script, test_set_options, tiny_weights, write_yaml

from lkdn import build_network
from lkdn.data.safe_dataset import DataError
from lkdn.images import read_image_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_images(tmp_path_factory.mktemp("round3") / "data")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("w"))


options_file = functools.partial(test_set_options, name="round3")


# ------------------------------------------------------------------ float images by their range


def _upscale_file(tmp_path: Path, data, weights, image: np.ndarray, suffix: str = ".tif") -> np.ndarray:
    source = tmp_path / "in" / f"photo{suffix}"
    source.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(source), image)
    code = script("inference").main(["-opt", str(options_file(tmp_path, data, weights)), "--input", str(source),
                                      "--output", str(tmp_path / "out")])
    assert code == 0
    return cv2.imread(str(tmp_path / "out" / "photo.png"), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("peak", [1.0, 255.0])
def test_a_float_tiff_is_upscaled_by_its_range(tmp_path: Path, data, weights, peak: float) -> None:
    photo = cv2.imread(str(data[1] / "a.png"))
    from_png = _upscale_file(tmp_path / "png", data, weights, photo, ".png")
    from_tiff = _upscale_file(tmp_path, data, weights, photo.astype(np.float32) * np.float32(peak / 255))
    assert from_png.dtype == np.uint8 and from_tiff.dtype == np.uint16  # a float image keeps its precision
    assert from_tiff.shape == from_png.shape
    # the same picture: within one 8-bit step of the 8-bit result (rounding of the 8-bit output)
    assert np.abs(from_tiff / 257.0 - from_png).max() <= 1.0
    assert from_tiff.mean() / 257.0 == pytest.approx(from_png.mean(), abs=0.5)


@pytest.mark.parametrize(("values", "expected"), [
    (np.nan, r"photo\.tif: 1 of 300 float pixel values are NaN or infinite"),
    (np.inf, r"photo\.tif: 1 of 300 float pixel values are NaN or infinite"),
    (-0.5, r"photo\.tif: float pixel values span \[-0\.5, 0\.\d+\]: expected \[0, 1\] or \[0, 255\]"),
    (1000.0, r"photo\.tif: float pixel values span \[0, 1000\]: expected \[0, 1\] or \[0, 255\]"),
])
def test_non_finite_or_out_of_range_float_pixels_are_refused_naming_the_file(
        tmp_path: Path, values: float, expected: str) -> None:
    image = np.random.default_rng(0).random((10, 10, 3)).astype(np.float32) * np.float32(0.9)
    image[0, 0] = 0
    image[3, 4, 1] = values
    path = tmp_path / "photo.tif"
    assert cv2.imwrite(str(path), image)
    for flags in (cv2.IMREAD_COLOR, cv2.IMREAD_UNCHANGED):  # training / test data, and scripts/inference.py
        with pytest.raises(DataError, match=expected):
            read_image_file(path, flags=flags)


def test_a_0_255_float_tiff_is_read_as_0_255_for_training(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, (6, 7, 3)).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tif"), image)
    np.testing.assert_array_equal(read_image_file(tmp_path / "f.tif"), image.astype(np.uint8))


# ------------------------------------------------------------------ option values basicsr trips on


@pytest.mark.parametrize(("change", "expected"), [
    ({"val": {"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": -2}}}},
     r"round3\.yml:\d+: val\.metrics\.psnr\.crop_border: must be non-negative, got -2"),
    ({"val": {"metrics": {"psnr": {"type": "calculate_lpips", "crop_border": 2}}}},
     r"val\.metrics\.psnr\.type: unknown metric 'calculate_lpips'.*\(known: calculate_psnr, calculate_ssim\)"),
    ({"datasets": {"test_1": {"filename_tmpl": "{0}{1}"}}},
     r"datasets\.test_1\.filename_tmpl: '\{0\}\{1\}' has 2 field\(s\) \['0', '1'\]: expected exactly one \{\}"),
    ({"datasets": {"test_1": {"filename_tmpl": "x4"}}},
     r"datasets\.test_1\.filename_tmpl: 'x4' has 0 field\(s\)"),
    ({"datasets": {"test_1": {"filename_tmpl": "{name}"}}},
     r"datasets\.test_1\.filename_tmpl: '\{name\}' has 1 field\(s\) \['name'\]"),
    ({"datasets": {"test_1": {"filename_tmpl": "{}x{"}}},
     r"datasets\.test_1\.filename_tmpl: '\{\}x\{' is not a valid template"),
])
def test_option_values_basicsr_trips_on_are_refused_by_the_schema(tmp_path: Path, data, weights, change: dict,
                                                                  expected: str) -> None:
    from lkdn import test as test_entry
    from lkdn.options import SchemaError

    opt = yaml.safe_load(options_file(tmp_path, data, weights).read_text())
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(opt[section].get(key), dict) and section == "datasets":
                opt[section][key].update(value)
            else:
                opt[section][key] = value
    with pytest.raises(SchemaError, match=expected):
        test_entry.score(["-opt", str(write_yaml(tmp_path, opt)), "--root", str(tmp_path)])
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("template", ["{}", "{}x2", "{0}_x2", "{:s}"])
def test_templates_of_one_field_are_accepted(template: str) -> None:
    from lkdn.options import validate_options

    validate_options({"name": "t", "scale": 2, "datasets": {"test_1": {"name": "s", "filename_tmpl": template}},
                      "val": {"metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 0}}}})


# ------------------------------------------------------------------ training data


def test_a_patch_larger_than_the_images_names_the_key_value_and_size(tmp_path: Path, data) -> None:
    from reliability_common import options, train

    opt = options(*data, name="bigpatch", datasets__train__gt_size=4096)
    with pytest.raises(DataError, match=r"datasets\.train\.gt_size: 4096 is larger than the image \(HR 32x32, LR 16x16 "
                                        r"at scale 2\); use gt_size <= 32") as err:
        train(write_yaml(tmp_path, opt), tmp_path)
    assert "LR/HR sizes do not fit" not in str(err.value) and "\n" not in str(err.value)


def test_a_patch_larger_than_the_images_of_a_multiscale_dataset(tmp_path: Path, data) -> None:
    from lkdn.data.multiscale_dataset import MultiScaleImageDataset
    from lkdn.data.safe_dataset import checked

    dataset = checked(MultiScaleImageDataset({"name": "train", "phase": "train", "dataroot_gt": str(data[0]),
                                              "scales": [2], "gt_size": 64}), where="datasets.train")
    with pytest.raises(DataError, match=r"datasets\.train\.gt_size: 64 is larger than the image .*a\.png \(32x32\); "
                                        r"use gt_size <= 32"):
        dataset.__getitems__([0]) if hasattr(dataset, "__getitems__") else dataset[0]


# ------------------------------------------------------------------ run locks say what they hold


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times and commands come from /proc")
@pytest.mark.parametrize(("content", "expected"), [
    ("", r"\.run\.lock: it is empty"),
    ("garbage\n", r"\.run\.lock: it holds 'garbage', not '<pid> <host> <time>'"),
    ("1 {host} 20260101_000000\n", r"\.run\.lock: it holds PID 1 of a process that is not training \("),
    ("999999999 {host} 20260101_000000\n", r"\.run\.lock: it is stale: process 999999999 no longer runs"),
])
def test_a_lock_that_holds_no_training_process_is_taken_over_saying_what_it_held(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, expected: str) -> None:
    import socket

    from lkdn.training.state import RunLock

    lock_file = tmp_path / ".run.lock"
    lock_file.write_text(content.format(host=socket.gethostname()))
    with caplog.at_level("WARNING", logger="lkdn.training.state"):
        lock = RunLock(tmp_path / "run").acquire()
    lock.release()
    assert any(__import__("re").search(expected, r.getMessage()) for r in caplog.records), caplog.text
    assert not lock_file.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times come from /proc")
def test_a_lock_of_a_live_python_process_is_refused_unless_its_pid_was_reused(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from lkdn.training.state import RunInUseError, RunLock, _process_start

    # argv[0] short, so the command line the message shows (its first 80 characters) is whole wherever the clone is
    other = subprocess.Popen(["python-sleeper", "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                             executable=sys.executable, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "ready\n"  # its command line is its own only once it runs (a busy machine)
        lock_file = tmp_path / ".run.lock"
        lock_file.write_text(f"{other.pid} {socket.gethostname()} 20260101_000000 {_process_start(other.pid)}\n")
        with pytest.raises(RunInUseError, match=rf"run is in use by training process {other.pid} \(.*python.*time\.sleep"):
            RunLock(tmp_path / "run").acquire()
        lock_file.write_text(f"{other.pid} {socket.gethostname()} 20260101_000000 1\n")  # an earlier process's id
        RunLock(tmp_path / "run").acquire().release()
        assert not lock_file.exists()
    finally:
        other.kill()
        other.wait()


# ------------------------------------------------------------------ lkdn/test.py checks its inputs first


def test_missing_data_and_missing_weights_are_said_together_before_anything_is_written(
        tmp_path: Path, data, weights, monkeypatch) -> None:
    import lkdn.zoo
    from lkdn import test as test_entry

    monkeypatch.setattr(lkdn.zoo, "download", lambda *a, **k: pytest.fail("downloads while the data is missing"))
    monkeypatch.setattr("lkdn.commands.test.find_checkpoint", lambda name: None)  # no copy anywhere
    published = tmp_path / "experiments" / "pretrained_models" / "LKDN" / "LKDN_x4.pth"
    yml = options_file(tmp_path, data, weights, path={"pretrain_network_g": str(published)})
    argv = ["-opt", str(yml), "--root", str(tmp_path), "--force_yml", f"datasets:test_1:dataroot_gt={tmp_path / 'Set5'}"]
    with pytest.raises(test_entry.DatasetMissingError) as err:
        test_entry.score(argv)
    message = str(err.value)
    assert f"datasets.test_1.dataroot_gt: folder not found: {tmp_path / 'Set5'}" in message
    assert f"path.pretrain_network_g: {published} is missing; get it with lkdn-download --names LKDN_x4" \
        in message
    assert "\n" not in message
    assert not (tmp_path / "results").exists()


def test_missing_weights_are_found_before_the_results_folder_is_made(tmp_path: Path, data, weights) -> None:
    from lkdn import test as test_entry
    from lkdn.checkpoint import CheckpointError

    yml = options_file(tmp_path, data, weights, path={"pretrain_network_g": str(tmp_path / "mine.pth")})
    with pytest.raises(CheckpointError, match=rf"path\.pretrain_network_g: checkpoint not found: {tmp_path}/mine\.pth"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path)])
    assert not (tmp_path / "results").exists()


def test_an_empty_test_folder_creates_no_results_folder(tmp_path: Path, data, weights) -> None:
    from lkdn import test as test_entry

    (tmp_path / "empty").mkdir()
    yml = options_file(tmp_path, data, weights)
    with pytest.raises(DataError, match="no images found"):
        test_entry.score(["-opt", str(yml), "--root", str(tmp_path), "--force_yml",
                         f"datasets:test_1:dataroot_gt={tmp_path / 'empty'}", f"datasets:test_1:dataroot_lq={tmp_path / 'empty'}"])
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ small scripts check before working


@pytest.mark.parametrize(("change", "extra", "expected"), [
    ({"val": {"metrics": {"psnr": METRICS["psnr"]}}}, [],
     r"round3\.yml: val\.metrics has no ssim \(has: psnr\); the comparison table needs psnr and ssim"),
    ({}, ["--runs", "0"], r"--runs must be at least 1, got 0"),
    ({}, ["--output-size", "1280x"], r"expected a size WIDTHxHEIGHT such as 1280x720, got '1280x'"),
    ({}, ["--output-size", "1281x720"], r"output size 1281x720 is not a multiple of the scale 2"),
    ({}, ["--readme", "{tmp}/README.md"], r"--readme .*README\.md: no <!-- comparison:start -->"),
])
def test_compare_models_checks_arguments_and_options_before_any_work(
        tmp_path: Path, data, weights, capsys, monkeypatch, change: dict, extra: list[str], expected: str) -> None:
    compare_models = script("compare_models")
    monkeypatch.setattr(compare_models, "run_json", lambda args: pytest.fail(f"ran {args[0]} before checking"))
    metrics = {"psnr": METRICS["psnr"], "ssim": {**METRICS["psnr"], "type": "calculate_ssim"}}
    yml = options_file(tmp_path, data, weights, val={"save_img": False, "metrics": metrics, **change.get("val", {})})
    (tmp_path / "README.md").write_text("no markers\n")
    argv = ["-opt", str(yml), *[a.format(tmp=tmp_path) for a in extra], "--workdir", str(tmp_path / "work")]
    assert compare_models.main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(expected, err), err
    assert err.count("\n") == 1 and not (tmp_path / "work").exists()


# ------------------------------------------------------------------ the demo says what happened


@pytest.mark.parametrize(("gain", "expected"), [
    (-2.864, "trained LKDN-S is 2.86 dB below bicubic on the held-out photographs"),
    (0.412, "trained LKDN-S beats bicubic on the held-out photographs by 0.41 dB"),
    (-0.001, "trained LKDN-S is level with bicubic on the held-out photographs"),
])
def test_the_demo_verdict_is_plain(gain: float, expected: str) -> None:
    said = script("demo").verdict(gain)
    assert said.startswith(expected)
    assert "NOT" not in said and "by -" not in said


def test_the_demo_workdir_that_is_a_file_is_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "taken").write_text("a file\n")
    for workdir in (tmp_path / "taken", tmp_path / "taken" / "below"):
        assert script("demo").main(["--workdir", str(workdir)]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: --workdir {workdir}: {tmp_path / 'taken'} is a file, not a folder; give a folder (it is "
                       "created when absent)\n")


def _comparison(tmp_path: Path, data, sr_of) -> tuple[dict, list[str]]:
    import matplotlib.pyplot as plt

    compare_images = script("compare_images")
    hr_dir, lr_dir = data
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir(parents=True)
    for name in ("a", "b"):
        hr = cv2.imread(str(hr_dir / f"{name}.png"))
        cv2.imwrite(str(sr_dir / f"{name}_x.png"), sr_of(hr, cv2.imread(str(lr_dir / f"{name}.png"))))
    gaps, labels = [], []
    real_savefig = plt.Figure.savefig

    def savefig(fig, *args, **kwargs):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        axes = np.array(fig.axes).reshape(2, 3)
        for col in range(3):  # how far the second row's titles stay below the first row's images (pixels)
            gaps.append(axes[0][col].get_window_extent(renderer).y0 - axes[1][col].title.get_window_extent(renderer).y1)
        labels.extend(axes[row][0].get_ylabel() for row in range(2))
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = savefig
    try:
        scores = compare_images.compare_images(hr_dir=hr_dir, lr_dir=lr_dir, sr_dirs={"Net": sr_dir}, stems=["a", "b"],
                                               scale=2, output=tmp_path / "c.png", crop=12, pick="gain")
    finally:
        plt.Figure.savefig = real_savefig
    assert len(gaps) == 3 and min(gaps) > 0, gaps
    return scores, labels


def test_the_comparison_says_when_the_network_is_below_bicubic_everywhere(tmp_path: Path, data) -> None:
    nearest = lambda hr, lr: cv2.resize(lr, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)  # noqa: E731
    scores, labels = _comparison(tmp_path / "worse", data, nearest)
    for label, stem in zip(labels, ("a", "b"), strict=True):
        gain = scores[stem]["Net"]["crop_psnr"] - scores[stem]["Bicubic"]["crop_psnr"]
        assert gain < 0 and "largest-gain" not in label
        assert label == f"{stem}\nNet below bicubic everywhere:\nleast-loss crop ({gain:+.2f} dB)"
    _, labels = _comparison(tmp_path / "better", data, lambda hr, lr: hr)
    assert all(label.startswith(f"{stem}\nlargest-gain crop (+") for label, stem in zip(labels, "ab", strict=True))


def test_the_psnr_axis_of_the_curves_is_in_db(tmp_path: Path) -> None:
    import json

    import matplotlib.pyplot as plt

    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"iter": i, "l_pix": 1 / i}) + "\n" for i in (1, 2)))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iter": 2, "dataset": "v", "psnr": 30.0}) + "\n")
    seen = []
    real_savefig = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, *a, **k: (seen.append([ax.get_ylabel() for ax in fig.axes]), real_savefig(fig, *a, **k))
    try:
        script("plot_curves").plot_curves([tmp_path], tmp_path / "c.png", metric="psnr", dataset=None, window=1,
                                          references={"bicubic": 31.0})
    finally:
        plt.Figure.savefig = real_savefig
    assert seen == [["loss", "PSNR (dB)"]]


def test_the_fold_count_is_logged_once_and_not_when_nothing_folds(caplog: pytest.LogCaptureFixture) -> None:
    from lkdn.loading import deploy_form
    from lkdn.reparam import verify_reparameterization

    foldable = {**TINY_NET, "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "type": "LKDN_S"}
    plain = {**TINY_NET, "num_in": 1}
    for network_opt, expected in ((foldable, 1), (plain, 0)):
        model = build_network(network_opt).eval()
        caplog.clear()
        with caplog.at_level("INFO", logger="lkdn.reparam"):
            folded, _ = deploy_form(model, network_opt, fold_num_in=False)
            assert verify_reparameterization(model, folded, input_shape=(1, 3, 9, 11)).ok
        said = [r.getMessage() for r in caplog.records if "re-parameterized" in r.getMessage()]
        assert len(said) == expected, said
        assert all(" 0 module" not in line for line in said)


# ------------------------------------------------------------------ a failed start leaves the run folder alone


def test_a_failed_restart_archives_nothing_and_the_log_keeps_the_set_up(tmp_path: Path, data) -> None:
    from reliability_common import experiment, options, train

    opt = options(*data, name="restart_run", train__total_iter=2, logger__save_checkpoint_freq=2)
    assert train(write_yaml(tmp_path, opt), tmp_path) == 0
    run = experiment(tmp_path, "restart_run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    (log_file,) = run.glob("train_*.log")
    text = log_file.read_text()
    assert "Training statistics: 4 images" in text and "Options (" in text  # the set-up's lines reach the file
    assert "[restart_run][epoch:" in text  # the whole run name, not its first five characters
    for change in ({"datasets__train__gt_size": 4096}, {"datasets__train__dataroot_lq": str(tmp_path / "none")}):
        with pytest.raises(DataError):
            train(write_yaml(tmp_path, options(*data, name="restart_run", train__total_iter=2, **change)), tmp_path)
    assert [p.name for p in (tmp_path / "experiments").iterdir() if "archived" in p.name] == []
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert not (tmp_path / "experiments" / ".restart_run.lock").exists()


def test_download_list_says_where_a_missing_checkpoint_would_go(tmp_path: Path, monkeypatch, capsys) -> None:
    download = script("download")
    monkeypatch.setattr(download, "find_checkpoint", lambda name: None)
    assert download.main(["--list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"not here; --names LKDN_x4 downloads it to {tmp_path / 'LKDN' / 'LKDN_x4.pth'}" in out
    assert out.count("not here; --names ") == len(download.CHECKPOINTS)


def test_the_activations_column_says_its_input_size() -> None:
    from lkdn.profiling import markdown_table

    header = markdown_table([], lr_size=(180, 320), scale=4).splitlines()[0]
    assert "| Multi-Adds (G, LR 320x180, 1280x720 output) | activations (M, LR 320x180) |" in header


def test_the_own_images_dataset_reads_float_tiffs_by_their_range(tmp_path: Path) -> None:
    from lkdn.data.multiscale_dataset import MultiScaleImageDataset

    photo = np.random.default_rng(2).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    for folder, image in (("png", photo), ("unit", photo.astype(np.float32) / 255), ("nan", np.full((16, 16, 3), np.nan,
                                                                                                    np.float32))):
        (tmp_path / folder).mkdir()
        assert cv2.imwrite(str(tmp_path / folder / ("a.png" if folder == "png" else "a.tif")), image)
    samples = {folder: MultiScaleImageDataset({"name": "v", "phase": "val", "dataroot_gt": str(tmp_path / folder),
                                               "scales": [2]}) for folder in ("png", "unit", "nan")}
    np.testing.assert_array_equal(samples["unit"][0]["gt"].numpy(), samples["png"][0]["gt"].numpy())
    with pytest.raises(DataError, match=r"nan/a\.tif: 768 of 768 float pixel values are NaN or infinite"):
        samples["nan"][0]
