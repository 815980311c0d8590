"""The two main jobs stay shallow: one image through ``lkdn-infer -opt`` calls into at most 8 lkdn files
outside ``lkdn/archs/`` and a training YAML up to its first optimizer step into at most 14, each opening its
YAML once (counted with ``sys.setprofile`` by benchmarks/bench_paths.py, whose section of docs/benchmarks.md
lists the files). The counts do not depend on the machine."""

from __future__ import annotations

import pytest
from conftest import load_script

pytestmark = pytest.mark.slow  # two fresh interpreters, each importing torch and running its job


def test_one_image_and_one_training_start_stay_within_their_goals() -> None:
    paths = load_script("benchmarks/bench_paths.py")
    results = paths.measure_both()
    for job, goal in paths.GOALS.items():
        files = results[job]["files"]
        assert len(files) <= goal, f"{job}: {len(files)} lkdn files (goal {goal}): {files}"
        assert results[job]["yaml_opens"] == 1, f"{job} opened its YAML {results[job]['yaml_opens']} times"
    assert "lkdn/commands/inference.py" in results["inference"]["files"]  # the hook saw the job itself
    assert "lkdn/training/pipeline.py" in results["train"]["files"]
