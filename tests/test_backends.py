"""lkdn.backends and Upscaler(backend=...): onnxruntime, OpenVINO and ncnn reproduce PyTorch within their
stated tolerances (official LKDN x4, LKDN-S training form, BSRN x4, E-RFDN, SPAN c28; odd sizes, tiles),
reduced precisions on a small random network, backend="auto", one-line errors for missing extras, and
corrupted IR / .param files refused with an error naming the file."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, shared_file

from lkdn import Upscaler, build_network
from lkdn.backends import (
    BACKEND_PRECISIONS,
    TOLERANCES,
    BackendError,
    MissingExtraError,
    Runtime,
    Tolerance,
    convert,
    installed,
)
from lkdn.export import onnx_graph
from lkdn.images import run_network
from lkdn.loading import load_network_from_options
from lkdn.options import load_options

pytestmark = pytest.mark.usefixtures("one_thread")

RUNTIMES = ("onnxruntime", "openvino", "ncnn")
# official checkpoint -> (the shipped test YAML, folder and file under pretrained/)
OFFICIAL = {
    "LKDN_x4": ("LKDN/test_LKDN_x4.yml", ("LKDN", "LKDN_x4.pth")),
    "LKDN-S_x4 (training form)": ("LKDN/test_LKDN-S_x4.yml", ("LKDN", "LKDN-S_x4.pth")),
    "BSRN_x4": ("BSRN/test_BSRN_x4.yml", ("BSRN", "BSRN_x4.pth")),
    "E-RFDN": ("RFDN/test_E-RFDN_x4.yml", ("RFDN", "RFDN_AIM.pth")),
    "SPAN_c28": ("SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml", ("SPAN", "SPAN_NTIRE_ESR_c28_x4.pth")),
}
TINY = {"type": "LKDN_S", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2, "conv": "BSConvU_rep",
        "upsampler": "pixelshuffle_rep"}


def needs(backend: str) -> None:
    if not installed(backend):
        pytest.skip(f"backend {backend} is not installed here")


@torch.no_grad()
def tiny_net() -> torch.nn.Module:
    """A small LKDN-S in training form with every parameter perturbed (no branch trivially zero)."""
    net = build_network(TINY)
    generator = torch.Generator().manual_seed(1)
    for p in net.parameters():
        p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return net.eval()


@pytest.fixture(scope="module")
def official() -> Callable[[str, str], tuple[torch.nn.Module, Runtime]]:
    """Each official network loaded once, and converted once per backend (one ONNX graph shared)."""
    nets: dict[str, torch.nn.Module] = {}
    graphs: dict[str, bytes] = {}
    runtimes: dict[tuple[str, str], Runtime] = {}

    def get(name: str, backend: str) -> tuple[torch.nn.Module, Runtime]:
        needs(backend)
        if name not in nets:
            yml, parts = OFFICIAL[name]
            weights = shared_file("pretrained", *parts)
            opt = load_options(ROOT / "options" / "test" / yml, overrides=[f"path:pretrain_network_g={weights}"])
            nets[name] = load_network_from_options(opt)
        if (name, backend) not in runtimes:
            if backend != "ncnn" and name not in graphs:
                graphs[name] = onnx_graph(nets[name])
            runtimes[name, backend] = convert(nets[name], backend, threads=1, graph=graphs.get(name))
        return nets[name], runtimes[name, backend]

    return get


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("name", list(OFFICIAL))
def test_official_network_matches_pytorch_whole_and_in_tiles(
    official: Callable[[str, str], tuple[torch.nn.Module, Runtime]], name: str, backend: str,
) -> None:
    net, runtime = official(name, backend)
    tolerance = TOLERANCES[(backend, "fp32")].max_abs
    assert [c.name for c in runtime.checks] == ["random", "photo"]  # verified when built
    assert all(c.max_abs <= tolerance for c in runtime.checks), runtime.checks
    x = torch.rand(1, 3, 31, 37, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(runtime.raw(x), expected, atol=tolerance, rtol=0)
        torch.testing.assert_close(runtime(x), expected.clamp(0, 1), atol=tolerance, rtol=0)
        # the same tiles through both: 4 tiles of 4 shapes, odd ones (dynamic shapes in the runtime), each
        # at least 23 pixels (ESA in BSRN / E-RFDN needs 15)
        x = torch.rand(1, 3, 35, 39, generator=torch.Generator().manual_seed(4))
        tiled = run_network(runtime.raw, x, tile=20, tile_pad=8, self_ensemble=False, scale=4)
        reference = run_network(net, x, tile=20, tile_pad=8, self_ensemble=False, scale=4)
    torch.testing.assert_close(tiled, reference, atol=tolerance, rtol=0)


def test_official_lkdn_x4_bf16_and_fp16_within_tolerance(official: Callable[[str, str], tuple[torch.nn.Module, Runtime]]) -> None:
    net, _ = official("LKDN_x4", "openvino")
    for backend, precision in (("openvino", "bf16"), ("ncnn", "fp16")):
        needs(backend)
        runtime = convert(net, backend, precision=precision, threads=1)
        tolerance = TOLERANCES[(backend, precision)]
        assert all(tolerance.min_psnr is None or c.psnr >= tolerance.min_psnr for c in runtime.checks)
        photo = next(c for c in runtime.checks if c.name == "photo")
        assert photo.max_abs <= 0.1 and photo.psnr >= 40, photo  # on an image the error is small (LKDN x4 bf16: 0.06, 46 dB)


# --- reduced precisions and the Upscaler API on a small random network --------------------------


@pytest.mark.parametrize(("backend", "precision"), [(b, p) for b in RUNTIMES for p in BACKEND_PRECISIONS[b]])
def test_every_backend_precision_within_its_tolerance(backend: str, precision: str) -> None:
    needs(backend)
    net = tiny_net()
    calibration = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    runtime = convert(net, backend, precision=precision, threads=1, calibration=calibration)
    assert runtime.precision == precision and runtime.checks
    tolerance = TOLERANCES[(backend, precision)]
    for check in runtime.checks:
        assert tolerance.max_abs is None or check.max_abs <= tolerance.max_abs, check
        assert tolerance.min_psnr is None or check.psnr >= tolerance.min_psnr, check
    assert backend in runtime.describe().lower()


@pytest.mark.parametrize("backend", RUNTIMES)
def test_upscaler_backend_same_call_tiles_ensemble_and_images(backend: str) -> None:
    needs(backend)
    net = tiny_net()
    torch_up, up = Upscaler(net, device="cpu"), Upscaler(net, backend=backend, threads=1)
    assert up.backend == up.backend_in_use == backend and backend in repr(up).lower()
    tolerance = TOLERANCES[(backend, "fp32")].max_abs
    x = torch.rand(2, 3, 33, 29)
    for kwargs in ({}, {"tile": 16, "tile_pad": 5}, {"self_ensemble": True}):
        torch.testing.assert_close(up(x, **kwargs), torch_up(x, **kwargs), atol=tolerance, rtol=0)
    image = np.random.default_rng(0).integers(0, 256, (21, 19, 3), dtype=np.uint8)
    got, expected = up.upscale_image(image), torch_up.upscale_image(image)
    assert got.shape == expected.shape == (42, 38, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_upscaler_backend_arguments_are_checked() -> None:
    net = tiny_net()
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, openvino, ncnn, auto"):
        Upscaler(net, backend="tensorrt")
    with pytest.raises(ValueError, match="backend 'ncnn' supports precision fp32, fp16, not 'bf16'"):
        Upscaler(net, backend="ncnn", precision="bf16")
    with pytest.raises(ValueError, match="backend 'torch' supports precision fp32, bf16, fp16, not 'int8'"):
        Upscaler(net, precision="int8")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Upscaler(net, backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="compile=True is torch.compile"):
        Upscaler(net, backend="onnxruntime", compile=True)


def test_int8_needs_calibration_images() -> None:
    needs("openvino")
    with pytest.raises(ValueError, match="needs calibration images"):
        Upscaler(tiny_net(), backend="openvino", precision="int8")


def test_a_runtime_that_does_not_reproduce_pytorch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    needs("onnxruntime")
    monkeypatch.setitem(TOLERANCES, ("onnxruntime", "fp32"), Tolerance(max_abs=0.0))
    with pytest.raises(BackendError, match=r"backend 'onnxruntime' \(fp32\) does not reproduce PyTorch"):
        Upscaler(tiny_net(), backend="onnxruntime")


def test_auto_chooses_the_fastest_verified_backend_and_logs_the_times(caplog: pytest.LogCaptureFixture) -> None:
    net = tiny_net()
    up = Upscaler(net, backend="auto", threads=1)
    assert up.backend_in_use == "auto"
    x = torch.rand(1, 3, 30, 26)
    with caplog.at_level(logging.INFO, logger="lkdn.backends.auto"):
        out = up(x)
    message = next(r.getMessage() for r in caplog.records if "chose " in r.getMessage())  # not "chosen yet"
    chosen = up.backend_in_use
    assert chosen in ("torch", *[b for b in RUNTIMES if installed(b)])
    assert f"chose {chosen}" in message and "ms" in message and "(1, 3, 30, 26)" in message
    times = up.runtime.times_ms
    assert set(times) == {"torch", *[b for b in RUNTIMES if installed(b)]}
    assert times[chosen] == min(times.values())
    torch.testing.assert_close(out, Upscaler(net, device="cpu")(x), atol=5e-4, rtol=0)
    torch.testing.assert_close(up(x), out, atol=5e-4, rtol=0)  # later calls run the chosen one


def test_auto_leaves_out_what_is_not_installed(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "ncnn", None)
    with caplog.at_level(logging.INFO, logger="lkdn.upscaler"):
        up = Upscaler(tiny_net(), backend="auto", precision="bf16", threads=1)
    assert set(up.runtime.candidates) == {"torch"}  # onnxruntime has no bf16; openvino is "missing"
    assert any("openvino not installed" in r.getMessage() for r in caplog.records)
    assert up(torch.rand(1, 3, 12, 14)).shape == (1, 3, 24, 28)
    assert up.backend_in_use == "torch"


# --- missing extras and corrupted files ------------------------------------------------------------


@pytest.mark.parametrize(("missing", "backend", "precision", "extra"), [
    ("openvino", "openvino", "fp32", "openvino"),
    ("nncf", "openvino", "int8", "openvino"),
    ("onnx", "openvino", "fp32", "onnx"),
    ("onnxruntime", "onnxruntime", "fp32", "onnx"),
    ("ncnn", "ncnn", "fp32", "ncnn"),
    ("pnnx", "ncnn", "fp32", "ncnn"),
])
def test_missing_extra_is_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch, missing: str, backend: str, precision: str, extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(MissingExtraError) as info:
        Upscaler(tiny_net(), backend=backend, precision=precision, calibration=[torch.rand(1, 3, 16, 16)])
    message = str(info.value)
    assert "\n" not in message
    assert f'pip install -e ".[{extra}]"' in message and missing in message
    assert "pip install lkdn" not in message


def seeded_tiny_net() -> torch.nn.Module:
    """:func:`tiny_net` with its initial weights seeded too: the same network on every call."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return tiny_net()


