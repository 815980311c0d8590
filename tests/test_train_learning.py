"""A short learning proof: LKDN-S and a small SPAN (training forms) trained from scratch on patches of
four images beat bicubic upscaling on two held-out images (x4, PSNR on Y, crop_border 4) after 500
(LKDN-S) and 1500 (SPAN) iterations (batches of 8 LR patches of 12x12, Adam with 50 warm-up iterations and cosine decay, L1).

Run ``pytest tests/test_train_learning.py -s`` to see the numbers.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from test_train_common import TINY_YAML, make_pairs, read_jsonl, run_training  # noqa: F401 (fixture)

from lkdn import build_network
from lkdn.evaluate import evaluate_folder, image_metrics
from lkdn.loading import load_network

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

SCALE = 4
TRAIN_IMAGES = ("astronaut", "coffee", "rocket", "immunohistochemistry")
HELD_OUT = ("chelsea", "hubble_deep_field")
# training forms; learning rate; iterations (SPAN, without LKDN's input replication and pixel norm, starts slower)
NETWORKS = {
    "LKDN-S": ({"type": "LKDN_S", "upscale": SCALE, "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "num_in": 4},
               4e-3, 500),
    "SPAN": ({"type": "SPAN", "feature_channels": 16, "upscale": SCALE}, 4e-3, 1500),
}


def bicubic_psnr(hr_dir: Path, lr_dir: Path) -> dict[str, float]:
    """PSNR of MATLAB-style bicubic upscaling of each LR image."""
    from basicsr.utils.matlab_functions import imresize

    results = {}
    for path in sorted(hr_dir.iterdir()):
        hr, lr = cv2.imread(str(path)), cv2.imread(str(lr_dir / path.name))
        up = (np.clip(imresize(lr.astype(np.float64) / 255.0, SCALE), 0, 1) * 255.0).round().astype(np.uint8)
        results[path.stem] = image_metrics(up, hr, crop_border=SCALE)["psnr"]
    return results


@pytest.mark.parametrize("family", sorted(NETWORKS))
def test_training_from_scratch_beats_bicubic_on_held_out_images(tmp_path: Path, family: str) -> None:
    network, lr, iterations = NETWORKS[family]
    train_hr, train_lr = make_pairs(tmp_path / "train", scale=SCALE, size=240, names=TRAIN_IMAGES, offset=100)
    val_hr, val_lr = make_pairs(tmp_path / "held_out", scale=SCALE, size=120, names=HELD_OUT, offset=80)

    opt = yaml.safe_load(TINY_YAML.format(name="learn", hr=train_hr, lr=train_lr))
    opt["scale"] = SCALE
    opt["network_g"] = network
    opt["datasets"]["train"].update(gt_size=12 * SCALE, batch_size_per_gpu=8, dataset_enlarge_ratio=100)
    opt["datasets"]["val"].update(name="held_out", dataroot_gt=str(val_hr), dataroot_lq=str(val_lr))
    opt["train"].update(
        ema_decay=0, total_iter=iterations, warmup_iter=50,
        optim_g={"type": "Adam", "lr": lr, "betas": [0.9, 0.99]},
        scheduler={"type": "CosineAnnealingLR", "T_max": iterations, "eta_min": 1e-5},
    )
    opt["val"].update(val_freq=iterations)
    for metric in opt["val"]["metrics"].values():
        metric["crop_border"] = SCALE
    opt["logger"].update(print_freq=100, save_checkpoint_freq=iterations, use_tb_logger=False)
    options = tmp_path / "learn.yml"
    options.write_text(yaml.safe_dump(opt))
    assert run_training(options, tmp_path) == 0

    net = load_network(build_network(network), tmp_path / "experiments" / "learn" / "models" / "net_g_latest.pth")
    trained = {k: v["psnr"] for k, v in evaluate_folder(net, val_hr, val_lr, scale=SCALE).items()}
    bicubic = bicubic_psnr(val_hr, val_lr)
    mean_trained, mean_bicubic = np.mean(list(trained.values())), np.mean(list(bicubic.values()))
    print(f"\nheld-out PSNR (Y, x{SCALE}) after {iterations} iterations: {family} {mean_trained:.2f} dB "
          f"{trained}, bicubic {mean_bicubic:.2f} dB {bicubic}")
    (record,) = read_jsonl(tmp_path / "experiments" / "learn" / "metrics.jsonl")
    assert abs(record["psnr"] - mean_trained) < 1e-6  # validation during training measured the same
    assert mean_trained > mean_bicubic, (trained, bicubic)
