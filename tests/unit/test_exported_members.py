"""Public packages export exactly what `__all__` says (httpx's test_exported_members)."""

from __future__ import annotations

import importlib
from inspect import ismodule

import pytest

PACKAGES = ["raft.core", "raft.transport", "raft.storage", "placement", "shard.node", "shard.agent"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_matches_public_names(package: str) -> None:
    mod = importlib.import_module(package)
    exported = set(mod.__all__)
    public = {
        name
        for name in dir(mod)
        if not name.startswith("_") and not ismodule(getattr(mod, name))
    } - {"annotations"}  # `from __future__ import annotations`
    assert exported == public, (
        f"in {package}.__all__ but not defined: {sorted(exported - public)}; "
        f"public but not in __all__: {sorted(public - exported)}"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exist_and_are_unique(package: str) -> None:
    mod = importlib.import_module(package)
    assert len(mod.__all__) == len(set(mod.__all__)), "duplicate names in __all__"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []
