"""The import graph of ``lkdn/``: no cycles, and no import from a lower layer to a higher one.

The graph is read with :mod:`ast` from every ``.py`` file, imports inside functions included (they
run too, only later). The table of layers is the one in README.md's "Layers" section (between the
``<!-- layers -->`` markers): one source of truth for the docs and this test.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lkdn"
README = ROOT / "README.md"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``file:line``."""

    source: str
    target: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    """``lkdn.archs.build`` for ``lkdn/archs/build.py``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> list[Edge]:
    """Every import of a module of the package at ``root`` by another, at any depth of the code.

    ``from package import name`` is an import of ``package.name`` when that is a module, else of
    ``package``. The parent packages Python imports on the way are not edges.
    """
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    edges = []
    for source, path in files.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in dict.fromkeys(targets):
                if target in files and target != source:
                    edges.append(Edge(source, target, str(path.relative_to(root.parent)), node.lineno))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges, in order) through each strongly connected component with more than one module."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        # breadth-first search inside the component for the shortest way back to ``start``
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        while frontier and start not in {e.target for p in paths.values() for e in p[-1:]}:
            following = []
            for node in frontier:
                for edge in graph.get(node, []):
                    if edge.target in component and (edge.target not in paths or edge.target == start):
                        paths[edge.target if edge.target != start else "\0back"] = paths[node] + [edge]
                        following.append(edge.target)
            frontier = [n for n in following if n != start]
            if "\0back" in paths:
                break
        cycles.append(paths["\0back"])
    return cycles


def describe_cycle(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source] + [e.target for e in cycle]) + "\n    " + "\n    ".join(map(str, cycle))


@dataclass(frozen=True)
class Layers:
    """The table: entry (``lkdn.archs``, ``lkdn.training.optim``, ``lkdn`` for the package's ``__init__``) -> layer."""

    entries: Mapping[str, int]
    names: Mapping[int, str]

    def layer_of(self, module: str) -> int | None:
        """The layer of the most specific entry that is ``module`` or a package holding it (``lkdn`` is exact)."""
        best = None
        for entry, layer in self.entries.items():
            if module == entry or (entry != "lkdn" and module.startswith(entry + ".")):
                if best is None or len(entry) > len(best[0]):
                    best = (entry, layer)
        return None if best is None else best[1]

    def violations(self, edges: list[Edge]) -> list[str]:
        found = []
        for edge in edges:
            source, target = self.layer_of(edge.source), self.layer_of(edge.target)
            if source is not None and target is not None and target > source:
                found.append(f"{edge} (layer {target} {self.names[target]}) from layer {source} "
                             f"{self.names[source]}")
        return found


def parse_layers(text: str, *, source: str = "README.md") -> Layers:
    """The table between ``<!-- layers`` and ``<!-- /layers -->``: ``| N name | `module`, ... | layers 0-N |``."""
    match = re.search(r"<!-- layers\b.*?-->(.*?)<!-- /layers -->", text, re.S)
    if match is None:
        raise ValueError(f"{source}: no <!-- layers --> table")
    entries: dict[str, int] = {}
    names: dict[int, str] = {}
    for row in match.group(1).strip().splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        head = re.fullmatch(r"(\d+) (.+)", cells[0])
        if len(cells) != 3 or head is None:
            raise ValueError(f"{source}: layer table row {row!r}: expected | N name | `modules` | may import |")
        layer, name = int(head.group(1)), head.group(2)
        allowed = "layer 0" if layer == 0 else f"layers 0-{layer}"
        if cells[2] != allowed:
            raise ValueError(f"{source}: layer {layer} {name}: 'may import' says {cells[2]!r}, the rule is {allowed!r}")
        names[layer] = name
        for module in re.findall(r"`([\w.]+)`", cells[1]):
            if module in entries:
                raise ValueError(f"{source}: {module} is in layers {entries[module]} and {layer}")
            entries["lkdn" if module == "__init__" else f"lkdn.{module}"] = layer
    return Layers(entries, names)


# --------------------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph(PACKAGE)


@pytest.fixture(scope="module")
def layers() -> Layers:
    return parse_layers(README.read_text(encoding="utf-8"))


def test_the_package_has_no_import_cycle(edges: list[Edge]) -> None:
    cycles = find_cycles(edges)
    assert not cycles, "import cycles in lkdn/:\n" + "\n".join(map(describe_cycle, cycles))


def test_the_readme_table_has_six_layers(layers: Layers) -> None:
    assert sorted(layers.names) == [0, 1, 2, 3, 4, 5]
    assert layers.layer_of("lkdn.checkpoint") == 0
    assert layers.layer_of("lkdn.commands.inference") == 5
    assert layers.layer_of("lkdn.training.optim") == 1 and layers.layer_of("lkdn.training.pipeline") == 4  # the most specific entry wins
    assert layers.layer_of("lkdn") == 5 and layers.layer_of("lkdn.nothing") is None


def test_every_module_has_a_layer(layers: Layers) -> None:
    missing = [module_name(p, PACKAGE) for p in sorted(PACKAGE.rglob("*.py"))
               if layers.layer_of(module_name(p, PACKAGE)) is None]
    assert not missing, f"modules missing from README.md's layer table: {', '.join(missing)}"


def test_no_import_goes_up_a_layer(edges: list[Edge], layers: Layers) -> None:
    violations = layers.violations(edges)
    assert not violations, "imports from a lower layer to a higher one:\n" + "\n".join(violations)


def test_inference_modules_do_not_reach_the_training_data_module(edges: list[Edge]) -> None:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    for start in ("lkdn.images", "lkdn.upscaler", "lkdn.reparam", "lkdn.checkpoint"):
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        assert not {m for m in seen if m.startswith(("lkdn.data", "lkdn.training."))} - {
            "lkdn.training.optim"}, start
    assert {e.target for e in edges if e.source == "lkdn.reparam"} == {"lkdn.archs.contract"}
    assert {e.target for e in edges if e.source == "lkdn.checkpoint"} == {"lkdn.utils", "lkdn.errors"}


# --------------------------------------------------------------------------------------- the checker


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_a_cycle_through_a_function_level_import_is_found_and_printed(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "a.py": "from pkg.b import f\n",
        "b.py": "def f():\n    from pkg import c\n    return c\n",
        "c.py": "import os\n\n\ndef g():\n    from .a import f  # lazy\n",
        "d.py": "from pkg.a import f\n",
    })
    cycles = find_cycles(import_graph(root))
    assert len(cycles) == 1
    assert describe_cycle(cycles[0]).splitlines()[0] == "pkg.a -> pkg.b -> pkg.c -> pkg.a"
    assert "pkg/b.py:2: pkg.b imports pkg.c" in describe_cycle(cycles[0])
    assert "pkg/c.py:5: pkg.c imports pkg.a" in describe_cycle(cycles[0])


def test_an_import_up_a_layer_is_named(tmp_path: Path) -> None:
    root = _package(tmp_path, {"low.py": "def f():\n    import pkg.high\n", "high.py": "from pkg import low\n"})
    layers = Layers({"pkg.low": 0, "pkg.high": 1}, {0: "foundation", 1: "tools"})
    assert layers.violations(import_graph(root)) == [
        "pkg/low.py:2: pkg.low imports pkg.high (layer 1 tools) from layer 0 foundation"]


def test_a_table_whose_rule_column_disagrees_is_refused() -> None:
    text = ("<!-- layers -->\n| layer | modules | may import |\n| --- | --- | --- |\n"
            "| 1 core | `reparam` | layers 0-2 |\n<!-- /layers -->\n")
    with pytest.raises(ValueError, match=r"README.md: layer 1 core: 'may import' says 'layers 0-2'"):
        parse_layers(text)
