"""The documentation tells the truth about the clone: every file and options path it names exists, every
install command installs this project, and it stands alone (no reference to files outside the repository)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the documentation checks read git's file list")
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


DOCS = ["README.md", "docs/*.md", "datasets/README.md", "experiments/README.md", "experiments/pretrained_models/README.md"]
# a path in the repository as the docs write it: options/..yml, scripts/..py, lkdn/..py, benchmarks/..py, docs/..md
REPO_PATH = re.compile(r"(?<![\w./-])((?:options|scripts|lkdn|benchmarks|docs|tests)/[\w./-]+\.(?:yml|py|md))")
# files that a documented command writes, not shipped ones
WRITTEN = {"options/test/LKDN/test_LKDN-S_deploy_x4.yml", "lkdn/archs/tinyrep_arch.py", "lkdn/archs/my_net_arch.py"}


def test_every_repository_path_in_the_docs_exists() -> None:
    missing = []
    for doc in tracked(*DOCS):
        for match in REPO_PATH.finditer(doc.read_text(encoding="utf-8")):
            path = match.group(1).rstrip(".")
            if "<" in path or "*" in path or path in WRITTEN or re.search(r"\{|\bN\b", path):
                continue
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_install_commands_name_the_clone_not_the_package_index() -> None:
    wrong = re.compile(r"pip install (?:-U )?[\"']?lkdn(?:\[|[\"']?\s|[\"']?$)")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in tracked(*DOCS, "*.py", "Makefile", "*.cfg", "*.toml")
                 if path.parent.name != "tests"  # the tests assert that messages do not say it
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if wrong.search(line)]
    assert not offenders, offenders


def test_the_project_stands_alone() -> None:
    """No file of the repository cites the development machines' specification documents."""
    offenders = [str(path.relative_to(ROOT)) for path in tracked("*.py", "*.md", "*.yml", "Makefile")
                 if re.search(r"\bDESIGN\.md\b|\bSTYLE\.md\b", path.read_text(encoding="utf-8"))
                 and path.name != "test_docs.py"]
    assert not offenders, offenders


def test_readme_sections_that_code_points_to_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = {line.lstrip("#").strip() for line in readme.splitlines() if line.startswith("#")}
    cited = set()
    for path in tracked("*.py", "*.yml", "*.md"):
        if path.name != "test_docs.py":  # its own pattern
            cited |= set(re.findall(r'README "([^"]+)"', path.read_text(encoding="utf-8")))
    assert cited, "no README section is cited: the pattern is stale"
    assert cited <= headings, sorted(cited - headings)
