"""``benchmarks/bench_backends.py``: candidates that do not fit in memory together are timed in sub-groups."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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

    def __init__(self, log: Path) -> None:
        self.key = None

    def ask(self, command):
        if command["cmd"] == "setup":
            self.key = command["spec"]["key"]
            FakeWorker.alive.add(self.key)
            return {"ok": True, "peak_bytes": 3 << 30}
        FakeWorker.runs.append((self.key, frozenset(FakeWorker.alive)))
        return {"ok": True, "ms": 10.0}

    def close(self) -> None:
        FakeWorker.alive.discard(self.key)


@pytest.fixture
def fake(bench, monkeypatch):
    FakeWorker.alive, FakeWorker.runs = set(), []
    monkeypatch.setattr(bench, "Worker", FakeWorker)
    monkeypatch.setattr(bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(bench, "memory_total", lambda: 1 << 40)  # the alone rule off unless a test sets the total
    return bench


def group(bench, tmp_path, rounds=2, notes=None):
    return bench.measure_group(bench.CANDIDATES, yml="x.yml", size=(72, 128), threads=1, rounds=rounds, files={},
                               reference=None, accuracy_size=(72, 128), folder=tmp_path, notes=notes)


def test_enough_memory_one_group(fake, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fake, "memory_available", lambda: 1 << 40)
    notes: list[str] = []
    results = group(fake, tmp_path, notes=notes)
    everyone = frozenset(c.key for c in fake.CANDIDATES)
    assert [r.candidate for r in results] == list(fake.CANDIDATES)  # reported in the table's order
    assert all(len(r.times) == 2 for r in results)
    assert all(alive == everyone for _, alive in FakeWorker.runs) and not notes and not FakeWorker.alive


def test_short_of_memory_sub_groups_keep_the_baselines(fake, tmp_path, monkeypatch) -> None:
    """Room for two non-default workers at a time: each sub-group is timed with every baseline alive."""
    defaults = frozenset(c.key for c in fake.CANDIDATES if c.default)
    others = [c.key for c in fake.CANDIDATES if not c.default]

    def available():
        extra = len(FakeWorker.alive - defaults)
        return (4.5 * 2**30 + fake.MEMORY_MARGIN_BYTES) * (1 if extra < 2 else 0.5)  # 1.5 x 3 GiB + margin

    monkeypatch.setattr(fake, "memory_available", available)
    notes: list[str] = []
    results = {r.candidate.key: r for r in group(fake, tmp_path, rounds=3, notes=notes)}
    subgroups = -(-len(others) // 2)
    for key in others:
        alive_at_runs = {alive for k, alive in FakeWorker.runs if k == key}
        assert len(results[key].times) == 3
        assert all(defaults <= alive and len(alive - defaults) <= 2 for alive in alive_at_runs)
    for key in defaults:
        assert len(results[key].times) == 3 * subgroups
    assert notes and f"{subgroups} sub-groups" in notes[0] and "3.0 GiB" in notes[0]
    assert not FakeWorker.alive  # every worker closed


def test_a_failed_setup_is_reported_and_not_timed(fake, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fake, "memory_available", lambda: None)  # unknown: one group
    ask = FakeWorker.ask

    def failing(self, command):
        if command["cmd"] == "setup" and command["spec"]["key"] == "ov-int8":
            return {"ok": False, "error": "BackendError: int8 does not reproduce PyTorch"}
        return ask(self, command)

    monkeypatch.setattr(FakeWorker, "ask", failing)
    results = {r.candidate.key: r for r in group(fake, tmp_path)}
    assert results["ov-int8"].error.startswith("BackendError") and not results["ov-int8"].times
    assert all(len(r.times) == 2 for k, r in results.items() if k != "ov-int8")


def test_an_anchor_is_the_only_baseline_kept_alive(fake, tmp_path, monkeypatch) -> None:
    """Larger sizes keep only the earlier group's fastest default in every sub-group (room for one more worker)."""
    monkeypatch.setattr(fake, "memory_available",
                        lambda: (4.5 * 2**30 + fake.MEMORY_MARGIN_BYTES) * (1 if len(FakeWorker.alive) < 2 else 0.5))
    notes: list[str] = []
    results = {r.candidate.key: r for r in fake.measure_group(
        fake.CANDIDATES, yml="x.yml", size=(72, 128), threads=1, rounds=2, files={}, reference=None,
        accuracy_size=(72, 128), folder=tmp_path, notes=notes, anchor="ov-default")}
    others = [c.key for c in fake.CANDIDATES if c.key != "ov-default"]
    assert all(alive == {"ov-default", key} for key in others for k, alive in FakeWorker.runs if k == key)
    assert all(len(results[k].times) == 2 for k in others)  # the other defaults too: ordinary candidates now
    assert len(results["ov-default"].times) == 2 * len(others)
    assert f"{len(others)} sub-groups" in notes[0] and "OpenVINO defaults on our IR" in notes[0]


