"""Measure a network's cost: parameters, Multi-Adds, activations, FLOPs, runtime, peak memory.

    lkdn-profile -opt options/test/LKDN/test_LKDN_x4.yml                # 1280x720 output
    lkdn-profile -opt options/train/LKDN/train_LKDN-S_x4_from_scratch.yml --lr-size 320x180
    lkdn-profile -opt options/test/LKDN/test_LKDN_x4.yml --device cuda --ntire --json

Rows: the network as the YAML configures it, its deploy form (re-parameterized, input
replication folded) and, for runtime and memory only, the deploy form after
``lkdn.upscaler.optimize_network`` (what ``lkdn.Upscaler`` runs). Weights do not change any
of these numbers, so none are loaded. Multi-Adds count convolutions only (the papers'
convention); activations are the elements of all conv outputs and FLOPs come from fvcore on a
3x256x256 LR input (both NTIRE efficient-SR conventions). ``--ntire`` times as the NTIRE harness
does (FP32, autograd mode on with frozen weights, no warm-up, cudnn.benchmark off, CUDA events
around the forward, mean over ``--runs`` random images; wall time on the CPU, labelled so) and
adds the harness's own counts (``lkdn.profiling.ntire_counts``: params, fvcore FLOPs,
activations and convs of the Conv2d modules on 3x256x256) of the configured and deploy forms.
Definitions: docs/efficiency.md. Exit status 2 for bad arguments or options.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lkdn.utils import command, command_parser, parse_command_line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-profile", __doc__.splitlines()[0],
        ["lkdn-profile -opt options/test/LKDN/test_LKDN_x4.yml",
         "lkdn-profile -opt options/test/LKDN/test_LKDN_x4.yml --lr-size 320x180 --device cuda --ntire --json"])
    parser.add_argument("-opt", required=True, help="train or test option YAML (its network_g is profiled)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--lr-size", default=None, help="LR input size WIDTHxHEIGHT, e.g. 320x180")
    size.add_argument("--output-size", default=None, help="output size WIDTHxHEIGHT (default 1280x720, the papers')")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--runs", type=int, default=5, help="timed forward passes per form (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1; --ntire: 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--ntire", action="store_true", help="NTIRE runtime protocol (FP32, no warm-up, mean)")
    parser.add_argument("--no-timing", action="store_true", help="counts only (no runtime or memory)")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOPs (one 256x256 CPU forward)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    return parse_command_line(parser, argv)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-profile``: 0, or 2 after one ``error: ...`` line for a bad option or size."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    import torch

    from lkdn.archs import build_network
    from lkdn.images import check_input_size
    from lkdn.options import OptionsError, load_options
    from lkdn.profiling import lr_size_for_output, markdown_table, ntire_counts, parse_size, profile_network
    from lkdn.reparam import reparameterize_model
    from lkdn.upscaler import optimize_network, resolve_device

    try:
        opt = load_options(args.opt)
        net = build_network(opt.network_g).eval()
        scale = opt.scale
        if args.lr_size:
            lr_size = parse_size(args.lr_size)
        else:
            lr_size = lr_size_for_output(parse_size(args.output_size or "1280x720"), scale)
        device = resolve_device(args.device)
        if args.runs < 1:
            raise OptionsError(f"--runs must be at least 1, got {args.runs}")
        if args.threads is not None and args.threads < 1:
            raise OptionsError(f"--threads must be at least 1, got {args.threads}")
        flag = f"--lr-size {args.lr_size}" if args.lr_size else f"--output-size {args.output_size or '1280x720'}"
        check_input_size(net, (1, int(opt.network_g.get("num_in_ch", 3)), *lr_size), what=flag, device=device,
                         scale=scale)
    except ValueError as err:  # the options, the schema (both ValueErrors) and the sizes: status 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    in_channels = int(opt.network_g.get("num_in_ch", 3))
    common = {
        "lr_size": lr_size, "device": device, "runs": args.runs, "warmup": args.warmup, "ntire": args.ntire,
        "timing": not args.no_timing, "in_channels": in_channels,
    }
    deploy = reparameterize_model(net, fold_num_in=True).eval()
    profiles = [
        profile_network(net, form="as configured", flops=not args.no_flops, **common),
        profile_network(deploy, form="deploy (re-parameterized)", flops=not args.no_flops, **common),
    ]
    if not args.no_timing:
        optimized = optimize_network(deploy.to(device))

        def inference(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():  # what lkdn.Upscaler runs, also under the NTIRE timing
                return optimized(x)

        profiles.append(
            profile_network(
                deploy, form="deploy + optimize_network", flops=False, forward=inference, channels_last=True, **common
            )
        )
    harness = {}
    if args.ntire:  # the harness's counts, on 3x256x256, of the network as configured and of its deploy form
        harness = {form: ntire_counts(model, (1, in_channels, 256, 256), flops=not args.no_flops).as_row()
                   for form, model in (("as configured", net), ("deploy (re-parameterized)", deploy))}
    if args.json:
        report = {
            "config": str(args.opt), "network": opt.network_g.get("type"), "scale": scale,
            "lr_size": {"height": lr_size[0], "width": lr_size[1]}, "device": str(device),
            "threads": torch.get_num_threads(), "ntire_protocol": args.ntire,
            "runtime": "CUDA events" if device.type == "cuda" else "wall time (CPU)",
            "profiles": [p.as_dict() for p in profiles], "ntire_counts": harness,
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"{opt.network_g.get('type')} from {args.opt} on {device} ({torch.get_num_threads()} threads; "
              f"runtime: {'CUDA events' if device.type == 'cuda' else 'wall time'})")
        print(markdown_table(profiles, lr_size=lr_size, scale=scale))
        if harness:
            print("\nNTIRE harness counts (3x256x256 input; params M, fvcore FLOPs G, activations M, convs):")
            for form, row in harness.items():
                flops = "n/a" if row["flops_g"] is None else f"{row['flops_g']:.2f}"
                print(f"  {form}: {row['params_m']:.6f} M, {flops} G, {row['activations_m']:.2f} M, {row['convs']} convs")
    return 0

