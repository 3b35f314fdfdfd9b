"""The import graph reads as the data flow: adapters depend on the contract, not the runner;
no two modules import each other; the core imports no stage; only the command line (cli/)
wires stages together."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mutualaid", "producers", "streams", "consumers", "cli")
STAGES = ("producers", "streams", "consumers")
ADAPTERS = ("alpr", "alpr_http", "cad", "rms", "sqlpoll", "parsing", "hotlist")


def modules() -> dict[str, Path]:
    """Every module of the project by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at run time (TYPE_CHECKING blocks left out),
    inside functions too: ``from package import module`` counts as importing that module."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                subs = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
                found.update(subs or {node.module})
                if len(subs) < len(node.names):  # names the package itself defines
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[module] = {m for m in found if m.split(".")[0] in PACKAGES} - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected set of two or more modules
    (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            members = []
            while not members or members[-1] != module:
                members.append(stack.pop())
            if len(members) > 1:
                found.append(sorted(members))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_walk_sees_the_modules() -> None:
    graph = imports()
    assert {"producers.contract", "consumers.index.base", "streams.router"} <= set(graph)
    assert "producers.contract" in graph["producers.alpr"]
    assert {"cli.stages", "mutualaid.errors"} <= graph["cli.main"]  # `from cli import stages`


def test_adapters_import_the_contract_not_the_runner() -> None:
    graph = imports()
    assert [a for a in ADAPTERS if "producers.runner" in graph[f"producers.{a}"]] == []
    assert graph["producers.contract"] <= {"mutualaid.errors", "mutualaid.topics"}


def test_no_two_modules_import_each_other() -> None:
    graph = imports()
    pairs = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))
    assert pairs == []


def test_no_modules_import_each_other_round_a_cycle() -> None:
    """Not only pairs: no chain of imports leads back to where it started."""
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_a_cycle_of_three() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_imports_no_stage() -> None:
    graph = imports()
    reaching = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("mutualaid.")
        for target in targets
        if not target.startswith("mutualaid")
    }
    assert reaching == set()


def test_only_the_command_line_wires_stages_together() -> None:
    """Data flows producers/ -> Kafka -> streams/ -> Kafka -> consumers/: no stage imports
    another stage or the command line; cli/ is the one place that imports them all."""
    graph = imports()
    crossing = {
        (module, target)
        for module, targets in graph.items()
        if module.split(".")[0] in STAGES
        for target in targets
        if target.split(".")[0] not in ("mutualaid", module.split(".")[0])
    }
    assert crossing == set()
    wired = {t.split(".")[0] for m, ts in graph.items() if m.startswith("cli") for t in ts}
    assert set(STAGES) <= wired