def test_expected_peaks_keep_every_moment_within_memory(fake, tmp_path, monkeypatch) -> None:
    """A candidate known (from the smaller size) to need a lot is set up only after the others are closed."""
    total = 24 * 2**30
    sizes = {c.key: 3 * 2**30 for c in fake.CANDIDATES}
    sizes.update({"ort-default": 13 * 2**30, "ort-fp16": 12 * 2**30, "ov-default": 4 * 2**30})
    worst: list[float] = []
    setup = FakeWorker.ask

    def ask(self, command):
        answer = setup(self, command)
        if command["cmd"] == "setup":
            worst.append(sum(sizes[k] for k in FakeWorker.alive))
            answer["peak_bytes"] = sizes[self.key]
        return answer

    monkeypatch.setattr(FakeWorker, "ask", ask)
    monkeypatch.setattr(fake, "memory_available", lambda: total - sum(sizes[k] for k in FakeWorker.alive))
    monkeypatch.setattr(fake, "memory_total", lambda: total)
    results = fake.measure_group(
        fake.CANDIDATES, yml="x.yml", size=(72, 128), threads=1, rounds=1, files={}, reference=None,
        accuracy_size=(72, 128), folder=tmp_path, anchor="ov-default", expected_peaks=sizes)
    assert max(worst) <= total - fake.MEMORY_MARGIN_BYTES
    assert all(len(r.times) >= 1 for r in results)


def test_scaled_peaks_grow_what_is_above_the_fixed_part(bench) -> None:
    small = [bench.Result(c, info={"peak_bytes": peak}) for c, peak in zip(bench.CANDIDATES[:3], (1e9, 2e9, 3e9), strict=True)]
    assert bench.scaled_peaks(small, 16) == {small[0].candidate.key: 1e9, small[1].candidate.key: 17e9,
                                              small[2].candidate.key: 33e9}


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


def test_a_candidate_expected_to_be_big_is_timed_alone_with_the_anchor(fake, tmp_path, monkeypatch) -> None:
    """Predictions undershoot (onnxruntime: 8 GiB expected, 13 GiB held): a big one gets the machine to itself."""
    total = 24 * 2**30
    held = {c.key: 3 * 2**30 for c in fake.CANDIDATES} | {"ort-default": 13 * 2**30, "ov-default": 4 * 2**30}
    expected = dict(held) | {"ort-default": 8 * 2**30}
    monkeypatch.setattr(fake, "memory_available", lambda: total - sum(held[k] for k in FakeWorker.alive))
    monkeypatch.setattr(fake, "memory_total", lambda: total)
    fake.measure_group(fake.CANDIDATES, yml="x.yml", size=(72, 128), threads=1, rounds=1, files={}, reference=None,
                       accuracy_size=(72, 128), folder=tmp_path, anchor="ov-default", expected_peaks=expected)
    assert {alive for key, alive in FakeWorker.runs if key == "ort-default"} == {frozenset({"ov-default", "ort-default"})}


def test_the_anchor_is_the_fastest_default_expected_to_fit(bench) -> None:
    """A re-run of 2026-12-02 kept onnxruntime's default alive through LKDN x4's 1280x720 sub-groups
    (the fastest default at 320x180, 13 GiB at 1280x720) and lost it: the anchor must be expected to
    stay small, and only a default can be the anchor."""
    by_key = {c.key: c for c in bench.CANDIDATES}
    results = [bench.Result(by_key["ort-default"], times=[280.0]), bench.Result(by_key["ov-default"], times=[290.0]),
               bench.Result(by_key["ncnn-default"], times=[600.0]), bench.Result(by_key["torch"], times=[100.0])]
    gib = float(1 << 30)
    expected = {"ort-default": 13 * gib, "ov-default": 4 * gib, "ncnn-default": 3 * gib, "torch": 1 * gib}
    assert bench.choose_anchor(results, expected, 24 * gib) == "ov-default"  # torch is not a default
    assert bench.choose_anchor(results, {}, 24 * gib) == "ort-default"  # no prediction: the fastest
    assert bench.choose_anchor(results, expected, 8 * gib) == "ncnn-default"  # none fits: the smallest
    assert bench.choose_anchor([bench.Result(by_key["ov-default"], error="died")], expected, 24 * gib) is None


