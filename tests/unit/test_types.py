"""`mypy --strict` over the modules that are kept strictly typed (STYLE.md:
the pure core first). Skipped where mypy is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRICT = ["raft/core", "raft/storage"]


def test_strict_typing() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (it comes with the test extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(REPO / ".mypy_cache"), *STRICT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
