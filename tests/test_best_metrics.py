"""``BestMetrics``: the best value and iteration of each validation metric, kept across a resume."""

from __future__ import annotations

import pytest

from lkdn.training.pipeline import BestMetrics

METRICS = {"psnr": {"type": "calculate_psnr"}, "lpips": {"type": "lpips", "better": "lower"}}


def test_higher_and_lower_metrics_keep_their_best_and_ties_move_the_iteration() -> None:
    best = BestMetrics(METRICS)
    best.update("Set5", {"psnr": 30.0, "lpips": 0.2}, 100)
    best.update("Set5", {"psnr": 29.0, "lpips": 0.3}, 200)
    record = best.update("Set5", {"psnr": 30.0, "lpips": 0.1}, 300)
    assert record == {"psnr": {"val": 30.0, "iter": 300}, "lpips": {"val": 0.1, "iter": 300}}


def test_each_validation_set_has_its_own_record_and_the_state_round_trips() -> None:
    best = BestMetrics(METRICS)
    best.update("Set5", {"psnr": 30.0}, 100)
    best.update("Set14", {"psnr": 27.0}, 100)
    restored = BestMetrics(METRICS)
    restored.load_state_dict(best.state_dict())
    assert restored.update("Set14", {"psnr": 26.0}, 200) == {"psnr": {"val": 27.0, "iter": 100}}
    assert restored.results["Set5"] == {"psnr": {"val": 30.0, "iter": 100}}


def test_a_better_other_than_higher_or_lower_names_the_metric() -> None:
    with pytest.raises(ValueError, match=r"val\.metrics\.ssim\.better: expected higher or lower, got 'up'"):
        BestMetrics({"ssim": {"better": "up"}})
