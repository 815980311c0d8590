"""`make demo` (interim): LKDN-S training form -> deploy form on a bundled photograph.

Builds LKDN-S in its training form (RBSB blocks, re-parameterizable upsampler) with random
weights, folds it into the deploy form, checks both agree, and super-resolves a photograph
bundled with scikit-image with both, printing parameters and CPU time per image. Random
weights show the mechanics only; training on built-in data replaces this with the demo issue.
"""

from __future__ import annotations

import time

import torch
from skimage import data

from lkdn import build_network
from lkdn.reparam import reparameterize_model


def main() -> None:
    torch.manual_seed(0)
    image = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1)[None].float() / 255
    train = build_network({"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep"}).eval()
    deploy = reparameterize_model(train, fold_num_in=True)
    print(f"input: scikit-image astronaut, {tuple(image.shape[2:])} -> x4")
    rows = []
    with torch.inference_mode():
        for name, net in (("training form", train), ("deploy form", deploy)):
            net(image)  # warm-up
            start = time.perf_counter()
            out = net(image)
            rows.append((name, sum(p.numel() for p in net.parameters()), time.perf_counter() - start, out))
    for name, params, seconds, out in rows:
        print(f"{name:14s} params {params:>8,d}  CPU {seconds * 1000:7.1f} ms  output {tuple(out.shape)}")
    diff = (rows[0][3] - rows[1][3]).abs().max().item()
    print(f"max |training - deploy| = {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("deploy form does not match the training form")


if __name__ == "__main__":
    main()