@pytest.fixture(scope="module")
def exported_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny network as ONNX, as an OpenVINO IR and as an ncnn .param/.bin, through the exporters."""
    from lkdn.export import export_metadata, export_ncnn, export_onnx, export_openvino

    folder = tmp_path_factory.mktemp("exported")
    files = {}
    if installed("onnxruntime"):
        export_onnx(seeded_tiny_net(), folder / "tiny.onnx", metadata=export_metadata(TINY, seeded_tiny_net(), 2))
        files["onnx"] = folder / "tiny.onnx"
    if installed("openvino"):
        export_openvino(seeded_tiny_net(), folder / "tiny_openvino.xml", metadata=export_metadata(TINY, seeded_tiny_net(), 2))
        files["xml"] = folder / "tiny_openvino.xml"
    if installed("ncnn"):
        export_ncnn(seeded_tiny_net(), folder / "tiny_ncnn.param")  # not tiny.bin: the IR has it
        files["param"] = folder / "tiny_ncnn.param"
    return files


def _corrupt(source: Path, target: Path, keep: float) -> Path:
    target.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
    return target


def test_corrupted_openvino_ir_is_refused_naming_the_file(exported_files: dict[str, Path], tmp_path: Path) -> None:
    needs("openvino")
    from lkdn.backends.openvino_backend import OpenVINOBackend

    xml = exported_files["xml"]
    runtime = OpenVINOBackend(xml, threads=1)
    assert runtime.metadata()["precision"] == "fp32" and runtime.metadata()["producer"] == "lkdn"
    truncated = _corrupt(xml, tmp_path / "truncated.xml", 0.5)
    _corrupt(xml.with_suffix(".bin"), tmp_path / "truncated.bin", 1.0)
    with pytest.raises(BackendError, match=f"OpenVINO cannot read {truncated}"):
        OpenVINOBackend(truncated)
    short = tmp_path / "short.xml"
    short.write_bytes(xml.read_bytes())
    _corrupt(xml.with_suffix(".bin"), tmp_path / "short.bin", 0.3)
    with pytest.raises(BackendError, match=f"OpenVINO cannot read {short}.*Incorrect weights"):
        OpenVINOBackend(short)
    alone = tmp_path / "alone.xml"
    alone.write_bytes(xml.read_bytes())
    with pytest.raises(BackendError, match=f"its weights {tmp_path / 'alone.bin'} are missing"):
        OpenVINOBackend(alone)


def test_corrupted_ncnn_files_are_refused_naming_the_file(exported_files: dict[str, Path], tmp_path: Path) -> None:
    needs("ncnn")
    from lkdn.backends.ncnn_backend import NcnnBackend

    param = exported_files["param"]
    x = torch.rand(1, 3, 13, 11)
    assert NcnnBackend(param, threads=1)(x).shape == (1, 3, 26, 22)
    truncated = _corrupt(param, tmp_path / "truncated.param", 0.5)
    _corrupt(param.with_suffix(".bin"), tmp_path / "truncated.bin", 1.0)
    with pytest.raises(BackendError, match=f"ncnn graph {truncated} is corrupted"):
        NcnnBackend(truncated)
    garbage = tmp_path / "garbage.param"
    garbage.write_text("not a graph\n")
    with pytest.raises(BackendError, match=f"ncnn graph {garbage} is corrupted.*magic number"):
        NcnnBackend(garbage, param.with_suffix(".bin"))
    short = tmp_path / "short.param"
    short.write_bytes(param.read_bytes())
    _corrupt(param.with_suffix(".bin"), tmp_path / "short.bin", 0.3)
    with pytest.raises(BackendError, match=f"ncnn cannot load the weights {tmp_path / 'short.bin'}"):
        NcnnBackend(short)
    with pytest.raises(BackendError, match="not found"):
        NcnnBackend(param, tmp_path / "absent.bin")


SIGNAL_AFTER_TWO_MODELS = """
import gc, signal, torch
from lkdn import Upscaler, build_network
net = build_network({"type": "LKDN", "num_feat": 8, "num_atten": 8, "num_block": 1, "upscale": 2})
first = Upscaler(net, backend="openvino", threads=1, device="cpu")
second = Upscaler(net, backend="openvino", threads=1, device="cpu")
first(torch.rand(1, 3, 12, 14)), second(torch.rand(1, 3, 12, 14))
del first; gc.collect()
del second; gc.collect()  # destroyed in the order they were built
signal.signal(signal.SIGTERM, lambda sig, frame: print("handler ran", flush=True))
signal.raise_signal(signal.SIGTERM)  # what training's SIGTERM handling meets after a backend test
print("still running")
"""


def test_openvino_models_leave_the_signal_stack_usable() -> None:
    """Two OpenVINO models destroyed in build order once left the thread's signal stack freed: SIGTERM then crashed."""
    needs("openvino")
    done = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_TWO_MODELS], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, f"exit status {done.returncode} (-11: SIGSEGV)\n{done.stderr[-2000:]}"
    assert done.stdout.split() == ["handler", "ran", "still", "running"]


