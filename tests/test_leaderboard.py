"""scripts/leaderboard.py: the table's numbers are those of the individual functions, cached per entry.

Two tiny random networks (SPAN c4 as the baseline, LKDN-S in its training form) on a synthetic
two-image Set5, a network whose option file is missing and one whose weights are missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import load_script

import lkdn.leaderboard as leaderboard
from lkdn import build_network
from lkdn.checkpoint import save_file
from lkdn.evaluate import protocol_metrics
from lkdn.profiling import measure_runtime, ntire_counts
from lkdn.reparam import reparameterize_model

NETWORKS = {
    "base": {"type": "SPAN", "feature_channels": 4, "deploy": True, "upscale": 4},
    "team": {"type": "LKDN_S", "conv": "BSConvU_rep", "upsampler": "pixelshuffle_rep", "num_feat": 4, "num_atten": 4,
             "num_block": 1, "upscale": 4},
}
ARGS = ["--lr-size", "24x16", "--runs", "3", "--warmup", "0", "--device", "cpu"]


def write_set(root: Path) -> Path:
    """A two-image Set5 in <root>/Set5/x4/{HR,LR}."""
    rng = np.random.default_rng(3)
    folder = root / "Set5" / "x4"
    (folder / "HR").mkdir(parents=True)
    (folder / "LR").mkdir()
    for name in ("a", "b"):
        hr = cv2.resize(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), (28, 24), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / "HR" / f"{name}.png"), hr)
        cv2.imwrite(str(folder / "LR" / f"{name}.png"), cv2.resize(hr, (7, 6), interpolation=cv2.INTER_AREA))
    return root


def write_options(folder: Path, name: str, network: dict, *, weights: bool = True) -> Path:
    torch.manual_seed(len(name))
    if weights:
        save_file({"params": build_network(network).state_dict()}, folder / f"{name}.pth")
    opt = {"name": name, "scale": 4, "network_g": network, "path": {"pretrain_network_g": str(folder / f"{name}.pth")},
           "datasets": {"test_1": {"name": "Set5", "type": "PairedImageDataset", "dataroot_gt": "nowhere/HR",
                                   "dataroot_lq": "nowhere/LR", "io_backend": {"type": "disk"}}}}
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The first run; the tests that run again do so on the same thread count (part of the cache key)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("leaderboard")
    bench = write_set(tmp / "bench")
    ymls = {name: write_options(tmp, name, network) for name, network in NETWORKS.items()}
    ymls["noweights"] = write_options(tmp, "noweights", NETWORKS["team"], weights=False)
    ymls["missing"] = tmp / "missing.yml"
    readme = tmp / "README.md"
    readme.write_text("# x\n\n<!-- leaderboard:start -->\nold\n<!-- leaderboard:end -->\n\nafter\n")
    out = tmp / "out"
    argv = [*ARGS, "--output", str(out), "--benchmark-root", str(bench), "--baseline", str(ymls["base"]),
            "--readme", str(readme)]
    for name in ("base", "team", "missing", "noweights"):
        argv += ["-opt", str(ymls[name])]
    script = load_script("scripts/leaderboard.py")
    assert script.main(argv) == 0
    yield {"tmp": tmp, "bench": bench, "ymls": ymls, "out": out, "argv": argv, "script": script, "readme": readme,
           "report": json.loads((out / "results.json").read_text())}
    torch.set_num_threads(threads)


def test_counts_are_those_of_the_harness_on_the_form_that_runs(board: dict) -> None:
    rows = {row["label"]: row for row in board["report"]["rows"]}
    assert list(rows) == ["base", "team"]
    for name, row in rows.items():
        deploy = reparameterize_model(build_network(NETWORKS[name]))
        counts = ntire_counts(deploy)
        assert row["params"] == counts.params == sum(p.numel() for p in deploy.parameters())
        assert row["flops_g"] == counts.flops / 1e9 and row["convs"] == counts.convs
        assert row["activations_m"] == counts.activations / 1e6
    # LKDN-S is measured folded: fewer parameters than as configured
    assert rows["team"]["params"] < rows["team"]["configured_params"]
    runtime = rows["team"]["runtime"]
    assert runtime["runs"] == 3 and runtime["min_ms"] <= runtime["median_ms"] <= runtime["max_ms"]
    assert runtime["timer"] == "wall time (CPU)"


def test_psnr_and_ssim_are_those_of_lkdn_test(board: dict, restore_logging: None) -> None:
    from lkdn import test as lkdn_test

    folder = board["bench"] / "Set5" / "x4"
    for name in NETWORKS:
        opt = yaml.safe_load(board["ymls"][name].read_text())
        opt["datasets"]["test_1"].update(dataroot_gt=str(folder / "HR"), dataroot_lq=str(folder / "LR"))
        opt["val"] = {"metrics": protocol_metrics(4)}
        yml = board["tmp"] / f"direct_{name}.yml"
        yml.write_text(yaml.safe_dump(opt, sort_keys=False))
        direct = lkdn_test.score(["-opt", str(yml), "--root", str(board["tmp"] / "direct"), "--device", "cpu"])["Set5"]
        row = next(r for r in board["report"]["rows"] if r["label"] == name)
        assert row["metrics"] == {"Set5": {"psnr": direct["psnr"], "ssim": direct["ssim"], "images": 2}}


def test_the_baseline_scores_e_squared_and_the_others_by_the_rule(board: dict) -> None:
    from lkdn.ntire import challenge_score

    base, team = board["report"]["rows"]
    assert base["score"] == pytest.approx({"runtime": math.e**2, "flops": math.e**2, "params": math.e**2,
                                           "final": math.e**2}, rel=1e-12)
    expected = challenge_score(
        {"runtime": team["runtime"]["median_ms"], "flops": team["flops_g"], "params": team["params"] / 1e6},
        {"runtime": base["runtime"]["median_ms"], "flops": base["flops_g"], "params": base["params"] / 1e6}, year=2026)
    assert team["score"] == pytest.approx(expected, rel=1e-12)


def test_missing_entries_are_listed_with_the_reason(board: dict) -> None:
    skipped = {s["label"]: s["reason"] for s in board["report"]["skipped"]}
    assert set(skipped) == {"missing", "noweights"}
    assert skipped["missing"] == f"option file not found: {board['ymls']['missing']}"
    assert str(board["tmp"] / "noweights.pth") in skipped["noweights"]
    table = (board["out"] / "results.md").read_text()
    assert f"- missing: option file not found: {board['ymls']['missing']}" in table
    assert "| **base** (baseline) |" in table and "| team |" in table
    assert "load average (1 minute) when the networks were timed" in table  # how busy the machine was


def test_the_figure_plots_one_point_per_network(board: dict) -> None:
    points = board["report"]["figure"]["points"]
    rows = {row["label"]: row for row in board["report"]["rows"]}
    assert set(points) == {"params", "flops", "runtime"}
    for panel, data in points.items():
        assert [p[0] for p in data] == ["base", "team"], panel
    for label, x, y in points["runtime"]:
        assert (x, y) == (rows[label]["runtime"]["median_ms"], rows[label]["metrics"]["Set5"]["psnr"])
    assert [p[1] for p in points["params"]] == [rows[label]["params"] / 1e3 for label in ("base", "team")]
    assert (board["out"] / "psnr_vs_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_block_is_replaced(board: dict) -> None:
    text = board["readme"].read_text()
    assert "\nold\n" not in text and text.endswith("<!-- leaderboard:end -->\n\nafter\n") and "| team |" in text


def count_measures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the entries ``leaderboard.measure`` measures from now on, in order (it still measures)."""
    calls: list[str] = []
    measure = leaderboard.measure

    def counting(source: Path, *args: object, **kwargs: object) -> dict:
        calls.append(source.stem)
        return measure(source, *args, **kwargs)

    monkeypatch.setattr(leaderboard, "measure", counting)
    return calls


