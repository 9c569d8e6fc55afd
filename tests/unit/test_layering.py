"""Dependencies point the way DESIGN.md ("Dependencies") draws them, and no
module imports itself back.

Every production module under raft/, shard/, placement/, router/, rpc/ and
flotilla/ is parsed with `ast` (so the test holds for modules no other test
imports); every import counts: top-level, inside functions, inside
``if TYPE_CHECKING:`` (a type-only import is still a dependency, and a
cycle through one is still a cycle for a reader).

The rules (DESIGN.md is the reference; keep the two in step):

- raft imports nothing of ours but flotillapb;
- shard and placement import raft, flotillapb and the shared leaves;
- router imports flotillapb and the shared leaves;
- flotilla/ (the command: wiring) may import anything;
- a shared leaf (SHARED_LEAVES) imports nothing of ours but flotillapb and
  other shared leaves, and the ``__init__`` of its package imports nothing
  else either (importing ``shard.slots`` runs ``shard/__init__.py``).

Each package may import itself. Known exceptions would be listed in PENDING
(wrong-way imports) and PENDING_CYCLE_EDGES (one edge of each known cycle),
each with its reason; both are empty since issue #14 and only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

PACKAGES = ("raft", "shard", "placement", "router", "rpc", "flotilla")
OURS = frozenset((*PACKAGES, "flotillapb"))

ALLOWED: dict[str, frozenset[str]] = {
    "raft": frozenset({"flotillapb"}),
    "shard": frozenset({"raft", "flotillapb"}),
    "placement": frozenset({"raft", "flotillapb"}),
    "router": frozenset({"flotillapb"}),
    "rpc": frozenset({"flotillapb"}),
    "flotilla": OURS,
}
"""Top-level package -> the other packages of ours it may import (besides
the shared leaves)."""

SHARED_LEAVES = frozenset(
    {"shard.slots", "shard.hlc", "router.etcd_errors", "router.etcd_texts", "rpc", "rpc.channels", "rpc.placementclient", "rpc.tls"}
)
"""Modules any package may import (DESIGN.md, "Dependencies", says why each is one)."""

PENDING: frozenset[tuple[str, str]] = frozenset()
"""Known wrong-way edges (importer, imported), each removed by a pending
part of issue #14. Empty: add one only with its reason and the issue."""

PENDING_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()
"""Known import cycles, each entered as the one edge (importer, imported)
whose removal breaks it. The cycle check runs without these edges; the list
only shrinks (an edge that is gone must leave it). Empty since issue #14:
add one only with its reason and the issue."""


# ------------------------------------------------------------------- parsing


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = production_modules()


def _resolve(name: str) -> str:
    """The module of ours that `name` (a module, or a module's attribute) is."""
    while name and name not in MODULES and name.split(".")[0] != "flotillapb":
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, source: str) -> Iterator[tuple[int, str]]:
    """(line, imported module of ours) for every import in source, at any
    depth (functions, TYPE_CHECKING blocks, try blocks)."""
    is_pkg = MODULES.get(module, Path()).name == "__init__.py"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    yield node.lineno, _resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] not in OURS:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield node.lineno, _resolve(sub if sub in MODULES else target)


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for _, target in imports_of(m, path.read_text(encoding="utf-8")):
            if target in MODULES and target != m:
                g[m].add(target)
    return g


# --------------------------------------------------------------------- rules


def _package_inits(module: str) -> list[str]:
    """The __init__ modules that importing `module` runs (its parents)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]


def wrong_way(importer: str, imported: str) -> str | None:
    """Why importer may not import imported, or None if it may."""
    src, dst = importer.split(".")[0], imported.split(".")[0]
    if dst == "flotillapb":
        return None
    if importer in SHARED_LEAVES or importer in {p for leaf in SHARED_LEAVES for p in _package_inits(leaf)}:
        if imported in SHARED_LEAVES or (dst == src and importer in SHARED_LEAVES and imported in _package_inits(importer)):
            return None
        return "a shared leaf (or its package's __init__) imports nothing of ours but flotillapb and shared leaves"
    if dst == src or imported in SHARED_LEAVES:
        return None
    if dst not in ALLOWED[src]:
        return f"{src} may import only {sorted(ALLOWED[src]) or 'nothing of ours'} and the shared leaves"
    return None


def violations() -> list[str]:
    out = []
    for m, path in MODULES.items():
        for line, target in imports_of(m, path.read_text(encoding="utf-8")):
            why = wrong_way(m, target)
            if why and (m, target) not in PENDING:
                out.append(f"{path.relative_to(REPO_ROOT)}:{line}: {m} imports {target}: {why}")
    return out


def cycles(g: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


# --------------------------------------------------------------------- tests


def test_every_package_is_found() -> None:
    for pkg in PACKAGES:
        assert pkg in MODULES, f"no {pkg}/__init__.py"


def test_no_wrong_way_import() -> None:
    assert violations() == []


def test_pending_edges_still_exist() -> None:
    """An allow-listed edge that is gone must leave the list (it only shrinks)."""
    present = {(m, t) for m, p in MODULES.items() for _, t in imports_of(m, p.read_text(encoding="utf-8"))}
    assert sorted(PENDING - present) == []


def test_no_import_cycle() -> None:
    g = graph()
    for importer, imported in PENDING_CYCLE_EDGES:
        g.get(importer, set()).discard(imported)
    assert sorted(sorted(c) for c in cycles(g)) == []


def test_pending_cycle_edges_still_exist() -> None:
    """An allow-listed edge that is gone must leave the list (it only shrinks)."""
    g = graph()
    assert sorted(e for e in PENDING_CYCLE_EDGES if e[1] not in g.get(e[0], set())) == []


def test_shared_leaves_exist() -> None:
    assert sorted(SHARED_LEAVES - MODULES.keys()) == []


# ------------------------------------------------------------ the checker itself


@pytest.mark.parametrize(
    "importer,imported,wrong",
    [
        ("router.kv", "placement.state", True),
        ("router.kv", "shard.slots", False),
        ("router.kv", "rpc.placementclient", False),
        ("router.kv", "shard.node", True),
        ("shard.node", "placement.codec", True),
        ("shard.node", "router.etcd_errors", False),
        ("shard.node", "raft.core", False),
        ("placement.state", "shard.slots", False),
        ("placement.state", "shard.statemachine", True),
        ("raft.core.raft", "shard.slots", False),
        ("raft.runtime.host", "placement.state", True),
        ("flotilla.server", "placement.server", False),
        ("shard.slots", "shard.keys", True),
        ("rpc.placementclient", "rpc.channels", False),
        ("rpc.placementclient", "raft.core", True),
        ("router.etcd_errors", "router.kv", True),
        ("router.kv", "flotillapb.store_pb2", False),
    ],
)
def test_rules(importer: str, imported: str, wrong: bool) -> None:
    assert (wrong_way(importer, imported) is not None) == wrong


def test_imports_are_found_at_any_depth() -> None:
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import placement.state\n"
        "from shard import slots\n"
        "if TYPE_CHECKING:\n"
        "    from router.kv import KvRouter\n"
        "def f():\n"
        "    from rpc.placementclient import PlacementClient\n"
        "from . import cache\n"
    )
    found = {t for _, t in imports_of("router.forward", src)}
    assert found == {"placement.state", "shard.slots", "router.kv", "rpc.placementclient", "router.cache"}


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
