"""Console commands: every one is installed, names an existing script, and runs it with its arguments."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from lkdn import cli
from lkdn.utils import command_line

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


# --- every command's parser: its name, an example, hyphenated flags, the old spellings still accepted ---------------

#: scripts run by other commands, not by users (lkdn-demo runs make_demo_data, make gpu-wheels make_gpu_wheels)
NOT_COMMANDS = {"data_preparation/make_demo_data", "make_gpu_wheels"}


class _CapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _capture(parser: argparse.ArgumentParser, argv: object = None, aliases: object = None) -> None:
    raise _CapturedError(parser)


def command_parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[argparse.ArgumentParser, dict[str, str]]]:
    """command -> (its parser, its aliases), taken where the command reads its command line."""
    from lkdn import test as test_entry
    from lkdn.training import pipeline

    parsers = {}
    monkeypatch.setattr(command_line, "parse_command_line", _capture)  # the scripts import it when run_script loads them
    for command, entry in (("lkdn-train", pipeline), ("lkdn-test", test_entry)):
        monkeypatch.setattr(entry, "parse_command_line", _capture)
        with pytest.raises(_CapturedError) as captured:
            entry.parse_args([])
        parsers[command] = captured.value.parser
    for command, script in cli.SCRIPTS.items():
        with pytest.raises(_CapturedError) as captured:
            cli.run_script(script, [])
        parsers[command] = captured.value.parser
    aliases = {"lkdn-test": {"--root": "--root-path"}}
    return {command: (parser, aliases.get(command, {})) for command, parser in parsers.items()}


@pytest.fixture(scope="module")
def parsers() -> dict[str, tuple[argparse.ArgumentParser, dict[str, str]]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return command_parsers(monkeypatch)


def test_every_command_is_read_by_command_parser(parsers: dict) -> None:
    assert sorted(parsers) == sorted(["lkdn-train", "lkdn-test", *cli.SCRIPTS])
    assert {command: parser.prog for command, (parser, _) in parsers.items()} == {c: c for c in parsers}


def test_every_help_shows_the_command_and_an_example(parsers: dict) -> None:
    for command, (parser, _) in parsers.items():
        text = parser.format_help()
        assert text.startswith(f"usage: {command} "), command
        examples = text.split("\nexamples:\n", 1)[1].splitlines()
        assert examples and all(line.startswith("  ") for line in examples), command
        assert any(line.startswith(f"  {command}") for line in examples), command
        assert "python scripts/" not in text and "python lkdn/" not in text, command


def test_no_help_shows_an_underscore_flag(parsers: dict) -> None:
    for command, (parser, _) in parsers.items():
        assert re.findall(r"(?<![\w-])--[\w-]*_[\w-]*", parser.format_help()) == [], command


def _value(action: argparse.Action) -> list[str]:
    """A valid command-line value for ``action``."""
    if action.nargs == 0:
        return []
    one = str(action.choices[0]) if action.choices else {int: "2", float: "0.5"}.get(action.type, "v")
    return [one] * (action.nargs if isinstance(action.nargs, int) else 1)


def _required(parser: argparse.ArgumentParser, instead_of: argparse.Action) -> list[str]:
    """Values for every required argument (one per required group), ``instead_of``'s group left to it."""
    argv: list[str] = []
    grouped = {a for group in parser._mutually_exclusive_groups for a in group._group_actions}
    for group in parser._mutually_exclusive_groups:
        if group.required and instead_of not in group._group_actions:
            first = group._group_actions[0]
            argv += [first.option_strings[0], *_value(first)]
    for action in parser._actions:
        if action.required and action not in grouped and action is not instead_of:
            argv += [*action.option_strings[:1], *_value(action)]
    return argv


def test_every_old_spelling_is_accepted_and_means_the_same(parsers: dict) -> None:
    checked = set()
    for command, (parser, aliases) in parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                olds = [o for o, new in aliases.items() if new == option]
                if option.startswith("--") and "-" in option[2:]:
                    olds.append("--" + option[2:].replace("-", "_"))
                for old in olds:
                    base, value = _required(parser, action), _value(action)
                    new_args = command_line.parse_command_line(parser, [*base, option, *value], aliases)
                    assert command_line.parse_command_line(parser, [*base, old, *value], aliases) == new_args, (command, old)
                    if value:  # --old=value too (torch.distributed.launch passes --local_rank=N)
                        assert command_line.parse_command_line(parser, [*base, f"{old}={value[0]}", *value[1:]],
                                                      aliases) == new_args, (command, old)
                    checked.add(old)
    assert {"--auto_resume", "--force_yml", "--root_path", "--local_rank", "--root", "--tile_pad", "--self_ensemble",
            "--lr_size", "--param_key", "--in_place", "--output_hr", "--crop_size", "--n_thread"} <= checked


def test_the_spellings_people_type_are_accepted() -> None:
    from lkdn import test as test_entry
    from lkdn.training import pipeline

    old = pipeline.parse_args(["-opt", "a.yml", "--auto_resume", "--force_yml", "x=1", "y=2", "--root_path", "r",
                               "--local_rank=3"])
    assert vars(old) == {"opt": "a.yml", "launcher": "none", "auto_resume": True, "debug": False, "local_rank": 3,
                         "force_yml": ["x=1", "y=2"], "root_path": "r"}
    assert pipeline.parse_args(["-opt", "a.yml", "--auto-resume", "--force-yml", "x=1", "y=2", "--root-path", "r",
                                "--local-rank", "3"]) == old
    old = test_entry.parse_args(["-opt", "a.yml", "--root", "r", "--force_yml", "x=1"])
    assert (old.root_path, old.force_yml) == ("r", ["x=1"])
    assert test_entry.parse_args(["-opt", "a.yml", "--root-path", "r", "--force-yml", "x=1"]) == old


def test_an_unknown_flag_is_still_an_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    from lkdn.training import pipeline

    with pytest.raises(SystemExit) as stopped:
        pipeline.parse_args(["-opt", "a.yml", "--auto_resum"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --auto_resum" in capsys.readouterr().err


def test_old_spellings_leave_values_and_positional_arguments_alone() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--force-yml", nargs="+")
    parser.add_argument("rest", nargs="*")
    argv = ["--force_yml", "path:x=--a_b", "--", "--force_yml"]
    assert command_line.old_spellings(parser, argv) == ["--force-yml", "path:x=--a_b", "--", "--force_yml"]


def test_every_script_a_user_runs_has_a_command() -> None:
    scripts = {str(p.relative_to(ROOT / "scripts").with_suffix("")) for p in (ROOT / "scripts").rglob("*.py")
               if "\ndef main(" in p.read_text()}
    assert scripts - NOT_COMMANDS == set(cli.SCRIPTS.values())


def test_setup_installs_every_command_and_the_readme_lists_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import setuptools

    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    assert sorted(runpy.run_path(str(ROOT / "setup.py"))["COMMANDS"]) == sorted(cli.entry_points())
    table = (ROOT / "README.md").read_text().split("| command | is the same as |", 1)[1].split("\n\n", 1)[0]
    for command, script in cli.SCRIPTS.items():
        assert f"`{command}`" in table and f"scripts/{script}.py" in table, command
