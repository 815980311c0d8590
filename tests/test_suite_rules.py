"""Rules of the suite itself: no test depends on the machine's speed, and a failing example stays readable.

CI machines are shared and slow: a Hypothesis deadline fails a correct test on a busy machine (a
5 s deadline failed ``test_fuzz_weights`` beside a second ``make test``), so every property test
runs under the suite-wide profile of ``conftest.py``, without deadlines, and none sets its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from hypothesis import HealthCheck, settings
from hypothesis.vendor import pretty

TESTS = Path(__file__).resolve().parent


def test_the_suite_wide_hypothesis_profile_has_no_deadline() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check
    assert settings.default.derandomize and settings.default.database is None


def _hypothesis_settings_calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) == "settings" or getattr(node.func, "attr", None) == "settings")]


def test_no_property_test_sets_a_deadline_or_a_speed_health_check_of_its_own() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name in ("conftest.py", Path(__file__).name):
            continue
        for call in _hypothesis_settings_calls(ast.parse(path.read_text())):
            for keyword in call.keywords:
                if keyword.arg == "deadline" or (keyword.arg == "suppress_health_check"
                                                 and "too_slow" in ast.unparse(keyword.value)):
                    offenders.append(f"{path.relative_to(TESTS)}:{call.lineno}: {ast.unparse(call)}")
    assert not offenders, "set these through the profile in conftest.py:\n" + "\n".join(offenders)


def test_the_rule_finds_a_deadline_given_to_settings() -> None:
    tree = ast.parse("FUZZ = settings(max_examples=60, deadline=5000)\nlimit = deadline = 3\n")
    calls = _hypothesis_settings_calls(tree)
    assert [k.arg for call in calls for k in call.keywords] == ["max_examples", "deadline"]


def test_a_failing_example_shows_a_tensor_by_shape_and_dtype() -> None:
    text = pretty.pretty({"weight": torch.zeros(64, 64, 3, 3), "bias": torch.nn.Parameter(torch.zeros(64))})
    assert "'weight': tensor(shape=(64, 64, 3, 3), dtype=torch.float32)" in text, text
    assert "'bias': tensor(shape=(64,), dtype=torch.float32)" in text and len(text) < 150, text
