"""Console commands: every one is installed, is a ``main`` of :mod:`lkdn.commands`, and reads its command line
before it imports torch; one wrapper turns clear errors into one line."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from lkdn import commands, utils
from lkdn.errors import LkdnError

ROOT = Path(__file__).resolve().parents[1]


def test_installed_commands_are_those_of_lkdn_commands() -> None:
    try:
        dist = importlib.metadata.distribution("lkdn-sr")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lkdn-sr is not pip-installed here (make install installs it)")
    installed = sorted(f"{e.name} = {e.value}" for e in dist.entry_points if e.group == "console_scripts")
    assert installed == sorted(commands.entry_points())


def test_every_command_is_a_main_of_a_module_of_lkdn_commands() -> None:
    modules = {p.stem for p in (ROOT / "lkdn" / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert sorted(commands.COMMANDS.values()) == sorted(modules)
    for command, module in commands.COMMANDS.items():
        assert callable(importlib.import_module(f"lkdn.commands.{module}").main), command


def test_python_m_lkdn_commands_runs_a_command_by_its_name() -> None:
    done = subprocess.run([sys.executable, "-m", "lkdn.commands", "lkdn-download", "--list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LKDN_x4" in done.stdout
    done = subprocess.run([sys.executable, "-m", "lkdn.commands", "lkdn-nothing"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "lkdn-infer" in done.stderr


def test_lkdn_test_command_prints_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "lkdn.commands", "lkdn-test", "-opt", str(tmp_path / "missing.yml")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: option file not found: {tmp_path / 'missing.yml'}"
    assert "Traceback" not in done.stderr


# --- the one wrapper of every command: clear errors, tracebacks on request, Ctrl-C --------------------------------

class _ClearError(LkdnError, ValueError):
    pass


def _raise(error: BaseException) -> object:
    def main(argv: object = None) -> int:
        raise error

    return main


def test_a_clear_error_is_one_line_and_status_1(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LKDN_TRACEBACK", raising=False)
    assert utils.run(_raise(_ClearError("x.yml: bad key"))) == 1
    assert capsys.readouterr().err == "error: x.yml: bad key\n"
    logged = _ClearError("written to the log already")
    logged.lkdn_logged = True
    assert utils.run(_raise(logged)) == 1
    assert capsys.readouterr().err == ""
    assert utils.run(_raise(OSError("disk full")), clear=(OSError,)) == 1
    assert capsys.readouterr().err == "error: disk full\n"
    with pytest.raises(KeyError):  # anything else is a bug: its traceback
        utils.run(_raise(KeyError("x")))


def test_lkdn_traceback_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LKDN_TRACEBACK", "1")
    with pytest.raises(_ClearError):
        utils.run(_raise(_ClearError("x")))
    with pytest.raises(KeyboardInterrupt):
        utils.run(_raise(KeyboardInterrupt()))


def test_ctrl_c_is_one_line_and_status_130(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LKDN_TRACEBACK", raising=False)
    assert utils.run(_raise(KeyboardInterrupt()), interrupted="stopped") == 130
    assert capsys.readouterr().err == "stopped\n"


def test_the_status_is_mains_and_argparse_keeps_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert utils.run(lambda argv: 3) == 3
    assert utils.run(lambda argv: {"Set5": {}}) == 0  # a result that is not a status: success
    assert utils.run(lambda argv: None) == 0
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as stopped:
        utils.run(lambda argv: parser.parse_args(["--nothing"]))
    assert stopped.value.code == 2


# --- the choices written in lkdn.commands so that parsers import no torch ------------------------------------------

def test_the_choices_of_the_parsers_are_the_librarys() -> None:
    from lkdn.backends import BACKENDS
    from lkdn.backends.files import SUFFIXES
    from lkdn.commands import _export, leaderboard
    from lkdn.export import DEFAULT_OPSET
    from lkdn.leaderboard import DEFAULT_BASELINE
    from lkdn.ntire import SCORE_WEIGHTS

    assert commands.BACKENDS == BACKENDS
    assert commands.EXPORTED_SUFFIXES == SUFFIXES
    assert commands.NTIRE_YEARS == tuple(sorted(SCORE_WEIGHTS))
    assert _export.DEFAULT_OPSET == DEFAULT_OPSET
    assert leaderboard.DEFAULT_BASELINE == DEFAULT_BASELINE


HEAVY = ("torch", "numpy", "cv2", "basicsr", "matplotlib")


def test_no_command_imports_torch_before_it_reads_its_command_line() -> None:
    """Each command's ``--help``, in a process of its own: no torch, numpy, OpenCV, basicsr or matplotlib imported."""
    code = ("import sys\nfrom lkdn.commands import COMMANDS\nfrom lkdn.commands.__main__ import main\n"
            "try:\n    main([sys.argv[1], '--help'])\nexcept SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    for command in commands.COMMANDS:
        done = subprocess.run([sys.executable, "-c", code, command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert done.stdout.strip().splitlines()[-1] == "[]", command


def test_import_lkdn_imports_no_torch_and_keeps_its_api() -> None:
    code = ("import sys, lkdn\nassert 'torch' not in sys.modules\nprint(lkdn.__version__)\n"
            "assert lkdn.Upscaler.__name__ == 'Upscaler' and callable(lkdn.build_network)\n"
            "assert callable(lkdn.load_network_from_options)\n"
            "net = lkdn.build_network({'type': 'LKDN', 'num_feat': 8, 'num_atten': 8, 'num_block': 1, 'upscale': 2})\n"
            "print(type(net).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [importlib.import_module("lkdn").__version__, "LKDN"]


# --- every command's parser: its name, an example, hyphenated flags, the old spellings still accepted ---------------

#: the developer tools under scripts/ (lkdn-demo runs make_demo_data, make gpu-wheels make_gpu_wheels)
NOT_COMMANDS = {"data_preparation/make_demo_data", "make_gpu_wheels"}


class _CapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _capture(parser: argparse.ArgumentParser, argv: object = None, aliases: object = None) -> None:
    raise _CapturedError(parser)


def command_parsers(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[argparse.ArgumentParser, dict[str, str]]]:
    """command -> (its parser, its aliases), taken where the command reads its command line."""
    parsers = {}
    monkeypatch.setattr(utils, "parse_command_line", _capture)  # lkdn-train's, read in lkdn.utils
    for command, name in commands.COMMANDS.items():
        module = importlib.import_module(f"lkdn.commands.{name}")
        if hasattr(module, "parse_command_line"):
            monkeypatch.setattr(module, "parse_command_line", _capture)
        with pytest.raises(_CapturedError) as captured:
            module.main([])
        parsers[command] = captured.value.parser
    aliases = {"lkdn-test": {"--root": "--root-path"}}
    return {command: (parser, aliases.get(command, {})) for command, parser in parsers.items()}


@pytest.fixture(scope="module")
def parsers() -> dict[str, tuple[argparse.ArgumentParser, dict[str, str]]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return command_parsers(monkeypatch)


def test_every_command_is_read_by_command_parser(parsers: dict) -> None:
    assert sorted(parsers) == sorted(commands.COMMANDS)
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
                    new_args = utils.parse_command_line(parser, [*base, option, *value], aliases)
                    assert utils.parse_command_line(parser, [*base, old, *value], aliases) == new_args, (command, old)
                    if value:  # --old=value too (torch.distributed.launch passes --local_rank=N)
                        assert utils.parse_command_line(parser, [*base, f"{old}={value[0]}", *value[1:]],
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
    assert utils.old_spellings(parser, argv) == ["--force-yml", "path:x=--a_b", "--", "--force_yml"]


def test_every_script_runs_a_command_or_is_a_developer_tool() -> None:
    """A script under scripts/ runs a command's ``main`` in three lines (no code of its own, no sys.path edit)."""
    shims = {}
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        name, text = str(path.relative_to(ROOT / "scripts").with_suffix("")), path.read_text(encoding="utf-8")
        assert "sys.path" not in text, name
        if name in NOT_COMMANDS:
            continue
        shim = re.fullmatch(r'from lkdn\.commands\.(\w+) import main\n\nif __name__ == "__main__":\n'
                            r"    raise SystemExit\(main\(\)\)\n", text)
        assert shim, name
        shims[name] = shim.group(1)
    assert sorted(set(shims.values())) == sorted(set(commands.COMMANDS.values()) - {"train", "test"})
    for entry in ("train", "test"):  # BasicSR's python lkdn/train.py and python lkdn/test.py
        assert "sys.path" not in (ROOT / "lkdn" / f"{entry}.py").read_text(encoding="utf-8")


def test_setup_installs_every_command_and_the_readme_lists_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import setuptools

    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    assert sorted(runpy.run_path(str(ROOT / "setup.py"))["COMMANDS"]) == sorted(commands.entry_points())
    table = (ROOT / "README.md").read_text().split("| command | runs | what it does |", 1)[1].split("\n\n", 1)[0]
    for command, module in commands.COMMANDS.items():
        assert f"`{command}`" in table and f"`lkdn.commands.{module}`" in table, command
