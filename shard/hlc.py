"""Hybrid logical clock revisions.

A revision is one 64-bit integer, ``(unix_ms << 16) | logical``: the wall
clock in milliseconds above 16 bits of logical counter. Integer order is HLC
order, so revisions from different shards compare as moments in time.

``HybridClock`` is the clock a node keeps (the leader stamps each proposal
with ``now(wall_ms)``; routers and nodes ``update`` it with every revision
they see, so causality carries across shards). It never reads a clock: the
caller passes the wall time in.

``next_revision`` is the rule every replica applies to an entry that writes:
``max(prev_rev + 1, stamp, closed_ts + 1)``: strictly growing, never behind
the leader's stamp, and never at or below a closed timestamp already applied.
"""

from __future__ import annotations

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_REVISION = (1 << 63) - 1  # etcd revisions are int64 on the wire


def make(wall_ms: int, logical: int = 0) -> int:
    if wall_ms < 0 or not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"bad HLC parts wall_ms={wall_ms} logical={logical}")
    return (wall_ms << LOGICAL_BITS) | logical


def wall_ms_of(revision: int) -> int:
    return revision >> LOGICAL_BITS


def logical_of(revision: int) -> int:
    return revision & LOGICAL_MASK


def next_revision(prev_rev: int, stamp: int, closed_ts: int) -> int:
    """The revision of a writing entry applied after prev_rev."""
    return max(prev_rev + 1, stamp, closed_ts + 1)


class HybridClock:
    """A node's HLC. Values it returns strictly grow, whatever the wall clock
    does; when the wall clock stalls or steps back, the logical part counts
    (and may carry into the millisecond part, which keeps the order)."""

    __slots__ = ("_last",)

    def __init__(self, last: int = 0) -> None:
        self._last = last

    @property
    def last(self) -> int:
        return self._last

    def now(self, wall_ms: int) -> int:
        """A fresh timestamp, greater than every one seen or issued before."""
        self._last = max(self._last + 1, wall_ms << LOGICAL_BITS)
        return self._last

    def update(self, remote: int) -> int:
        """Learn of a timestamp from elsewhere (a request's HLC, an applied
        revision): later ``now`` values are greater than it."""
        if remote > self._last:
            self._last = remote
        return self._last

    def __repr__(self) -> str:
        return f"HybridClock(wall_ms={wall_ms_of(self._last)}, logical={logical_of(self._last)})"
