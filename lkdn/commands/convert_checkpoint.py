"""Convert a checkpoint between .pth and self-describing .safetensors, checked tensor for tensor.

    lkdn-convert --input LKDN_x4.pth --output LKDN_x4.safetensors \
        -opt options/test/LKDN/test_LKDN_x4.yml
    lkdn-convert --input net.pth --output net.safetensors \
        --network-json '{"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}'
    lkdn-convert --input LKDN_x4.safetensors --output LKDN_x4.pth

The state dict is taken from ``--param-key`` (default: ``params_ema``, then ``params``, as
BasicSR; a ``--param-key`` the checkpoint does not hold is an error naming the keys it holds), loaded strictly into the network the options build (so the metadata written
describes the weights), written atomically, read back and compared tensor for tensor.
A ``.safetensors`` output stores ``{"lkdn_format": "1", "network_g": <options as JSON>,
"scale": "<scale>"}`` as metadata; a ``.pth`` output is a BasicSR checkpoint ``{'params': ...}``.
Options for a ``.safetensors`` input default to its own metadata.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lkdn.errors import CommandError
from lkdn.utils import command, command_parser, parse_command_line, refuse_overwriting_inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-convert", __doc__,
        ["lkdn-convert --input LKDN_x4.pth --output LKDN_x4.safetensors -opt options/test/LKDN/test_LKDN_x4.yml",
         "lkdn-convert --input LKDN_x4.safetensors --output LKDN_x4.pth"])
    parser.add_argument("--input", required=True, type=Path, help=".pth/.pt or .safetensors checkpoint")
    parser.add_argument("--output", required=True, type=Path, help=".safetensors or .pth file to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-opt", type=Path, help="YAML options; network_g (and scale) describe the weights")
    source.add_argument("--network-json", help="network_g options as JSON, e.g. '{\"type\": \"LKDN\", \"upscale\": 4}'")
    parser.add_argument("--scale", type=int, help="upscaling factor (default: options' scale or network_g.upscale)")
    parser.add_argument("--param-key", help="key of the state dict in a BasicSR checkpoint (default params_ema, then params)")
    return parse_command_line(parser, argv)


def network_options(args: argparse.Namespace) -> tuple[dict, int | None]:
    """``(network_g, scale)`` from -opt, --network-json or the input's own metadata."""
    from lkdn.loading import read_metadata
    from lkdn.options import OptionsError, load_options

    if args.opt is not None:
        opt = load_options(args.opt)
        if args.scale is not None and args.scale != opt.scale:
            raise OptionsError(f"--scale {args.scale} differs from the scale {opt.scale} of {args.opt}")
        return dict(opt.network_g), opt.scale
    if args.network_json is not None:
        try:
            network_g = json.loads(args.network_json)
        except json.JSONDecodeError as err:
            raise OptionsError(f"--network-json: not valid JSON ({err})") from err
        if not isinstance(network_g, dict):
            raise OptionsError(f"--network-json: expected a JSON object, got {type(network_g).__name__}")
        return network_g, args.scale
    metadata = read_metadata(args.input)
    if "network_g" not in metadata:
        raise OptionsError(f"{args.input} does not describe its network: pass -opt or --network-json")
    return metadata["network_g"], args.scale or metadata.get("scale")


def convert(args: argparse.Namespace) -> int:
    """Convert, verify, and return the number of tensors written."""
    import torch

    from lkdn.checkpoint import CheckpointError, extract_state_dict, is_state_dict, load_file, load_state_dict
    from lkdn.loading import fitting_skeleton, save_network_file

    network_g, scale = network_options(args)
    ckpt = load_file(args.input)
    if args.param_key is not None and not is_state_dict(ckpt) and isinstance(ckpt, dict) and args.param_key not in ckpt:
        raise CheckpointError(f"{args.input}: no key {args.param_key!r} (--param-key); the checkpoint holds "
                              f"{', '.join(repr(k) for k in ckpt) or 'no keys'}")
    state = extract_state_dict(ckpt, param_key=args.param_key, source=str(args.input))
    skeleton = fitting_skeleton(network_g, state, source=args.input)  # shapes only, bounded by the file's tensors
    upscale = getattr(skeleton, "upscale", None)
    if scale is not None and upscale is not None and scale != upscale:
        raise CheckpointError(f"scale {scale} but network_g (which fits the weights) upscales by {upscale}")
    save_network_file(state, args.output, network_g, scale=scale or upscale)
    written = load_state_dict(args.output)
    if written.keys() != state.keys() or not all(torch.equal(written[k], state[k]) for k in state):
        raise CheckpointError(f"{args.output}: read back differs from {args.input}")
    return len(state)


@command(clear=(ValueError, OSError))
def main(argv: list[str] | None = None) -> int:
    """``lkdn-convert``: 0, or 1 after one ``error: ...`` line."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    refuse_overwriting_inputs({"--output": args.output}, {"--input": args.input, "-opt": args.opt})
    if args.output.is_dir():
        raise CommandError(f"--output {args.output} is a folder; give the file to write")
    count = convert(args)
    print(f"wrote {args.output}: {count} tensors, identical to {args.input}")
    return 0
