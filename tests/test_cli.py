"""Console commands: every one is installed, names an existing script, and runs it with its arguments."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from lkdn import cli

ROOT = Path(__file__).resolve().parents[1]


def test_installed_commands_are_those_of_lkdn_cli() -> None:
    try:
        dist = importlib.metadata.distribution("lkdn-sr")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lkdn-sr is not pip-installed here (make install installs it)")
    installed = sorted(f"{e.name} = {e.value}" for e in dist.entry_points if e.group == "console_scripts")
    assert installed == sorted(cli.entry_points())


def test_every_command_names_a_script_with_a_main() -> None:
    for command, script in cli.SCRIPTS.items():
        path = ROOT / "scripts" / f"{script}.py"
        assert path.is_file(), command
        assert "\ndef main(argv" in path.read_text(), command


def test_a_command_runs_its_script_with_the_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run_script("download", ["--list"]) == 0
    assert "LKDN_x4" in capsys.readouterr().out


def test_lkdn_test_command_prints_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import sys; from lkdn.cli import test; sys.exit(test())", "-opt",
                           str(tmp_path / "missing.yml")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: option file not found: {tmp_path / 'missing.yml'}"
    assert "Traceback" not in done.stderr
