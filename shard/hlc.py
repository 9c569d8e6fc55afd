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
``max(prev_rev + 1, stamp, closed_ts + 1)``, raised into the stamp's *lane*:
strictly growing, never behind the leader's stamp, and never at or below a
closed timestamp already applied.

Lanes keep revisions of different shards apart. Two shards assign
revisions independently, and without lanes two writes on two shards led by
different nodes in the same millisecond often got the same revision (both
nodes' logical parts start at 0). etcd's revisions are unique, and its
client recipes depend on it: clientv3's Mutex and Election wait only for
keys created *before* their own (max_create_revision = mine - 1), so two
holders whose keys share a create revision both took the lock (two
`etcdctl lock` holders overlapped). The lowest LANE_BITS of the logical part
are a lane: a store node's clock issues stamps in its own lane (its node id
modulo LANES), and an entry's revision is raised into its stamp's lane. So
revisions of entries proposed by nodes in different lanes never collide,
and a node's own stamps are unique: within a cluster of at most LANES
stores (ids distinct modulo LANES) every write's revision is its own. Larger
clusters share lanes between stores whose ids are equal modulo LANES
(documented in DESIGN.md). The cost: a clock issues 2^(LOGICAL_BITS -
LANE_BITS) = 128 stamps per millisecond before it carries into the next
millisecond (128,000 a second per node), so revisions still stay below 2^53
for the whole span at any rate below that.
"""

from __future__ import annotations

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z in Unix milliseconds
LOGICAL_BITS = 11
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_SAFE_REVISION = (1 << 53) - 1  # the largest integer a double holds exactly
LAST_WALL_MS = EPOCH_MS + (MAX_SAFE_REVISION >> LOGICAL_BITS)  # mid-2159
MAX_REVISION = (1 << 63) - 1  # etcd revisions are int64 on the wire
LANE_BITS = 4
LANES = 1 << LANE_BITS
LANE_MASK = LANES - 1


def lane_of(timestamp: int) -> int:
    return timestamp & LANE_MASK


def into_lane(value: int, lane: int) -> int:
    """The least timestamp >= value in the lane."""
    return value + ((lane - value) & LANE_MASK)


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
    """The revision of a writing entry applied after prev_rev: above
    prev_rev and the closed timestamp, not below the stamp, in the stamp's
    lane (an entry without a stamp, as unit tests build them, has none)."""
    rev = max(prev_rev + 1, stamp, closed_ts + 1)
    return into_lane(rev, lane_of(stamp)) if stamp else rev


class HybridClock:
    """A node's HLC. Values it returns strictly grow, whatever the wall clock
    does; when the wall clock stalls or steps back, the logical part counts
    (and may carry into the millisecond part, which keeps the order)."""

    __slots__ = ("_last", "_lane")

    def __init__(self, last: int = 0, *, lane: int | None = None) -> None:
        """lane: the lane of a store node's clock (its node id modulo LANES),
        whose stamps become revisions; None for a clock whose values are
        only compared (a router's)."""
        self._last = last
        self._lane = lane

    @property
    def last(self) -> int:
        return self._last

    def now(self, wall_ms: int) -> int:
        """A fresh timestamp, greater than every one seen or issued before."""
        value = max(self._last + 1, from_ms(wall_ms))
        self._last = value if self._lane is None else into_lane(value, self._lane)
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
