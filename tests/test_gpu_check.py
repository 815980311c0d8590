"""benchmarks/gpu_check.py and tests/gpu on the CPU: the one-line refusal without a GPU, the gpu tests skipped at
once without CUDA, a failure and a skip reported with their messages, the deadline, and the dry run's report."""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
GPU_TESTS = {"test_environment": 1, "test_published_numbers_on_cuda": 6, "test_upscaler_precisions_and_tiles": 6,
             "test_amp_and_channels_last_training": 1, "test_compiled_upscaler": 1, "test_compiled_training": 1,
             "test_exact_resume_under_cudnn": 1, "test_torchrun_with_nccl": 1,
             "test_sigterm_saves_a_state_and_auto_resume_continues": 1, "test_training_through_the_lmdb_loader": 1,
             "test_out_of_memory_falls_back_to_tiles": 1}


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_gpu_tests(tmp_path: Path, *args: str, **env: str) -> list[dict[str, Any]]:
    """pytest on tests/gpu without CUDA; the test cases of its junit XML."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LKDN_GPU_CHECK_")}
    clean.update(CUDA_VISIBLE_DEVICES="", LKDN_OFFLINE="1", LKDN_GPU_CHECK_WORK=str(tmp_path / "work"), **env)
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "--noconftest", "-p", "no:cacheprovider", "tests/gpu", *args,
                    f"--junitxml={junit}", "-o", "junit_family=xunit1"], cwd=ROOT, env=clean, capture_output=True,
                   timeout=120)
    return load_script().read_junit(junit)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path: Path, capsys, monkeypatch) -> None:
    gpu_check = load_script()
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU visible" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "out").exists()


def test_without_cuda_every_gpu_test_is_skipped_at_once(tmp_path: Path) -> None:
    cases = run_gpu_tests(tmp_path)
    assert len(cases) == sum(GPU_TESTS.values())
    for name, count in GPU_TESTS.items():
        assert sum(1 for c in cases if c["name"].split("[")[0] == name) == count, name
    for case in cases:
        assert case["status"] == "skipped" and "needs a CUDA GPU" in case["message"], case
        assert case["seconds"] < 1, case  # a skip at collection, before any fixture or import


def test_no_gpu_test_starts_after_the_deadline(tmp_path: Path) -> None:
    cases = run_gpu_tests(tmp_path, "-k", "environment or out_of_memory", LKDN_GPU_CHECK_DRY="1",
                          LKDN_GPU_CHECK_DEADLINE=str(time.time() - 1))
    assert [c["name"] for c in cases] == ["test_environment", "test_out_of_memory_falls_back_to_tiles"]
    assert all(c["status"] == "skipped" and "no time left" in c["message"] for c in cases), cases


def test_a_check_over_its_time_limit_is_stopped_with_a_message() -> None:
    gpu_check = load_script()
    with pytest.raises(TimeoutError, match=r"^over its 0\.3 s limit$"), gpu_check.time_limit(0.3):
        time.sleep(30)
    with gpu_check.time_limit(0.2):  # within its limit: nothing is raised, and the timer is off afterwards
        pass
    time.sleep(0.4)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="t" name="test_a[LKDN_x4]" time="1.5"><properties><property name="fp32_max_abs" value="2e-05"/>
<property name="gpu" value="NVIDIA H100"/></properties></testcase>
<testcase classname="t" name="test_b" time="0.2"><failure message="AssertionError: LKDN x4: fp16: max abs 0.3 (limit 0.01)">
trace</failure></testcase>
<testcase classname="t" name="test_c" time="0.0"><skipped type="pytest.skip" message="needs two GPUs">x</skipped></testcase>
</testsuite></testsuites>"""


