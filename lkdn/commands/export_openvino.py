"""Export a network to an OpenVINO IR (.xml + .bin), verified with OpenVINO against PyTorch before it is written.

    lkdn-export-openvino -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.xml
    lkdn-export-openvino -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4_bf16.xml --precision bf16
    lkdn-export-openvino -opt options/test/SPAN/test_SPAN_NTIRE_ESR_c28_x4.yml --output span_int8.xml \\
        --precision int8 --calibration path/to/LR_images/

The network is built from ``network_g`` of the YAML, weights come from ``--weights`` or
``path.pretrain_network_g``, re-parameterizable branches and ``num_in`` are folded, the deploy
network is exported to ONNX by lkdn's exporter and read by OpenVINO. Precisions: ``fp32``;
``bf16``: OpenVINO's *inference precision hint* (the .bin keeps float32 weights; the IR records
``precision: bf16`` in ``rt_info``, which ``lkdn.backends.openvino_backend`` applies); ``int8``:
NNCF post-training quantization on ``--calibration`` (a folder of LR images), with the
architecture's overflow-prone stages and the first and last convolution left in float32.

The IR is written to a temporary folder, loaded by OpenVINO and compared with PyTorch float32 on
a random batch and on a check image (``--check-image``, default Set5 ``baby`` at the scale
when found), within ``lkdn.backends.TOLERANCES``: 5e-4 max abs (fp32), 30 dB PSNR (bf16), 25 dB
PSNR (int8, on images only). With Set5 found, the Set5 PSNR/SSIM through OpenVINO is reported against PyTorch's.
Only then are the .bin and the .xml written (each atomically); otherwise exit status 1 and
nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lkdn.commands._export import EXPORT_ERRORS, ExportJob, export_parser, run_export
from lkdn.errors import CommandError
from lkdn.utils import command, parse_command_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = export_parser(
        "lkdn-export-openvino", __doc__, "the .xml to write (the .bin goes beside it)",
        ["lkdn-export-openvino -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.xml",
         "lkdn-export-openvino -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4_bf16.xml --precision bf16"])
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="fp32 (default), bf16 (inference precision hint) or int8 (NNCF, needs --calibration)")
    parser.add_argument("--calibration", type=Path, help="int8: a folder of LR images for post-training quantization")
    return parse_command_line(parser, argv)


def check(args: argparse.Namespace) -> None:
    if args.output.suffix != ".xml":
        raise CommandError(f"--output {args.output}: give the .xml file to write (its .bin goes beside it)")
    if args.precision == "int8" and args.calibration is None:
        raise CommandError("--precision int8 needs --calibration FOLDER (LR images for NNCF's statistics)")


@command(clear=EXPORT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    """``lkdn-export-openvino``: 0 when the file is written, or 1 after one ``error: ...`` line, having written nothing."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast

    def export(job: ExportJob):
        from lkdn.export import export_metadata, export_openvino  # lazy: torch and the exporters, after parsing

        return export_openvino(
            job.net, args.output, precision=args.precision, calibration=args.calibration or (), check_images=job.images,
            metadata=export_metadata(job.opt["network_g"], job.net, job.scale), scale=job.scale, threads=args.threads,
        )

    return run_export(args, export, check=check, also_writes=(".bin",))