# --- runtime outputs and exported files run directly ----------------------------------------------


class _Fixed(Runtime):
    backend = "onnxruntime"
    precisions = ("fp32",)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.full((x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]), -0.9, dtype=np.float32) + (
            np.arange(2 * x.shape[3], dtype=np.float32) % 2) * 2.6  # -0.9 and 1.7, alternating

    def describe(self) -> str:
        return "fixed"


def test_runtime_output_is_clamped_and_raw_is_not() -> None:
    runtime = _Fixed(precision="fp32", threads=1)
    x = torch.rand(1, 3, 4, 5)
    assert float(runtime.raw(x).min()) == pytest.approx(-0.9) and float(runtime.raw(x).max()) == pytest.approx(1.7)
    out = runtime(x)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    if installed("onnxruntime"):  # a real runtime: a network whose output leaves [0, 1]
        net = tiny_net()
        with torch.no_grad():
            for name, param in net.named_parameters():
                if name.startswith("upsampler") and name.endswith("bias"):
                    param.fill_(-1.0)
        real = convert(net, "onnxruntime", threads=1)
        x = torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(0))
        assert float(real.raw(x).min()) < 0  # the precondition: out of range before clamping
        assert float(real(x).min()) >= 0 and float(real(x).max()) <= 1


@pytest.mark.parametrize("kind", ["onnx", "xml", "param"])
def test_exported_file_runs_directly_with_its_scale(exported_files: dict[str, Path], kind: str) -> None:
    from lkdn.backends.files import ExportedModel

    if kind not in exported_files:
        pytest.skip(f"no runtime for .{kind} installed here")
    model = ExportedModel(exported_files[kind], threads=1)
    assert model.scale == 2 and model.backend == {"onnx": "onnxruntime", "xml": "openvino", "param": "ncnn"}[kind]
    x = torch.rand(1, 3, 33, 29, generator=torch.Generator().manual_seed(2))
    expected = Upscaler(seeded_tiny_net(), device="cpu")(x)
    tolerance = TOLERANCES[(model.backend, "fp32")].max_abs
    torch.testing.assert_close(model(x), expected, atol=tolerance, rtol=0)
    torch.testing.assert_close(model(x, tile=16), expected, atol=tolerance, rtol=0)  # the recorded radius: exact tiles
    with pytest.raises(BackendError, match=rf"scale 4 was asked for, but .*{exported_files[kind].name} upscales by 2"):
        ExportedModel(exported_files[kind], scale=4, threads=1)
    assert ExportedModel(exported_files[kind], scale=2, threads=1).scale == 2


