"""End-to-end proof of the architecture: official LKDN x4 on Set5 gives the published numbers."""

import numpy as np
from conftest import OFFICIAL_LKDN, shared_file

from lkdn import build_network
from lkdn.evaluate import evaluate_folder
from lkdn.loading import load_network


def test_lkdn_x4_set5_psnr_ssim() -> None:
    opt, scale, psnr, ssim = OFFICIAL_LKDN["LKDN_x4"]
    net = load_network(build_network(opt), shared_file("pretrained", "LKDN", "LKDN_x4.pth"))
    root = shared_file("benchmarks", "Set5", "x4")
    per_image = evaluate_folder(net, root / "HR", root / "LR", scale=scale)
    assert len(per_image) == 5
    assert abs(np.mean([m["psnr"] for m in per_image.values()]) - psnr) <= 0.01
    assert abs(np.mean([m["ssim"] for m in per_image.values()]) - ssim) <= 0.0005
