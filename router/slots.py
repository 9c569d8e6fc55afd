"""Keys to slots for the router (pure), and replica choice for stale reads.

The router must compute a key's slot exactly as the store nodes do
(DESIGN.md, "Keys, slots and shards"), so the rule is not written here:
``hash_key``, ``slot_of`` and ``range_slot`` (which slots an etcd key range
may touch) are shard/slots.py's, a shared leaf module any package may
import (DESIGN.md, "Dependencies"). This module re-exports them for the
router's callers.

Also here, because they are pure decisions of the router: whether a shard's
ranges hold a slot (``contains``: any list of ranges, normalized or not),
the static bootstrap layout (``equal_ranges``), and which replica serves a
read that tolerates staleness (``choose_replica``).
"""

from __future__ import annotations

from collections.abc import Sequence

from shard.slots import MAX_SLOTS, SlotRange, hash_key, slot_of
from shard.slots import single_slot as range_slot

__all__ = [
    "MAX_SLOTS",
    "PROBE_EVERY",
    "SlotRange",
    "choose_replica",
    "contains",
    "equal_ranges",
    "hash_key",
    "range_slot",
    "slot_of",
]


def contains(ranges: Sequence[SlotRange], slot: int) -> bool:
    return any(lo <= slot < hi for lo, hi in ranges)


def equal_ranges(shard_count: int, slot_count: int) -> list[tuple[SlotRange, ...]]:
    """The static bootstrap layout of `flotilla server --shards N`: shard i+1
    owns the i-th of N equal contiguous slot ranges."""
    return [((i * slot_count // shard_count, (i + 1) * slot_count // shard_count),) for i in range(shard_count)]


PROBE_EVERY = 32
"""One stale read in this many goes to a replica the router believes is
behind (see choose_replica)."""


def choose_replica(
    candidates: Sequence[int],
    closed_ts: dict[int, int],
    needed_ts: int,
    leader: int,
    turn: int,
) -> int:
    """The replica to serve a read that needs a closed timestamp of at least
    needed_ts: one of the candidates whose last reported closed timestamp is
    enough, taken in turn (`turn` grows per read, so reads spread over the
    replicas); else the leader (always ready), else the first candidate.
    needed_ts 0 (serializable): any candidate, in turn. A replica not heard
    from yet counts as ready: if it is not, it says so (below).

    The router learns a replica's closed timestamp only from that replica's
    answers, so a follower it once saw behind would never be asked again,
    and the leader would serve every stale read from then on. So one read in
    PROBE_EVERY goes to a follower believed behind (each in turn): it serves
    the read if it caught up, else answers stale_read_not_ready with its
    closed timestamp, which the router notes before it retries elsewhere."""
    ready = [n for n in candidates if closed_ts.get(n, needed_ts) >= needed_ts]
    if needed_ts and turn % PROBE_EVERY == 0:
        behind = [n for n in candidates if n not in ready and n != leader]
        if behind:
            return behind[(turn // PROBE_EVERY) % len(behind)]
    if ready:
        return ready[turn % len(ready)]
    if leader:
        return leader
    return candidates[turn % len(candidates)] if candidates else 0