def test_an_exported_file_recording_another_scale_is_refused(exported_files: dict[str, Path], tmp_path: Path) -> None:
    from lkdn.backends.files import ExportedModel

    if "onnx" not in exported_files:
        pytest.skip("onnxruntime is not installed here")
    import onnx

    model = onnx.load(str(exported_files["onnx"]))
    next(p for p in model.metadata_props if p.key == "scale").value = "3"
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    with pytest.raises(BackendError, match=r"wrong.onnx: records scale 3 but upscales by 2"):
        ExportedModel(tmp_path / "wrong.onnx", threads=1)
    with pytest.raises(ValueError, match=r"notes.txt: not an exported model file; expected .onnx"):
        ExportedModel(tmp_path / "notes.txt")
    with pytest.raises(BackendError, match=r"exported model .*missing.onnx not found"):
        ExportedModel(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not a model" * 10)
    with pytest.raises(BackendError, match=r"garbage.onnx: not a readable ONNX model"):
        ExportedModel(tmp_path / "garbage.onnx")


def _infer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "inference.py"), *args], capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_inference_script_runs_an_exported_file(exported_files: dict[str, Path], tmp_path: Path) -> None:
    import cv2

    if "onnx" not in exported_files:
        pytest.skip("onnxruntime is not installed here")
    image = np.random.default_rng(0).integers(0, 256, (21, 19, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    done = _infer("--model", str(exported_files["onnx"]), "--input", str(tmp_path / "in.png"), "--output",
                  str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    got = cv2.imread(str(tmp_path / "out" / "in.png"))
    expected = Upscaler(seeded_tiny_net(), device="cpu").upscale_image(image)
    assert got.shape == (42, 38, 3) and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    wrong = _infer("--model", str(exported_files["onnx"]), "--scale", "4", "--input", str(tmp_path / "in.png"),
                   "--output", str(tmp_path / "out4"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"error: scale 4 was asked for, but {exported_files['onnx']} upscales by 2")
    assert not (tmp_path / "out4").exists()
    clash = _infer("--model", str(exported_files["onnx"]), "--backend", "ncnn", "--input", str(tmp_path / "in.png"),
                   "--output", str(tmp_path / "out5"))
    assert clash.returncode == 2 and "--backend ncnn cannot run" in clash.stderr and "tiny.onnx" in clash.stderr


def test_inference_script_auto_logs_its_choice_and_times(tmp_path: Path) -> None:
    import cv2
    import yaml

    from lkdn.loading import save_network_file

    save_network_file(tiny_net().state_dict(), tmp_path / "tiny.safetensors", TINY)
    opt = {"name": "tiny", "model_type": "SRModel", "scale": 2, "num_gpu": 0, "network_g": TINY,
           "path": {"pretrain_network_g": str(tmp_path / "tiny.safetensors")}}
    (tmp_path / "tiny.yml").write_text(yaml.safe_dump(opt))
    cv2.imwrite(str(tmp_path / "in.png"), np.random.default_rng(0).integers(0, 256, (21, 19, 3), dtype=np.uint8))
    done = _infer("-opt", str(tmp_path / "tiny.yml"), "--backend", "auto", "--input", str(tmp_path / "in.png"),
                  "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    chose = [line for line in done.stderr.splitlines() if "backend='auto'" in line and " chose " in line]
    assert len(chose) == 1, done.stderr[-3000:]
    assert all(f"{name} " in chose[0] for name in ("torch", *[b for b in RUNTIMES if installed(b)]))
    assert chose[0].count(" ms") == 1 + sum(installed(b) for b in RUNTIMES)
