"""Export a network to ONNX, verified with onnxruntime against PyTorch before it is written.

    lkdn-export-onnx -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.onnx
    lkdn-export-onnx -opt my.yml --weights LKDN-S_x4.safetensors --output s.onnx --fp16

The network is built from ``network_g`` of the YAML, weights come from ``--weights`` or
``path.pretrain_network_g`` (``.pth`` or ``.safetensors``), re-parameterizable branches and
``num_in`` are folded, and the ONNX graph (dynamic batch/height/width by default) is run by
onnxruntime (CPU) on a random batch and on a Set5 image (``--check-image``, or Set5's
``baby.png`` at the options' scale when Set5 is found, README "Data and weights"). The file is written only
when onnxruntime matches PyTorch within 1e-4 (float32; 5e-4 on the random-noise batch) or 1e-2 (``--fp16``, mixed precision)
max abs difference; otherwise the script exits with status 1 and writes nothing.
"""

from __future__ import annotations

import argparse

from lkdn.commands._export import DEFAULT_OPSET, EXPORT_ERRORS, ExportJob, export_parser, run_export
from lkdn.errors import CommandError
from lkdn.utils import command, parse_command_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = export_parser(
        "lkdn-export-onnx", __doc__, "the .onnx file to write",
        ["lkdn-export-onnx -opt options/test/LKDN/test_LKDN_x4.yml --output LKDN_x4.onnx",
         "lkdn-export-onnx -opt my.yml --weights LKDN-S_x4.safetensors --output s.onnx --fp16"])
    parser.add_argument("--fp16", action="store_true", help="mixed-precision float16 graph (float16 input and output)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", dest="dynamic", action="store_true", default=True,
                       help="dynamic batch, height and width (default)")
    shape.add_argument("--static", dest="dynamic", action="store_false", help="fixed input shape 1x3xHxW (--size)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="traced input size; the fixed size with --static (default 32 32, or the check image's size with --static)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--tolerance", type=float, help="max abs difference accepted (default 1e-4, 5e-4 on the random batch; 1e-2 with --fp16)")
    return parse_command_line(parser, argv)


def check(args: argparse.Namespace) -> None:
    if args.output.is_dir():
        raise CommandError(f"--output {args.output} is a folder; give the .onnx file to write")
    if args.size and min(args.size) < 1:
        raise CommandError(f"--size must be positive, got {args.size[0]} {args.size[1]}")


@command(clear=EXPORT_ERRORS)
def main(argv: list[str] | None = None) -> int:
    """``lkdn-export-onnx``: 0 when the file is written, or 1 after one ``error: ...`` line, having written nothing."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast

    def export(job: ExportJob):
        from lkdn.export import export_metadata, export_onnx
        from lkdn.images import check_input_size

        if args.size:
            size = tuple(args.size)
            channels = int(job.opt["network_g"].get("num_in_ch", 3))
            check_input_size(job.net, (1, channels, *size), what=f"--size {size[0]} {size[1]}", scale=job.scale)
        elif not args.dynamic and job.images:
            size = job.images[0][1].shape[:2]
        else:
            size = (32, 32)
        return export_onnx(
            job.net, args.output, opset=args.opset, dynamic=args.dynamic, fp16=args.fp16, size=size,
            check_images=job.images, tolerance=args.tolerance,
            metadata=export_metadata(job.opt["network_g"], job.net, job.scale),
        )

    return run_export(args, export, check=check)

