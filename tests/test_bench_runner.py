"""``benchmarks/run.py``: ``--only`` re-measures some sections of docs/benchmarks.md and keeps the rest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_runner(bench_dir: Path):
    spec = importlib.util.spec_from_file_location("bench_runner_under_test", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = bench_dir
    return module


def fake_bench(folder: Path, name: str, text: str) -> None:
    """A bench module with a dataclass, as the real ones have (it needs its module in sys.modules)."""
    source = ("from dataclasses import dataclass\n\n@dataclass\nclass Row:\n    text: str\n\n"
              f"def run(ctx):\n    return Row({text!r}).text\n")
    (folder / f"bench_{name}.py").write_text(source, encoding="utf-8")


def run_main(runner, monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["run.py", *argv])
    monkeypatch.setattr(runner.torch, "set_num_threads", lambda n: None)  # leave this process's threads alone
    runner.main()


def test_only_replaces_its_section_and_keeps_the_others(tmp_path, monkeypatch, capsys):
    fake_bench(tmp_path, "alpha", "## Alpha\n\nfirst alpha")
    fake_bench(tmp_path, "beta", "## Beta\n\nfirst beta")
    out = tmp_path / "benchmarks.md"
    runner = load_runner(tmp_path)
    run_main(runner, monkeypatch, "--threads", "1", "--output", str(out))
    fake_bench(tmp_path, "alpha", "## Alpha\n\nsecond alpha")
    fake_bench(tmp_path, "beta", "## Beta\n\nsecond beta")
    run_main(runner, monkeypatch, "--threads", "1", "--output", str(out), "--only", "beta")
    text = out.read_text(encoding="utf-8")
    assert "first alpha" in text and "second beta" in text
    assert "first beta" not in text and "second alpha" not in text
    assert text.index("## Alpha") < text.index("## Beta"), "sections keep the order of the bench files"
    for name in ("alpha", "beta"):
        start = text.index(f"<!-- bench:{name}:start -->")
        assert "Run on " in text[start:text.index(f"<!-- bench:{name}:end -->")], "each section states its run"
    assert not list(tmp_path.glob("*.tmp")), "written atomically, no temporary file left"


def test_a_full_run_drops_sections_of_removed_benchmarks(tmp_path, monkeypatch):
    out = tmp_path / "benchmarks.md"
    out.write_text("<!-- bench:gone:start -->\n## Gone\n<!-- bench:gone:end -->\n", encoding="utf-8")
    fake_bench(tmp_path, "alpha", "## Alpha\n\nbody")
    run_main(load_runner(tmp_path), monkeypatch, "--threads", "1", "--output", str(out))
    assert "## Gone" not in out.read_text(encoding="utf-8")


def test_unknown_section_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    fake_bench(tmp_path, "alpha", "## Alpha\n\nbody")
    with pytest.raises(SystemExit):
        run_main(load_runner(tmp_path), monkeypatch, "--output", str(tmp_path / "b.md"), "--only", "nosuch")
    assert "nosuch" in capsys.readouterr().err
