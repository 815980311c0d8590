"""benchmarks/gpu_check.py on the CPU: the one-line refusal without a GPU, the dry run's report (every
section, real numbers), and a failing or hanging step reported while the others still run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("environment", "correctness", "numerics", "counts", "inference", "training", "training_loader", "resume",
            "distributed", "sigterm", "oom", "inference_compile", "training_compile")


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKDN_GPU_CHECK_")}
    env.update(LKDN_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_non_zero(tmp_path: Path, capsys, monkeypatch) -> None:
    gpu_check = load_script()
    monkeypatch.setattr(gpu_check, "gpu_count", lambda: 0)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU visible" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()


def test_step_names_and_budgets_are_checked(tmp_path: Path) -> None:
    gpu_check = load_script()
    assert tuple(s.name for s in gpu_check.STEPS) == SECTIONS
    assert sum(s.budget_s for s in gpu_check.STEPS) <= gpu_check.LIMIT_S < 8 * 60
    with pytest.raises(SystemExit, match="unknown step"):
        gpu_check.parse_args(["--only", "nonsense", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="STEP=SECONDS"):
        gpu_check.parse_args(["--budget", "oom", "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    return run_script("--dry-run", "--out", str(out)), out


@pytest.mark.slow
def test_dry_run_writes_every_section_with_real_numbers(dry_run) -> None:
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["dry_run"] is True
    assert report["wall_s"] < 120, f"the dry run took {report['wall_s']:.0f} s (must stay under 2 minutes)"
    sections = report["sections"]
    assert set(SECTIONS) <= set(sections)
    for name in SECTIONS:
        section = sections[name]
        assert section["status"] == "passed", (name, section.get("error"), section.get("traceback"))
        assert section["results"] and section["checks"], name
        assert 0 < section["seconds"] <= section["timeout_s"], name
        assert (out / section["log"]).is_file()

    env = sections["environment"]["results"]
    assert env["environment"]["torch"] and env["torch_gate"]["result"] == "ok"

    correctness = sections["correctness"]["results"]["models"]
    assert len(correctness) == 6
    for row in correctness.values():
        for where in ("cuda", "cpu"):
            assert positive(row[where]["psnr"]) and -1 <= row[where]["ssim"] <= 1, row
        assert abs(row["cuda"]["psnr"] - row["cpu"]["psnr"]) <= 0.01

    for row in sections["numerics"]["results"]["models"].values():
        assert finite(row["fp32"]["max_abs"]) and row["fp32"]["max_abs"] <= 1e-4
        for precision in ("bf16", "fp16"):
            assert positive(row[precision]["max_abs"]) and row[precision]["finite"], (row["label"], precision)
        assert finite(row["tiles"]["max_abs"]) and row["tiles"]["max_abs"] <= 1e-5

    fvcore = importlib.util.find_spec("fvcore") is not None
    for row in sections["counts"]["results"]["models"].values():
        assert positive(row["params"]) and positive(row["activations_m"]) and positive(row["convs"])
        assert positive(row["flops_g"]) if fvcore else row["flops_g"] is None

    for row in sections["inference"]["results"]["models"].values():
        assert len(row["sizes"]) == 2
        for table in row["sizes"].values():
            assert len(table) == 6
            for entry in table.values():
                assert positive(entry["ms"]) and positive(entry["peak_mb"]), entry

    training = sections["training"]["results"]["settings"]
    assert len(training) == 6
    for row in training.values():
        assert positive(row["it_per_s"]) and positive(row["final_loss"]), row

    loader = sections["training_loader"]["results"]["result"]
    assert loader["exit_status"] == 0 and positive(loader["it_per_s"]) and finite(loader["data_fraction"])

    resume = sections["resume"]["results"]["result"]
    assert resume["bit_identical"] is True and resume["max_abs_diff"] == 0 and resume["logged_losses_equal"]

    assert sections["distributed"]["results"]["result"]["exit_status"] == 0
    sigterm = sections["sigterm"]["results"]["result"]
    assert sigterm["exit_status"] == 143 and sigterm["state_iter"] >= 1 and sigterm["resume_exit_status"] == 0

    oom = sections["oom"]["results"]["result"]
    assert oom["retries"] >= 1 and oom["max_abs_vs_reference"] <= 1e-5

    for row in sections["inference_compile"]["results"]["models"].values():
        assert positive(row["compile_s"]) and positive(row["compiled_ms"])
    for row in sections["training_compile"]["results"]["settings"].values():
        assert positive(row["compile_s"]) and positive(row["it_per_s"])

    markdown = (out / "report.md").read_text()
    assert "DRY RUN" in markdown and "NTIRE 2026 published" in markdown
    for section in sections.values():
        assert f"### {section['title']}" in markdown


@pytest.mark.slow
def test_a_failing_and_a_hanging_step_are_reported_and_the_others_still_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env_fail = {"LKDN_GPU_CHECK_FAIL": "numerics"}  # through the environment variable; the hang through the flag
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--only", "numerics", "counts", "oom",
         "--hang", "oom", "--budget", "oom=12", "--budget", "numerics=40", "--budget", "counts=40",
         "--isolation", "spawn"],
        cwd=ROOT, env={**os.environ, "LKDN_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", **env_fail},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    sections = json.loads((out / "report.json").read_text())["sections"]
    assert sections["numerics"]["status"] == "error"
    assert "injected failure in step numerics" in sections["numerics"]["error"]
    assert sections["counts"]["status"] == "passed"  # runs after the failure
    assert all(positive(r["params"]) for r in sections["counts"]["results"]["models"].values())
    assert sections["oom"]["status"] == "timeout" and sections["oom"]["seconds"] < 20
    assert {n for n, s in sections.items() if s["status"] == "skipped"} == set(SECTIONS) - {"numerics", "counts", "oom"}
    markdown = (out / "report.md").read_text()
    assert "Status: **error** (InjectedFailureError" in markdown and "Status: **timeout**" in markdown
