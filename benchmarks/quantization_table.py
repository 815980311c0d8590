"""Reduced precision measured (int8, bf16, fp16 against fp32: Set5 quality, CPU time) and every backend's verification.

For LKDN x4, LKDN-S (training-form checkpoint, folded) and SPAN c28 with their official weights,
every precision of every backend that has one runs through ``lkdn.Upscaler`` (verified against
PyTorch when built) on Set5 x4: PSNR/SSIM on the Y channel with ``crop_border = 4`` (the
project's protocol, :func:`lkdn.evaluate.evaluate_folder`), the change against PyTorch float32,
and the largest max abs difference over the five images. CPU time: LR 320x180, each row in its
own process pinned to ``--threads`` cores, interleaved rounds (the machinery of
``bench_backends.py``), median and min-max. int8 is calibrated on scikit-image's bundled
photographs downscaled x4 (not on Set5).

    python benchmarks/quantization_table.py --threads 2                        # print the table
    python benchmarks/quantization_table.py --threads 2 --write docs/deployment.md

A second table (``--only verification``, markers ``backend-verification``) lists what
``lkdn.backends.convert`` measured when it verified each backend and precision against PyTorch
float32 for the five official networks of the tests (LKDN x4, LKDN-S training form, BSRN x4,
E-RFDN, SPAN c28): max abs difference and PSNR on the random batch and on the photograph, with
the tolerance each must meet.

``--write`` replaces the text between ``<!-- quantization-table:start -->`` and
``<!-- quantization-table:end -->`` (and ``<!-- backend-verification:... -->``) in that file.
PSNR/SSIM are deterministic; the times depend on the machine and its load (stated in the output).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_backends as bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

NETWORKS = {
    "LKDN x4": "options/test/LKDN/test_LKDN_x4.yml",
    "LKDN-S": "options/test/LKDN/test_LKDN-S_x4.yml",
    "SPAN c28": "options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml",
}
ROWS = (  # (candidate key of bench_backends, backend, precision, label)
    ("torch", "torch", "fp32", "PyTorch fp32 (reference)"),
    ("ov-fp32", "openvino", "fp32", "OpenVINO fp32"),
    ("ov-bf16", "openvino", "bf16", "OpenVINO bf16 (inference precision hint)"),
    ("ov-int8", "openvino", "int8", "OpenVINO int8 (NNCF post-training quantization)"),
    ("torch-bf16", "torch", "bf16", "PyTorch bf16 (autocast)"),
    ("ort-fp16", "onnxruntime", "fp16", "onnxruntime fp16 (mixed-precision graph)"),
    ("ncnn-fp16", "ncnn", "fp16", "ncnn fp16 (float16 weights)"),
)
SIZE = (180, 320)
VERIFIED = {
    "LKDN x4": "options/test/LKDN/test_LKDN_x4.yml",
    "LKDN-S (training form)": "options/test/LKDN/test_LKDN-S_x4.yml",
    "BSRN x4": "options/test/BSRN/test_BSRN_x4.yml",
    "E-RFDN": "options/test/RFDN/test_E-RFDN_x4.yml",
    "SPAN c28": "options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml",
}
MARKERS = {"quantization": "quantization-table", "verification": "backend-verification"}


def set5_rows(yml: str, calibration: Path, threads: int) -> dict[str, dict[str, Any]]:
    """Set5 x4 PSNR/SSIM and max abs (vs PyTorch fp32) per row key."""
    from lkdn.backends import BackendError, convert
    from lkdn.evaluate import evaluate_folder
    from lkdn.upscaler import Upscaler
    from lkdn.zoo import find_benchmark

    found = find_benchmark("Set5", 4)
    if found is None:
        raise SystemExit("Set5 x4 not found (README 'Data and weights'): the table needs it")
    hr, lr = found
    net, _, weights = bench.load_network(yml)
    if not weights.startswith("official"):
        raise SystemExit(f"{yml}: the official checkpoint is not found; the table needs the published weights")
    outputs: dict[str, list[torch.Tensor]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for key, backend, precision, _ in ROWS:
        print(f"   {key}", file=sys.stderr, flush=True)
        refused = None
        try:
            run: Callable[[torch.Tensor], torch.Tensor] = Upscaler(
                net, device="cpu", backend=backend, precision=precision, threads=threads,
                calibration=calibration if precision == "int8" else ())
        except BackendError as err:  # measured anyway, without the check, and marked as refused
            refused = " ".join(str(err).split())
            runtime = convert(net, backend, precision=precision, threads=threads, strict=False,
                              calibration=calibration if precision == "int8" else ())
            run = lambda x, runtime=runtime: runtime(x).clamp(0, 1)  # noqa: E731
        kept: list[torch.Tensor] = []

        def forward(x: torch.Tensor, run: Callable = run, kept: list[torch.Tensor] = kept) -> torch.Tensor:
            out = run(x)
            kept.append(out)
            return out

        scores = evaluate_folder(forward, hr, lr, scale=4)
        outputs[key] = kept
        rows[key] = {
            "psnr": float(np.mean([m["psnr"] for m in scores.values()])),
            "ssim": float(np.mean([m["ssim"] for m in scores.values()])),
            "max_abs": max(float((a - b).abs().max()) for a, b in zip(kept, outputs["torch"], strict=True)),
            "refused": refused,
        }
    return rows


def table(threads: int, rounds: int) -> str:
    lines = [
        f"Generated by `python benchmarks/quantization_table.py --threads {threads}` on {datetime.date.today()}. "
        f"{bench.machine_line(threads)}. Set5 x4, Y channel, crop 4; max abs: the largest difference from PyTorch "
        f"fp32 over the five SR images (clamped to [0, 1]). CPU time: LR 320x180 -> 1280x720, median (min-max) of "
        f"{rounds} interleaved rounds, each row in its own process on {threads} cores, on a machine shared with "
        "other work (times are indicative; PSNR/SSIM are exact).",
        "",
        "| network | precision | Set5 PSNR / SSIM | dPSNR vs fp32 | max abs vs fp32 | CPU ms at 320x180 |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lkdn-quant-") as tmp:
        folder = Path(tmp)
        calibration = bench.calibration_folder(folder / "calibration", 4)
        for name, yml in NETWORKS.items():
            print(f"== {name}", file=sys.stderr, flush=True)
            quality = set5_rows(yml, calibration, threads)
            candidates = tuple(bench.Candidate(key, label, precision) for key, _, precision, label in ROWS)
            results = bench.measure_group(
                candidates, yml=yml, size=SIZE, threads=threads, rounds=rounds,
                files={"calibration": str(calibration)}, reference=None, accuracy_size=SIZE, folder=folder,
            )
            times = {r.candidate.key: r for r in results}
            base = quality["torch"]["psnr"]
            for key, _, _, label in ROWS:
                q, r = quality[key], times[key]
                if r.times:
                    timing = f"{r.median:.0f} ({min(r.times):.0f}-{max(r.times):.0f})"
                else:
                    timing = "refused by the Upscaler (see the note)" if q["refused"] else f"failed: {r.error}"
                mark = " *" if q["refused"] else ""
                lines.append(
                    f"| {name} | {label}{mark} | {q['psnr']:.4f} / {q['ssim']:.4f} | {q['psnr'] - base:+.4f} | "
                    f"{q['max_abs']:.1e} | {timing} |"
                )
                if q["refused"]:
                    notes.append(f"\\* {name}, {label}: measured without the check; `lkdn.Upscaler` refuses it: "
                                 f"{q['refused']}")
    return "\n".join(lines + ([""] + notes if notes else []))


def verification_table(threads: int) -> str:
    """What every backend and precision measured when verified against PyTorch float32 (lkdn.backends.convert)."""
    from lkdn.backends import BACKEND_PRECISIONS, TOLERANCES, BackendError, convert, installed
    from lkdn.export import onnx_graph

    lines = [
        f"Generated by `python benchmarks/quantization_table.py --only verification` on {datetime.date.today()}. "
        f"{bench.machine_line(threads)}. What `lkdn.backends.convert` measured against PyTorch float32 when it built "
        "each runtime: random = a 2x3x27x35 batch of uniform noise, photo = scikit-image's astronaut at 45x51 "
        "(int8: the photo and two calibration crops; int8 is calibrated on scikit-image's photographs).",
        "",
        "| network | backend | precision | tolerance | random: max abs / PSNR | photo: max abs / PSNR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="lkdn-verify-") as tmp:
        calibration = bench.calibration_folder(Path(tmp) / "calibration", 4)
        for name, yml in VERIFIED.items():
            print(f"== {name}", file=sys.stderr, flush=True)
            net, _, weights = bench.load_network(yml)
            if not weights.startswith("official"):
                raise SystemExit(f"{yml}: the official checkpoint is not found; the table needs the published weights")
            graph = onnx_graph(net)
            for backend in ("onnxruntime", "openvino", "ncnn"):
                if not installed(backend):
                    lines.append(f"| {name} | {backend} | | | not installed | |")
                    continue
                for precision in BACKEND_PRECISIONS[backend]:
                    tolerance = TOLERANCES[(backend, precision)].describe()
                    try:
                        runtime = convert(net, backend, precision=precision, threads=threads, graph=graph,
                                          calibration=calibration if precision == "int8" else ())
                    except BackendError as err:
                        lines.append(f"| {name} | {backend} | {precision} | {tolerance} | refused: "
                                     f"{' '.join(str(err).split())[:200]} | |")
                        continue
                    checks = {c.name: c for c in runtime.checks}
                    cells = [f"{checks[k].max_abs:.1e} / {checks[k].psnr:.1f} dB" if k in checks else "-"
                             for k in ("random", "photo")]
                    lines.append(f"| {name} | {backend} | {precision} | {tolerance} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def write_between_markers(path: Path, marker: str, text: str) -> None:
    from lkdn.utils import replace_between_markers

    try:
        replace_between_markers(path, marker, text)
    except ValueError as err:
        raise SystemExit(str(err)) from err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per row (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--write", type=Path, help="replace the marked tables in this Markdown file")
    parser.add_argument("--only", choices=tuple(MARKERS), help="produce one of the two tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for which in (args.only,) if args.only else tuple(MARKERS):
        text = table(args.threads, args.rounds) if which == "quantization" else verification_table(args.threads)
        if args.write:
            write_between_markers(args.write, MARKERS[which], text)
        print(text + "\n")


if __name__ == "__main__":
    import lkdn  # noqa: F401  (registers the architectures)

    os.environ.setdefault("LKDN_OFFLINE", "1")
    main()
