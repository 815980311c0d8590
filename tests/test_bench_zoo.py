"""benchmarks/bench_zoo.py: every zoo network has its official code named, and the table reads the times right."""

from __future__ import annotations

import pytest
from conftest import load_script, reference_root

import lkdn.leaderboard as leaderboard

bench = load_script("benchmarks/bench_zoo.py")


def test_every_zoo_network_names_its_official_code_or_none() -> None:
    assert set(bench.OFFICIAL) == {entry.label for entry in leaderboard.ZOO}
    assert {label for label, official in bench.OFFICIAL.items() if official is None} == {"BSRN", "LKDN", "LKDN-S"}


def test_the_official_files_define_the_classes_named() -> None:
    root = reference_root()
    if root is None:
        pytest.skip("needs the official code (../shared/reference or $LKDN_SHARED/reference)")
    for label, official in bench.OFFICIAL.items():
        if official is not None:
            source = (root / official.file).read_text(encoding="utf-8")
            assert f"class {official.cls}(" in source, label


def test_summary_and_table_rows() -> None:
    summary = bench.summarize([10.0, 30.0, 20.0], [40.0, 60.0, 50.0, 70.0])
    assert summary == {"ours_ms": 20.0, "official_ms": 55.0, "speedup": 2.75}
    assert bench.summarize([], [5.0]) == {"ours_ms": None, "official_ms": 5.0, "speedup": None}
    lines = bench.table([
        {"label": "Net", "ours": [10.0, 30.0, 20.0], "official": [40.0, 60.0, 50.0, 70.0], "max_abs": 3.5e-6,
         "note": "n"},
        {"label": "Alone", "ours": [7.0], "official": [], "note": "no official code in the reference"},
    ])
    assert lines[2] == "| Net | 20 [10-30] | 55 [40-70] | 2.75x | 3.5e-06 | n |"
    assert lines[3] == "| Alone | 7 [7-7] | - | - | - | no official code in the reference |"
    assert len(lines[0].split("|")) == len(lines[2].split("|"))


def test_findings_name_the_slower_networks_and_the_overlapping_ranges() -> None:
    rows = [{"label": "Fast", "ours": [10.0, 11.0, 12.0], "official": [30.0, 31.0, 32.0]},
            {"label": "Slow", "ours": [40.0, 50.0, 60.0], "official": [20.0, 25.0, 45.0]},
            {"label": "Alone", "ours": [5.0], "official": []}]
    lines = bench.findings(rows)
    assert lines[1] == "**Where ours is slower:** "
    assert lines[2].startswith("- Slow (0.50x): not explained yet")
    assert "Ranges that overlap (the ratio is within this run's noise): Slow." in lines
    assert bench.findings(rows[:1])[1] == "**Where ours is slower:** none in this run (median)."
