"""The code keeps to its map: no import cycles between modules of ``src/ddbcdc``, each package
imports only what the "may import" column of ARCHITECTURE.md's package table allows, every
package is in that table, and nothing imports the import paths kept for users.

The import graph is read from the source (AST): every ``import`` counts, those inside
functions and ``if TYPE_CHECKING:`` blocks included, since a cycle that only a lazy import
hides is still a cycle in the design.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "ddbcdc"
ALIASES = frozenset({"ddbcdc.attributes", "ddbcdc.itemjson", "ddbcdc.retrieval"})
_MAY_NAME_AN_ALIAS = re.compile(r"ddbcdc\.(?:attributes|itemjson|retrieval)\b|from ddbcdc import")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = SRC) -> dict[str, Path | None]:
    """Module name -> its source (None for a compiled extension, known by its stub)."""
    found: dict[str, Path | None] = {_module_name(p, root): p for p in root.rglob("*.py")}
    for stub in root.rglob("*.pyi"):
        found.setdefault(_module_name(stub, root), None)
    return found


def imported(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that ``tree`` imports (``from p import m`` names module
    ``p.m`` when there is one, else ``p``)."""
    known = set(known)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
    return out & known


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of ddbcdc it imports."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8")) if path is not None else ast.Module()
        graph[name] = imported(tree, known) - {name}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def package_of(module: str) -> str:
    """``ddbcdc.x.y`` and ``ddbcdc.x`` -> ``x``; the root -> ``ddbcdc``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ddbcdc"


def _names(cell: str) -> list[str]:
    return [name.rstrip("/") for name in re.findall(r"`([^`]+)`", cell)]


def package_table(text: str) -> dict[str, set[str] | None]:
    """ARCHITECTURE.md's package table: package -> the packages it may import (directly),
    None for "anything"."""
    section = text.split("\n## Packages\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table: dict[str, set[str] | None] = {}
    for row in rows:
        packages, _job, may = (cell.strip() for cell in row.strip("|").split(" | "))
        allowed = None if may == "anything" else set(_names(may))
        assert allowed is None or allowed or may == "nothing", f"unreadable row: {row}"
        for package in _names(packages):
            table[package] = allowed
    return table


def closure(table: Mapping[str, set[str] | None]) -> dict[str, set[str] | None]:
    """What each package may import: its row's packages, what those may, and so on (None:
    anything)."""
    out: dict[str, set[str] | None] = {}
    for package, direct in table.items():
        seen: set[str] | None = set()
        todo = list(direct) if direct is not None else None
        while todo and seen is not None:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                more = table[name]
                seen, todo = (None, None) if more is None else (seen, todo + sorted(more))
        out[package] = None if direct is None else seen
    return out


def layering_violations(
    graph: Mapping[str, set[str]], table: Mapping[str, set[str] | None]
) -> list[str]:
    """``module -> module`` imports the table does not allow, across packages."""
    allowed = closure(table)
    bad = []
    for module, targets in sorted(graph.items()):
        mine = package_of(module)
        may = allowed[mine]
        for target in sorted(targets):
            theirs = package_of(target)
            if theirs != mine and may is not None and theirs not in may:
                bad.append(f"{module} -> {target}")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


@pytest.fixture(scope="module")
def table() -> dict[str, set[str] | None]:
    return package_table((REPO / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_every_package_is_on_the_map(
    graph: dict[str, set[str]], table: dict[str, set[str] | None]
) -> None:
    assert {package_of(m) for m in graph} == set(table)
    mentioned = {name for allowed in table.values() for name in allowed or ()}
    assert mentioned <= set(table)


def test_packages_import_only_what_the_map_allows(
    graph: dict[str, set[str]], table: dict[str, set[str] | None]
) -> None:
    assert layering_violations(graph, table) == []


def test_nothing_imports_the_kept_import_paths() -> None:
    """``ddbcdc.attributes``, ``.itemjson``, ``.retrieval`` are for users, and are their home
    modules: the project's own code (tests and tools included) imports the homes."""
    offenders = []
    for folder in ("src", "tests", "workers", "benchmarks", "migrations"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.parent == SRC and path.stem in {"attributes", "itemjson", "retrieval"}:
                continue  # the aliases themselves
            text = path.read_text(encoding="utf-8")
            if not _MAY_NAME_AN_ALIAS.search(text):
                continue  # parsing only the files that could
            tree = ast.parse(text)
            hits = imported(tree, ALIASES | {"ddbcdc"}) & ALIASES
            for node in ast.walk(tree):  # from ddbcdc import attributes
                if isinstance(node, ast.ImportFrom) and node.module == "ddbcdc":
                    hits |= {f"ddbcdc.{a.name}" for a in node.names} & ALIASES
            offenders += [f"{path.relative_to(REPO)}: {hit}" for hit in sorted(hits)]
    assert offenders == []


# The checks can fail: each sees what it is for.


def test_a_cycle_is_seen() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_a_type_only_import_counts(tmp_path: Path) -> None:
    pkg = tmp_path / "ddbcdc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text("from ddbcdc.two import f\n")
    (pkg / "two.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ddbcdc.one import g\n"
    )
    assert cycles(import_graph(pkg)) == [["ddbcdc.one", "ddbcdc.two"]]


def test_an_import_against_the_map_is_seen(table: dict[str, set[str] | None]) -> None:
    graph = {
        "ddbcdc.backfill.scan": {"ddbcdc.load.writer"},  # a source on a tool
        "ddbcdc.decode.record": {"ddbcdc.schema.mapping"},  # a stage on a later one
        "ddbcdc.verify.run": {"ddbcdc.errors", "ddbcdc.verify.rows"},  # allowed
    }
    assert layering_violations(graph, table) == [
        "ddbcdc.backfill.scan -> ddbcdc.load.writer",
        "ddbcdc.decode.record -> ddbcdc.schema.mapping",
    ]


def test_every_module_states_its_contract() -> None:
    """A module docstring saying what the module is for (a line is not enough)."""
    terse = []
    for name, path in sorted(modules().items()):
        if path is None:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if doc is None or len(doc.split()) < 8:
            terse.append(name)
    assert terse == []
