"""Hybrid logical clock revisions: the one place that converts between
milliseconds and revisions (a shared leaf: routers use it too).

A revision is ``((unix_ms - EPOCH_MS) << LOGICAL_BITS) | logical``:
milliseconds since 2020-01-01T00:00:00Z above 11 bits of logical counter.
Integer order is HLC order, so revisions from different shards compare as
moments in time.

Why this shape (issue #17): JavaScript and JSON clients hold revisions as
doubles, exact only below 2^53. 2^53 >> 11 = 2^42 ms is 139 years, so
revisions stay below 2^53 until the year 2159 (``LAST_WALL_MS``) whatever the
write rate: the logical part counts 2048 revisions in one millisecond and,
past that, carries into the millisecond part as any HLC does (the clock runs
ahead of the wall clock while more than about 2 million revisions a second
are stamped by one clock, and falls back in step once the rate drops). The
earlier encoding, ``unix_ms << 16``, gave revisions near 1.2e17; a data
directory written with it is refused at start (shard/keys.py, STATE record).

A wall clock before the epoch counts as the epoch (``from_ms`` is 0 there):
revisions still strictly grow, by their logical part. A clock ignores
timestamps above 2^53 it is told of (``HybridClock.update``): they can only
come from a process of the old encoding.

``HybridClock`` is the clock a node keeps (the leader stamps each proposal
with ``now(wall_ms)``; routers and nodes ``update`` it with every revision
they see, so causality carries across shards). It never reads a clock: the
caller passes the wall time in.

``next_revision`` is the rule every replica applies to an entry that writes:
``max(prev_rev + 1, stamp, closed_ts + 1)``: strictly growing, never behind
the leader's stamp, and never at or below a closed timestamp already applied.
"""

from __future__ import annotations

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z in Unix milliseconds
LOGICAL_BITS = 11
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_SAFE_REVISION = (1 << 53) - 1  # the largest integer a double holds exactly
LAST_WALL_MS = EPOCH_MS + (MAX_SAFE_REVISION >> LOGICAL_BITS)  # mid-2159
MAX_REVISION = (1 << 63) - 1  # etcd revisions are int64 on the wire


def make(wall_ms: int, logical: int = 0) -> int:
    """The revision of a wall-clock millisecond (at or after EPOCH_MS) and a
    logical count within it."""
    if wall_ms < EPOCH_MS or not 0 <= logical <= LOGICAL_MASK:
        raise ValueError(f"bad HLC parts wall_ms={wall_ms} logical={logical}")
    return ((wall_ms - EPOCH_MS) << LOGICAL_BITS) | logical


def from_ms(unix_ms: int) -> int:
    """The least revision of a wall-clock millisecond (0 before the epoch)."""
    return max(0, unix_ms - EPOCH_MS) << LOGICAL_BITS


def wall_ms_of(revision: int) -> int:
    """The wall-clock millisecond (Unix ms) a revision belongs to."""
    return (revision >> LOGICAL_BITS) + EPOCH_MS


to_ms = wall_ms_of


def logical_of(revision: int) -> int:
    return revision & LOGICAL_MASK


def span(ms: int) -> int:
    """A duration in milliseconds as a distance between revisions."""
    return ms << LOGICAL_BITS


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
        self._last = max(self._last + 1, from_ms(wall_ms))
        return self._last

    def update(self, remote: int) -> int:
        """Learn of a timestamp from elsewhere (a request's HLC, an applied
        revision): later ``now`` values are greater than it. A timestamp
        above MAX_SAFE_REVISION is not of this encoding (a process of the
        pre-#17 build) and is ignored: it must not carry the clock past 2^53."""
        if self._last < remote <= MAX_SAFE_REVISION:
            self._last = remote
        return self._last

    def __repr__(self) -> str:
        return f"HybridClock(wall_ms={wall_ms_of(self._last)}, logical={logical_of(self._last)})"
