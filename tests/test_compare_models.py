"""scripts/compare_models.py: one table whose numbers are those of the individual runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shared_file

from lkdn import build_network
from lkdn.options import load_yaml

CONFIGS = ("options/test/LKDN/test_LKDN-S_del_rep_x4.yml", "options/test/RFDN/test_E-RFDN_x4.yml")
SET5 = {"test_LKDN-S_del_rep_x4": (32.11, 0.8938), "test_E-RFDN_x4": (32.16, 0.8946)}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    benchmarks = shared_file("benchmarks", "Set5", "x4").parents[1]  # <root>/Set5/x4/{HR,LR}
    pretrained = shared_file("pretrained", "LKDN", "LKDN-S_del_rep_x4.pth").parents[1]
    work = tmp_path_factory.mktemp("compare")
    args = [sys.executable, str(ROOT / "scripts" / "compare_models.py")]
    for config in CONFIGS:
        args += ["-opt", str(ROOT / config)]
    args += ["--datasets", "Set5", "--benchmark-root", str(benchmarks), "--weights-root", str(pretrained),
             "--output-size", "320x180", "--runs", "1", "--device", "cpu", "--workdir", str(work),
             "--json", str(work / "rows.json"), "--output", str(work / "table.md")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "rows.json").read_text()), (work / "table.md").read_text()


def test_rows_equal_the_individual_runs(comparison: tuple[Path, list[dict], str]) -> None:
    work, rows, table = comparison
    assert [row["name"] for row in rows] == list(SET5)
    for row, config in zip(rows, CONFIGS, strict=True):
        metrics = json.loads((work / "results" / row["name"] / "metrics.json").read_text())
        assert row["metrics"]["Set5"] == {"psnr": metrics["Set5"]["psnr"], "ssim": metrics["Set5"]["ssim"]}
        psnr, ssim = SET5[row["name"]]
        assert abs(row["metrics"]["Set5"]["psnr"] - psnr) <= 0.01
        assert abs(row["metrics"]["Set5"]["ssim"] - ssim) <= 0.0005
        net = build_network(load_yaml(ROOT / config)["network_g"])
        assert row["params"] == sum(p.numel() for p in net.parameters())
        assert row["runtime_ms"] > 0
        assert f"| {row['name']} | {row['params']:,} | {row['multi_adds_g']:.2f} |" in table
        assert f"{row['metrics']['Set5']['psnr']:.2f} / {row['metrics']['Set5']['ssim']:.4f}" in table


def test_readme_block_is_replaced(tmp_path: Path) -> None:
    from lkdn.commands.compare_models import replace_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- comparison:start -->\nold\n<!-- comparison:end -->\noutro\n")
    replace_block(readme, "| new |\n")
    assert readme.read_text() == "intro\n<!-- comparison:start -->\n| new |\n<!-- comparison:end -->\noutro\n"
    with pytest.raises(ValueError, match="no <!-- comparison:start -->"):
        replace_block(_without_block(tmp_path), "x")


def _without_block(tmp_path: Path) -> Path:
    path = tmp_path / "plain.md"
    path.write_text("no block here\n")
    return path