def test_a_rerun_uses_the_cache_and_force_measures_again(board: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_measures(monkeypatch)
    cache = board["out"] / "entries" / "team.json"
    before = cache.stat().st_mtime_ns
    assert board["script"].main(board["argv"]) == 0
    assert calls == [] and cache.stat().st_mtime_ns == before
    assert json.loads((board["out"] / "results.json").read_text())["rows"] == board["report"]["rows"]
    # a changed option file measures that entry again, and only it
    yml = board["ymls"]["team"]
    yml.write_text(yml.read_text() + "# changed\n")
    assert board["script"].main(board["argv"]) == 0
    assert calls == ["team"]
    assert board["script"].main([*board["argv"], "--force"]) == 0
    assert calls == ["team", "base", "team"]


def test_bad_arguments_are_one_line_errors(board: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert board["script"].main([*board["argv"], "--zoo", str(plain)]) == 2
    assert f"--zoo {plain}: no <!-- leaderboard:start -->" in capsys.readouterr().err
    assert board["script"].main([*board["argv"], "--lr-size", "320"]) == 2
    assert "got '320'" in capsys.readouterr().err


def test_the_zoo_lists_every_x4_network_once() -> None:
    paths = [entry.options for entry in leaderboard.ZOO]
    assert len(paths) == len(set(paths)) == 16
    assert leaderboard.DEFAULT_BASELINE in paths
    assert all("_x2" not in path.name and "_x3" not in path.name for path in paths)


def test_measure_runtime_keeps_every_time_when_asked() -> None:
    timing = measure_runtime(lambda t: t * 2, torch.rand(4, 4), runs=4, warmup=0, keep_times=True)
    assert len(timing["times_ms"]) == 4 and timing["min_ms"] == min(timing["times_ms"])
    summary = leaderboard.runtime_summary([3.0, 1.0, 2.0, 10.0], torch.device("cpu"))
    assert (summary["median_ms"], summary["min_ms"], summary["max_ms"], summary["runs"]) == (2.5, 1.0, 10.0, 4)


def test_a_benchmark_set_that_appears_is_measured(board: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    calls = count_measures(monkeypatch)
    shutil.copytree(board["bench"] / "Set5", board["bench"] / "Set14")
    assert board["script"].main(board["argv"]) == 0
    assert sorted(calls) == ["base", "team"]
    rows = json.loads((board["out"] / "results.json").read_text())["rows"]
    assert all(list(row["metrics"]) == ["Set5", "Set14"] and row["metrics"]["Set14"] == row["metrics"]["Set5"]
               for row in rows)
    assert "| Set5 PSNR / SSIM | Set14 PSNR / SSIM |" in (board["out"] / "results.md").read_text()
