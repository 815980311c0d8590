"""``benchmarks/bench_backends.py``: the first size side by side, the larger ones one candidate at a time; its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backends_under_test", ROOT / "benchmarks" / "bench_backends.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class FakeWorker:
    """Stands for a candidate's process: records which workers were alive at each timed run."""

    alive: set[str] = set()
    runs: list[tuple[str, frozenset[str]]] = []
    sizes: dict[str, list[int]] = {}

    def __init__(self, log: Path) -> None:
        self.key = None

    def ask(self, command):
        if command["cmd"] == "setup":
            self.key = command["spec"]["key"]
            FakeWorker.alive.add(self.key)
            FakeWorker.sizes[self.key] = command["spec"].get("size")
            return {"ok": True}
        FakeWorker.runs.append((self.key, frozenset(FakeWorker.alive)))
        return {"ok": True, "ms": 10.0}

    def close(self) -> None:
        FakeWorker.alive.discard(self.key)


@pytest.fixture
def fake(bench, monkeypatch):
    FakeWorker.alive, FakeWorker.runs, FakeWorker.sizes = set(), [], {}
    monkeypatch.setattr(bench, "Worker", FakeWorker)
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    return bench


def group(bench, tmp_path, rounds=2, alone=False):
    return bench.measure_group(bench.CANDIDATES, yml="x.yml", size=(72, 128), threads=1, rounds=rounds, files={},
                               reference=None, accuracy_size=(72, 128), folder=tmp_path, alone=alone)


def test_side_by_side_every_candidate_is_alive_at_every_run(fake, tmp_path) -> None:
    results = group(fake, tmp_path, rounds=2)
    keys = [c.key for c in fake.CANDIDATES]
    assert [r.candidate for r in results] == list(fake.CANDIDATES)  # reported in the table's order
    assert all(r.times == [10.0, 10.0] and not r.error for r in results)
    assert all(alive == frozenset(keys) for _, alive in FakeWorker.runs)
    assert [k for k, _ in FakeWorker.runs] == keys + keys[1:] + keys[:1]  # interleaved, the order rotated
    assert not FakeWorker.alive  # every worker closed


def test_alone_one_candidate_at_a_time(fake, tmp_path) -> None:
    """The larger sizes: each candidate's process is the only one alive while it is timed, then closed."""
    results = group(fake, tmp_path, rounds=3, alone=True)
    keys = [c.key for c in fake.CANDIDATES]
    assert [r.candidate for r in results] == list(fake.CANDIDATES)
    assert all(r.times == [10.0] * 3 and not r.error for r in results)
    assert FakeWorker.runs == [(k, frozenset({k})) for k in keys for _ in range(3)]
    assert not FakeWorker.alive


@pytest.mark.parametrize("alone", [False, True])
def test_a_failed_setup_is_reported_and_not_timed(fake, tmp_path, monkeypatch, alone) -> None:
    ask = FakeWorker.ask

    def failing(self, command):
        if command["cmd"] == "setup" and command["spec"]["key"] == "ov-int8":
            return {"ok": False, "error": "BackendError: int8 does not reproduce PyTorch"}
        return ask(self, command)

    monkeypatch.setattr(FakeWorker, "ask", failing)
    results = {r.candidate.key: r for r in group(fake, tmp_path, alone=alone)}
    assert results["ov-int8"].error == "BackendError: int8 does not reproduce PyTorch" and not results["ov-int8"].times
    assert all(r.times == [10.0, 10.0] for k, r in results.items() if k != "ov-int8")
    assert "ov-int8" not in {k for k, _ in FakeWorker.runs} and not FakeWorker.alive


def test_alone_a_worker_that_dies_stops_only_its_own_rounds(fake, tmp_path, monkeypatch) -> None:
    """Killed during its second forward: its row is failed, the next candidates still run alone."""
    ask = FakeWorker.ask

    def dying(self, command):
        if command["cmd"] == "run" and self.key == "ort-default" and any(k == "ort-default" for k, _ in FakeWorker.runs):
            return {"ok": False, "error": "the worker died (exit status -9 (SIGKILL: out of memory?))"}
        return ask(self, command)

    monkeypatch.setattr(FakeWorker, "ask", dying)
    results = {r.candidate.key: r for r in group(fake, tmp_path, rounds=3, alone=True)}
    assert results["ort-default"].times == [10.0] and results["ort-default"].error.startswith("the worker died")
    assert all(r.times == [10.0] * 3 and not r.error for k, r in results.items() if k != "ort-default")
    assert all(alive == {k} for k, alive in FakeWorker.runs) and not FakeWorker.alive


def test_a_killed_worker_is_reported_as_such(bench, tmp_path) -> None:
    """A worker the kernel kills (out of memory) gives a row that says so, not a hang or a traceback."""
    import os
    import signal

    worker = bench.Worker(tmp_path / "killed.log")
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)
    answer = worker.ask({"cmd": "run"})
    worker.close()
    assert answer == {"ok": False, "error": "the worker died (exit status -9 (SIGKILL: out of memory?))"}