def test_peak_bounds_keep_the_larger_size_within_memory(fake, tmp_path, monkeypatch) -> None:
    """LKDN x4 on 2026-12-02 (23.5 GiB): what the workers held at 1280x720 (sampled), and peaks at
    320x180 like those of that run. :func:`scaled_peaks` put onnxruntime's default under a quarter
    of the memory (it was set up beside the torch candidates); it then held 10.6 GiB, and two
    workers died. Set up by :func:`peak_bounds`, no moment exceeds the memory, and every candidate
    is timed."""
    gib = float(1 << 30)
    at_320 = {"torch-eager": 1.25, "torch": 1.35, "torch-bf16": 1.25, "ort-default": 1.5, "ort-fp16": 1.5,
              "ov-default": 1.42, "ov-fp32": 1.69, "ov-bf16": 1.5, "ov-int8": 3.0, "ncnn-default": 1.85,
              "ncnn-fp32": 1.95, "auto-fp32": 3.1, "auto-bf16": 1.4}
    held = {"torch-eager": 3.8, "torch": 4.6, "torch-bf16": 2.5, "ort-default": 10.6, "ort-fp16": 7.6,
            "ov-default": 4.1, "ov-fp32": 6.8, "ov-bf16": 4.5, "ov-int8": 4.3, "ncnn-default": 12.2,
            "ncnn-fp32": 13.1, "auto-fp32": 6.2, "auto-bf16": 3.5}  # GiB
    ms = {"torch-eager": 1142.0, "ort-default": 408.0, "ov-default": 161.0, "ncnn-default": 429.0}  # the defaults
    small = [fake.Result(c, times=[ms.get(c.key, 100.0)], info={"peak_bytes": at_320[c.key] * gib})
             for c in fake.CANDIDATES]
    assert fake.scaled_peaks(small, 16)["ort-default"] < 6 * gib  # the guess that undershot
    total, worst = 23.5 * gib, []
    setup = FakeWorker.ask

    def ask(self, command):
        answer = setup(self, command)
        worst.append(sum(held[k] * gib for k in FakeWorker.alive))
        return answer

    monkeypatch.setattr(FakeWorker, "ask", ask)
    monkeypatch.setattr(fake, "memory_available", lambda: total - sum(held[k] * gib for k in FakeWorker.alive))
    monkeypatch.setattr(fake, "memory_total", lambda: total)
    anchor = fake.choose_anchor(small, fake.scaled_peaks(small, 16), total)
    results = fake.measure_group(
        fake.CANDIDATES, yml="x.yml", size=(720, 1280), threads=1, rounds=1, files={}, reference=None,
        accuracy_size=(180, 320), folder=tmp_path, anchor=anchor, expected_peaks=fake.peak_bounds(small, 16))
    assert anchor == "ov-default"
    assert max(worst) <= total - fake.MEMORY_MARGIN_BYTES
    assert all(len(r.times) >= 1 for r in results)
    assert fake.peak_bounds(small[:1], 16) == {"torch-eager": 20 * gib}


def test_a_worker_that_died_part_way_is_not_a_result(bench) -> None:
    """A worker killed after some rounds gives a failed row: no median, no goal line, not the baseline."""
    by_key = {c.key: c for c in bench.CANDIDATES}
    results = [bench.Result(by_key["ov-default"], times=[100.0, 110.0]),
               bench.Result(by_key["ort-default"], times=[50.0], error="the worker died"),
               bench.Result(by_key["auto-fp32"], times=[2844.0], error="the worker died")]
    assert bench.goal_lines(results) == []
    rows = bench.section_rows(results, gflop=1.0, peaks={"fp32": 1.0})
    assert rows[0].split(" | ")[4] == "1.00x"  # the fastest default is OpenVINO's, not the dead one's
    assert "failed: the worker died" in rows[1] and "failed: the worker died" in rows[2]
    assert bench.choose_anchor(results, {}, 1e12) == "ov-default"
