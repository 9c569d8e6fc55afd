"""The pure modules import no I/O, clocks, threads or global randomness.

STYLE.md, "Layout": the Raft core (and the other pure cores) import only
stdlib modules that do no I/O. This test parses their imports with `ast`, so
it holds even for modules that are never imported by another test. Imports
inside `if TYPE_CHECKING:` blocks never execute and are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = frozenset(
    {
        "asyncio",
        "grpc",
        "rocksdict",
        "time",
        "random",
        "threading",
        "os",
        "socket",
        "subprocess",
        "multiprocessing",
        "concurrent",
        "selectors",
        "signal",
    }
)

# The Raft core is mandatory; the other pure modules are checked once they exist.
MANDATORY_PACKAGE = "raft/core"
OPTIONAL_MODULES = (
    "shard/statemachine.py",
    "shard/smsnapshots.py",
    "shard/dedup.py",
    "shard/meta.py",
    "shard/splitmerge.py",
    "shard/reader.py",
    "shard/slots.py",
    "shard/hlc.py",
    "shard/sidets.py",
    "shard/keys.py",
    "shard/engine.py",
    "shard/types.py",
    "shard/errors.py",
    "shard/codec.py",
    "shard/mvcc.py",
    "shard/mvcc_range.py",
    "shard/keyindex.py",
    "shard/txn.py",
    "shard/txn2pc.py",
    "shard/snapshot.py",
    "shard/leasekeys.py",
    "shard/quota.py",
    "shard/hashkv.py",
    "shard/node/requests.py",
    "shard/node/config.py",
    "shard/agent/transfer.py",
    "shard/agent/config.py",
    "flotilla/campaign/history.py",
    "flotilla/campaign/linearizability.py",
    "flotilla/campaign/checkers.py",
    "flotilla/campaign/kinds.py",
    "placement/model.py",
    "placement/commands.py",
    "placement/codec.py",
    "placement/state.py",
    "placement/registry.py",
    "placement/leasebook.py",
    "placement/authbook.py",
    "placement/leases.py",
    "placement/operators.py",
    "placement/scheduler.py",
    "placement/leaderrules.py",
    "placement/simulation.py",
    "placement/heatmap.py",
    "placement/dashboard.py",
    "router/slots.py",
    "router/etcd_texts.py",
    "router/gateway/codec.py",
    "router/merge.py",
    "router/hlc.py",
    "router/authperm.py",
    "router/bbolt.py",
    "router/etcdsnapshot.py",
)


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


class _ImportFinder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []  # (line, module imported)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for stmt in node.orelse:  # only the `else:` branch executes
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module is not None:  # relative imports stay in the package
            self.found.append((node.lineno, node.module))


def forbidden_imports(source: str, filename: str = "<string>") -> list[str]:
    """Describe every import in source of a forbidden module or its submodules."""
    finder = _ImportFinder()
    finder.visit(ast.parse(source, filename=filename))
    return [
        f"{filename}:{line}: imports {module}"
        for line, module in finder.found
        if module.split(".")[0] in FORBIDDEN
    ]


def _pure_files() -> list[Path]:
    files = sorted((REPO_ROOT / MANDATORY_PACKAGE).rglob("*.py"))
    files += [REPO_ROOT / m for m in OPTIONAL_MODULES if (REPO_ROOT / m).is_file()]
    return files


def test_raft_core_exists() -> None:
    assert list((REPO_ROOT / MANDATORY_PACKAGE).rglob("*.py")), f"no .py files under {MANDATORY_PACKAGE}"


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_pure_module_imports(path: Path) -> None:
    rel = path.relative_to(REPO_ROOT).as_posix()
    assert forbidden_imports(path.read_text(encoding="utf-8"), rel) == []


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("import time", id="import"),
        pytest.param("import os.path", id="submodule"),
        pytest.param("import asyncio as aio", id="alias"),
        pytest.param("from time import monotonic", id="from"),
        pytest.param("from concurrent.futures import ThreadPoolExecutor", id="from-submodule"),
        pytest.param("import json, random", id="one-of-several"),
        pytest.param("def f():\n    import socket\n", id="in-function"),
        pytest.param("try:\n    import grpc\nexcept ImportError:\n    pass\n", id="in-try"),
        pytest.param("if TYPE_CHECKING:\n    pass\nelse:\n    import threading\n", id="type-checking-else"),
        pytest.param("if DEBUG:\n    import signal\n", id="in-other-if"),
    ],
)
def test_checker_detects_forbidden_imports(source: str) -> None:
    assert len(forbidden_imports(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("import timeit\nimport dataclasses\nfrom typing import Protocol", id="similar-names"),
        pytest.param("from . import time\nfrom .os import x", id="relative"),
        pytest.param("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n", id="type-checking"),
        pytest.param("import typing\nif typing.TYPE_CHECKING:\n    from asyncio import Queue\n", id="typing.type-checking"),
    ],
)
def test_checker_allows(source: str) -> None:
    assert forbidden_imports(source) == []
