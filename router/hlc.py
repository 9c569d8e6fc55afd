"""The router's hybrid logical clock (pure: wall time comes in as data).

A reading is a revision (DESIGN.md, "Revisions and time"): the same domain
as revisions and closed timestamps, converted to and from milliseconds by
the one encoding in shard/hlc.py (a shared leaf), re-exported here. The
router sends its reading with every request and advances it to every node's
answer, so a write on one shard after a read on another gets a larger
revision.
"""

from __future__ import annotations

from shard.hlc import LOGICAL_BITS, MAX_SAFE_REVISION, from_ms, to_ms

__all__ = ["LOGICAL_BITS", "Hlc", "from_ms", "to_ms"]


class Hlc:
    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def now(self, wall_ms: int) -> int:
        self.last = max(self.last + 1, from_ms(wall_ms))
        return self.last

    def observe(self, ts: int) -> None:
        """Advance to a node's reading; one above 2^53 (a node of the
        pre-#17 encoding) is ignored, as shard/hlc.py's clock does."""
        if self.last < ts <= MAX_SAFE_REVISION:
            self.last = ts
