"""The router's hybrid logical clock (pure: wall time comes in as data).

A reading is ``(unix_ms << 16) | logical`` (DESIGN.md, "Revisions and
time"), the same domain as revisions and closed timestamps. The router sends
its reading with every request and advances it to every node's answer, so a
write on one shard after a read on another gets a larger revision.
"""

from __future__ import annotations

LOGICAL_BITS = 16


def from_ms(unix_ms: int) -> int:
    return unix_ms << LOGICAL_BITS


def to_ms(ts: int) -> int:
    return ts >> LOGICAL_BITS


class Hlc:
    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def now(self, wall_ms: int) -> int:
        self.last = max(self.last + 1, from_ms(wall_ms))
        return self.last

    def observe(self, ts: int) -> None:
        if ts > self.last:
            self.last = ts