def test_the_report_says_per_check_passed_failed_or_skipped_with_its_message_and_numbers(tmp_path: Path) -> None:
    gpu_check = load_script()
    (tmp_path / "junit.xml").write_text(JUNIT)
    cases = gpu_check.read_junit(tmp_path / "junit.xml")
    assert [(c["name"], c["status"]) for c in cases] == [("test_a[LKDN_x4]", "passed"), ("test_b", "failed"),
                                                         ("test_c", "skipped")]
    assert cases[0]["properties"] == {"fp32_max_abs": 2e-05, "gpu": "NVIDIA H100"} and cases[0]["seconds"] == 1.5
    assert cases[1]["message"] == "AssertionError: LKDN x4: fp16: max abs 0.3 (limit 0.01)"
    assert cases[2]["message"] == "needs two GPUs"
    report = {"dry_run": False, "started": "now", "wall_s": 3.0, "environment": {"gpu": "NVIDIA H100", "torch": "2.11",
              "cuda_runtime": "12.8", "python": "3.12"}, "tests": cases, "pytest": {"status": 1},
              "counts": {"passed": 1, "failed": 1, "skipped": 1},
              "benches": {"b": {"status": "failed", "message": "over its 60 s limit"}}}
    text = gpu_check.markdown(report)
    assert "| `test_a[LKDN_x4]` | passed | 1.5 | fp32_max_abs 2e-05; gpu NVIDIA H100 |" in text
    assert "| `test_b` | failed | 0.2 | AssertionError: LKDN x4: fp16: max abs 0.3 (limit 0.01) |" in text
    assert "| `test_c` | skipped | 0.0 | needs two GPUs |" in text
    assert "failed: over its 60 s limit" in text and "1 passed, 1 failed, 1 skipped" in text


@pytest.mark.slow
def test_the_dry_run_passes_every_check_and_reports_the_numbers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKDN_GPU_CHECK_")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")], cwd=ROOT,
                          env={**env, "CUDA_VISIBLE_DEVICES": "", "LKDN_SHARED": "/nonexistent"}, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    cases = {c["name"]: c for c in report["tests"]}
    assert len(cases) == sum(GPU_TESTS.values()) - 2 * 3  # the dry run's 3 models instead of 6
    for name, case in cases.items():
        if name.startswith("test_published_numbers_on_cuda"):  # random weights: CUDA vs CPU only
            assert case["status"] == "skipped" and "published weights or Set5 not found" in case["message"], case
            assert case["properties"]["psnr"] == case["properties"]["psnr_cpu"] > 0
        else:
            assert case["status"] == "passed", case
    precisions = cases["test_upscaler_precisions_and_tiles[LKDN_x4]"]["properties"]
    assert precisions["fp32_max_abs"] == 0 and precisions["tiles_max_abs"] <= 1e-5
    training = cases["test_amp_and_channels_last_training"]["properties"]
    assert all(math.isfinite(v) and v >= 0 for v in training.values()) and len(training) == 13
    assert cases["test_exact_resume_under_cudnn"]["properties"] == {"max_abs_weight_diff": 0, "bit_identical": True}
    assert cases["test_out_of_memory_falls_back_to_tiles"]["properties"]["retries"] >= 1
    ntire = report["benches"]["NTIRE harness runtime (ours and the zoo)"]
    assert ntire["status"] == "passed"
    rows = ntire["results"]["rows"]
    assert len(glob.glob(str(ROOT / "options/test/*/test_*NTIRE*.yml"))) == 11
    assert len(rows) == 11 + 2 and {"LKDN_x4", "LKDN-S_x4"} < set(rows)  # with our dry-run models
    assert rows["SPAN_NTIRE_ESR_c28_x4"]["official_2026_ms"] == 7.74
    assert all(r["runtime_ms"] > 0 and r["params_m"] > 0 for r in rows.values())
    inference = report["benches"]["inference speed and memory"]["results"]["rows"]
    assert len(inference) == 3 and all(v > 0 for row in inference.values() for v in row.values())
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "DRY RUN" in markdown and "SPAN c28: 7.74 ms" in markdown
    assert all(f"`{name}`" in markdown for name in cases)
