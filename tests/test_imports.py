"""No import cycle among keyrotd's modules, type-only imports included (docs/architecture.md).

Every module under ``keyrotd/`` is parsed with ``ast``: every import counts, at the top, inside a
function or under ``if TYPE_CHECKING:``. A relative import is resolved against its package;
``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of ``pkg``
(a name a package's ``__init__`` re-exports therefore counts as the package, which imports it).
A cycle is a strongly connected component of more than one module, or a module importing itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keyrotd

ROOT = Path(keyrotd.__file__).parent
PACKAGE = "keyrotd"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, modules: dict[str, Path]) -> set[str]:
    """The keyrotd modules ``name`` imports, anywhere in its source."""
    path = modules[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                targets.add(child if child in modules else source)
    edges: set[str] = set()
    for target in targets:
        # ``import keyrotd.a.b`` names a module; anything else under keyrotd is its nearest module
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith(PACKAGE) and target:
            edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, modules) for name in modules}


def _path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete circle through ``component``, for the failure message."""
    members = set(component)
    start = component[0]
    trail = [start]
    seen = {start}
    while True:
        nxt = sorted(t for t in graph[trail[-1]] if t in members)
        back = [t for t in nxt if t == start]
        if (back and len(trail) > 1) or (back and start in graph[start]):
            return [*trail, start]
        fresh = [t for t in nxt if t not in seen]
        if not fresh:
            return [*trail, nxt[0]] if nxt else trail
        trail.append(fresh[0])
        seen.add(fresh[0])


def test_every_kind_of_import_counts(tmp_path: Path) -> None:
    """Top-level, function-level, type-only and relative imports are all edges."""
    package = tmp_path / "keyrotd" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .b import VALUE\n")
    (package / "b.py").write_text("VALUE = 1\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import keyrotd.top\n"
        "from . import b\n"
        "from .. import lazy\n"
        "if TYPE_CHECKING:\n"
        "    from keyrotd.typed import Thing\n"
        "def later():\n"
        "    from keyrotd.pkg import VALUE\n"
    )
    names = ["top", "lazy", "typed"]
    modules = {f"keyrotd.{n}": tmp_path / "keyrotd" / f"{n}.py" for n in names}
    modules |= {"keyrotd.pkg": package / "__init__.py", "keyrotd.pkg.b": package / "b.py"}
    modules["keyrotd.pkg.a"] = package / "a.py"
    assert _imports("keyrotd.pkg.a", modules) == {
        "keyrotd.top",
        "keyrotd.pkg.b",  # ``from . import b``: the module b
        "keyrotd.lazy",
        "keyrotd.typed",
        "keyrotd.pkg",  # ``from keyrotd.pkg import VALUE``: a name, so the package
    }
    assert _imports("keyrotd.pkg", modules) == {"keyrotd.pkg.b"}


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    cycles = _cycles(graph)
    assert cycles == [["a", "b", "c"], ["e"]]
    assert _path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_keyrotd() -> None:
    graph = _graph()
    cycles = list(_cycles(graph))
    assert not cycles, "import cycles in keyrotd/ (type-only imports count):\n" + "\n".join(
        " -> ".join(_path(graph, component)) for component in cycles
    )