def test_a_worker_that_died_part_way_is_not_a_result(bench) -> None:
    """A worker killed after some rounds gives a failed row: no median, no goal line, not the baseline."""
    by_key = {c.key: c for c in bench.CANDIDATES}
    results = [bench.Result(by_key["ov-default"], times=[100.0, 110.0]),
               bench.Result(by_key["ort-default"], times=[50.0], error="the worker died"),
               bench.Result(by_key["auto-fp32"], times=[2844.0], error="the worker died")]
    assert bench.goal_lines(results) == []
    rows = bench.section_rows(results, gflop=1.0, peaks={"fp32": 1.0})
    assert rows[0].split(" | ")[4] == "1.00x"  # the fastest default is OpenVINO's, not the dead one's
    assert rows[1] == "| onnxruntime defaults on our .onnx | fp32 | failed: the worker died | | | | | | |"
    assert rows[2] == "| Upscaler(backend='auto') | fp32 | failed: the worker died | | | | | | |"


def test_goal_lines(bench) -> None:
    """auto against the fastest default (goal 1.3x) and against the fastest exact float32 runtime (goal <= 1.2x)."""
    by_key = {c.key: c for c in bench.CANDIDATES}
    results = [
        bench.Result(by_key["ov-default"], times=[100.0, 90.0, 110.0], info={"max_abs": 3.2e-2}),  # bf16: not exact
        bench.Result(by_key["ort-default"], times=[150.0], info={"max_abs": 8e-6}),
        bench.Result(by_key["torch"], times=[60.0], info={"max_abs": 7.9e-6}),
        bench.Result(by_key["auto-fp32"], times=[70.0], info={"max_abs": 1e-5, "auto": {"chosen": "torch"}}),
        bench.Result(by_key["auto-bf16"], times=[80.0], info={"auto": {"chosen": "openvino"}}),
    ]
    assert bench.goal_lines(results) == [
        "`Upscaler(backend='auto')` (chose torch): 70.0 ms, 1.43x the fastest runtime alone with its defaults "
        "(OpenVINO defaults on our IR, 100.0 ms): goal 1.3x reached.",
        "`Upscaler(backend='auto', precision='bf16')` (chose openvino): 80.0 ms, 1.25x the fastest runtime alone "
        "with its defaults (OpenVINO defaults on our IR, 100.0 ms): goal 1.3x not reached.",
        "Exact float32 (max abs <= 5e-04): `Upscaler(backend='auto')` is 1.17x the time of the fastest exact float32 "
        "candidate (Upscaler(backend='torch'), 60.0 ms): goal <= 1.2x reached.",
    ]
    larger = [bench.Result(r.candidate, times=r.times, info={k: v for k, v in r.info.items() if k != "max_abs"})
              for r in results]  # the larger sizes measure no accuracy
    assert bench.goal_lines(larger)[2] == "Exact float32: no accuracy measured in this group (see the first size)."
    assert bench.goal_lines(results[2:]) == ["no default baseline ran"]


def test_section_rows(bench) -> None:
    """The columns: median, min-max, speed against the fastest default, max abs, PSNR, GFLOP/s, fraction of the peaks."""
    by_key = {c.key: c for c in bench.CANDIDATES}
    results = [bench.Result(by_key["ov-default"], times=[20.0, 22.0, 24.0], info={"max_abs": 3.2e-2, "psnr": 47.66}),
               bench.Result(by_key["torch-bf16"], times=[11.0, 10.0, 12.0], info={"max_abs": 3.2e-2, "psnr": 47.5}),
               bench.Result(by_key["torch"], times=[40.0])]
    assert bench.section_rows(results, gflop=2.2, peaks={"fp32": 400.0, "bf16": 1000.0}) == [
        "| OpenVINO defaults on our IR (default) | default | 22.0 | 20.0-24.0 | 1.00x | 3.2e-02 | 47.7 | 100.0 | 25% / 10% |",
        "| Upscaler(backend='torch', precision='bf16') | bf16 | 11.0 | 10.0-12.0 | 2.00x | 3.2e-02 | 47.5 | 200.0 | 50% / 20% |",
        "| Upscaler(backend='torch') | fp32 | 40.0 | 40.0-40.0 | 0.55x | - | - | 55.0 | 14% / - |",
    ]


def test_run_times_the_first_size_side_by_side_and_the_others_alone(fake, tmp_path, monkeypatch) -> None:
    """The whole section with stand-in workers: LR 32x16 with every candidate alive, 64x32 one at a time."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    monkeypatch.setattr(fake, "load_network", lambda yml: (net, 2, "random weights"))
    monkeypatch.setattr(fake, "export_files", lambda net, folder, scale: {})
    monkeypatch.setattr(fake, "NETWORKS", {"tiny": "x.yml"})
    monkeypatch.setenv("LKDN_BENCH_SIZES", "32x16,64x32")
    monkeypatch.setenv("LKDN_BENCH_ROUNDS", "2")
    monkeypatch.delenv("LKDN_BENCH_QUICK", raising=False)
    text = fake.run({"threads": 1})
    keys = [c.key for c in fake.CANDIDATES]
    first = [(k, alive) for k, alive in FakeWorker.runs if len(alive) > 1]
    assert [k for k, _ in first] == keys + keys[1:] + keys[:1] and all(alive == set(keys) for _, alive in first)
    assert FakeWorker.runs[len(first):] == [(k, frozenset({k})) for k in keys for _ in range(2)]
    assert all(FakeWorker.sizes[k] == [32, 64] for k in keys)  # the last group set up is the larger size
    assert "at LR 32x16 every candidate is alive at once" in text and "the larger sizes one candidate at a time" in text
    for size in ("32x16", "64x32"):
        table = text.split(f"### tiny, LR {size} -> x2")[1].split("\n\n")[1].splitlines()
        assert len(table) == 2 + len(keys) and all(" | 10.0 | 10.0-10.0 | " in row for row in table[2:])
