"""Static checks on how relay/ modules import each other and the outside libraries."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import relay

ROOT = Path(relay.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_names(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports anywhere."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    return names_in(path.read_text(encoding="utf-8"), package)


def names_in(source: str, package: str) -> Iterator[str]:
    """Every module name ``source`` (a module of ``package``) imports: top level, in functions,
    under TYPE_CHECKING (a cycle broken only for the type checker is still a cycle)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            yield from (f"{prefix}.{alias.name}" for alias in node.names)


def relay_imports(path: Path) -> set[str]:
    """The relay modules ``path`` imports (``from pkg import submodule`` counts the submodule)."""
    return {name for name in imported_names(path) if name in MODULES} - {module_name(path)}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def outside_importers(library: str) -> set[str]:
    return {
        name
        for name, path in MODULES.items()
        if any(n == library or n.startswith(library + ".") for n in imported_names(path))
    }


def test_finder_sees_hidden_cycles() -> None:
    """Test that the cycle finder sees imports under TYPE_CHECKING, in functions and relative
    ones, and reports a cycle but not a one-way chain."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from relay.sim.mesh import Mesh\n"
        "def f():\n    from relay.sim import radio\n"
        "from . import phone\n"
        "from ..mesh.core import MeshCore\n"
    )
    names = set(names_in(source, "relay.sim")) & set(MODULES)
    assert names == {
        "relay.sim",
        "relay.sim.mesh",
        "relay.sim.radio",
        "relay.sim.phone",
        "relay.mesh.core",
    }
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}}) == []


def test_no_import_cycles_in_relay() -> None:
    """Test that no relay module imports (at any depth, TYPE_CHECKING and function-level imports
    included) a module that imports it back."""
    graph = {name: relay_imports(path) for name, path in MODULES.items()}
    assert import_cycles(graph) == []


def test_meshtastic_imported_only_by_the_bridge_and_the_emulator() -> None:
    """Test that the thread bridge is the only relay module importing meshtastic outside the
    emulator (relay.sim builds the device side from meshtastic's protobufs)."""
    importers = outside_importers("meshtastic")
    assert "relay.links.meshtastic_bridge" in importers
    assert {m for m in importers if not m.startswith("relay.sim.")} == {
        "relay.links.meshtastic_bridge"
    }
