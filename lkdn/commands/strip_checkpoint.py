"""Keep only the network weights of a checkpoint (e.g. drop ``params`` and keep ``params_ema``).

    lkdn-strip-checkpoint --input net_g_latest.pth --output LKDN_x4_ema.pth
    lkdn-strip-checkpoint --input net_g_latest.pth --output LKDN_x4.safetensors --param-key params

A BasicSR checkpoint ``{'params': ..., 'params_ema': ..., <anything else>}`` becomes
``{'params_ema': ...}`` (``--param-key params_ema``, the default; falls back to ``params`` when the
file has no EMA weights), ``{'params': ...}`` or both (``--param-key both``); the key names are kept
so the same ``param_key_g`` loads it. A bare state dict is kept as it is. ``.safetensors`` output
holds one flat state dict. ``module.`` prefixes are removed. The file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lkdn.utils import OutputIsInputError, command, command_parser, parse_command_line, refuse_overwriting_inputs

CHOICES = ("params_ema", "params", "both")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = command_parser(
        "lkdn-strip-checkpoint", __doc__,
        ["lkdn-strip-checkpoint --input net_g_latest.pth --output LKDN_x4_ema.pth",
         "lkdn-strip-checkpoint --input net_g_latest.pth --output LKDN_x4.safetensors --param-key params"])
    parser.add_argument("--input", required=True, type=Path, help="checkpoint to strip (.pth or .safetensors)")
    parser.add_argument("--output", required=True, type=Path, help="checkpoint to write (.pth or .safetensors)")
    parser.add_argument(
        "--param-key", choices=CHOICES, default="params_ema",
        help="weights to keep (default params_ema, or params when the file has no params_ema)",
    )
    parser.add_argument("--in-place", action="store_true", help="allow --output to be --input (replaced atomically)")
    return parse_command_line(parser, argv)


def is_state_dict(obj: Any) -> bool:
    import torch  # the command line is parsed before torch is imported, so --help is fast

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip(ckpt: Any, *, param_key: str, source: str = "checkpoint") -> dict[str, Any]:
    """The part of ``ckpt`` to keep: ``{key: state_dict}`` for the chosen keys, or the bare state dict."""
    from lkdn.checkpoint import PREFERRED_KEYS, CheckpointError, extract_state_dict

    if is_state_dict(ckpt):
        return extract_state_dict(ckpt, source=source)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(ckpt).__name__}")
    available = [k for k in PREFERRED_KEYS if is_state_dict(ckpt.get(k))]
    if param_key == "both":
        keys = list(PREFERRED_KEYS)
    elif param_key == "params_ema" and "params_ema" not in available and "params" in available:
        print(f"{source}: no params_ema, keeping params")
        keys = ["params"]
    else:
        keys = [param_key]
    missing = [k for k in keys if k not in available]
    if missing:
        raise CheckpointError(
            f"{source}: no state dict under {', '.join(repr(k) for k in missing)}; top-level keys: {list(ckpt)}"
        )
    return {k: extract_state_dict(ckpt[k], source=f"{source}[{k!r}]") for k in keys}


def describe(obj: Mapping[str, Any]) -> str:
    if is_state_dict(obj):
        return f"bare state dict, {sum(v.numel() for v in obj.values()):,d} values"
    parts = []
    for key, value in obj.items():
        if is_state_dict(value):
            parts.append(f"{key} ({len(value)} tensors, {sum(v.numel() for v in value.values()):,d} values)")
        else:
            parts.append(f"{key} ({type(value).__name__})")
    return ", ".join(parts)


@command
def main(argv: Sequence[str] | None = None) -> int:
    """``lkdn-strip-checkpoint``: 0, or 2 after one ``error: ...`` line (a bad checkpoint, --output is --input)."""
    args = parse_args(argv)  # parsed before torch is imported, so --help is fast
    from lkdn.checkpoint import SAFETENSORS_SUFFIX, CheckpointError, load_file, save_file

    try:
        if not args.in_place:
            refuse_overwriting_inputs({"--output": args.output}, {"--input": args.input})
    except OutputIsInputError:
        print(f"error: --output is --input ({args.input}); write another file, or add --in-place to replace it",
              file=sys.stderr)
        return 2
    try:
        ckpt = load_file(args.input)
        kept = strip(ckpt, param_key=args.param_key, source=str(args.input))
        if args.output.suffix == SAFETENSORS_SUFFIX and not is_state_dict(kept):
            if len(kept) != 1:
                raise CheckpointError(
                    f"{args.output}: a .safetensors file holds one flat state dict; choose --param-key params_ema "
                    "or params, or write a .pth"
                )
            kept = next(iter(kept.values()))
        size_before = args.input.stat().st_size
        save_file(kept, args.output)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size_after = args.output.stat().st_size
    print(f"input  {args.input}: {size_before / 1e6:.2f} MB; {describe(ckpt) if isinstance(ckpt, Mapping) else ''}")
    print(f"output {args.output}: {size_after / 1e6:.2f} MB ({100 * size_after / size_before:.0f}%); {describe(kept)}")
    return 0

