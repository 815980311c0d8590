"""Export a network to ncnn (.param + .bin) through pnnx, verified with ncnn against PyTorch before it is written.

    lkdn-export-ncnn -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.param
    lkdn-export-ncnn -opt options/test/LKDN/test_LKDN-S_x4.yml --output LKDN-S_x4_fp16.param --precision fp16

The network is built from ``network_g`` of the YAML, weights come from ``--weights`` or
``path.pretrain_network_g``, re-parameterizable branches and ``num_in`` are folded, the deploy
network is traced to TorchScript by lkdn's exporter (``lkdn.export.torchscript_graph``; pnnx
cannot convert every resize of our ONNX graph) and converted by pnnx (the converter of the
``pnnx`` package) to ncnn, size-agnostic. ``fp16`` stores float16 weights (half the file; ncnn
uses float16 storage/arithmetic where the CPU has it, ARM); ``fp32`` float32 weights.

The files are written to a temporary folder, loaded by ncnn and compared with PyTorch float32
on a random batch and on a check image (``--check-image``, default Set5 ``baby`` at the scale
when found), within ``lkdn.backends.TOLERANCES``: 5e-4 max abs (fp32), 1e-1 max abs and 45 dB
PSNR (fp16). With Set5 found, the Set5 PSNR/SSIM through
ncnn is reported against PyTorch's. Only then are the .bin and the .param written (each
atomically); otherwise exit status 1 and nothing is written. Input blob ``in0`` (C,H,W float
RGB in [0, 1]), output blob ``out0``.
"""

from __future__ import annotations

import argparse

from lkdn.commands._export import EXPORT_ERRORS, ExportJob, export_parser, run_export
from lkdn.errors import CommandError
from lkdn.utils import command, parse_command_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = export_parser(
        "lkdn-export-ncnn", __doc__, "the .param to write (the .bin goes beside it)",
        ["lkdn-export-ncnn -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.param",
         "lkdn-export-ncnn -opt options/test/LKDN/test_LKDN-S_x4.yml --output LKDN-S_x4_fp16.param --precision fp16"])
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="weights in the .bin (default fp32)")
    return parse_command_line(parser, argv)


def check(args: argparse.Namespace) -> None:
    if args.output.suffix != ".param":
        raise CommandError(f"--output {args.output}: give the .param file to write (its .bin goes beside it)")


@command(clear=EXPORT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    """``lkdn-export-ncnn``: 0 when the file is written, or 1 after one ``error: ...`` line, having written nothing."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast

    def export(job: ExportJob):
        from lkdn.export import export_ncnn  # lazy: torch and the exporters, after parsing

        return export_ncnn(job.net, args.output, precision=args.precision, check_images=job.images, scale=job.scale,
                           threads=args.threads)

    return run_export(args, export, check=check, also_writes=(".bin",))

