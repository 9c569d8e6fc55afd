"""A checker's finding (flotilla/campaign/checkers.py, bankcheck.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    kind: str
    key: bytes
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} key={self.key.decode('utf-8', 'backslashreplace')}: {self.detail}"
