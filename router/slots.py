"""Keys to slots for the router (pure), and replica choice for stale reads.

The router must compute a key's slot exactly as the store nodes do
(DESIGN.md, "Keys, slots and shards"): ``xxh3_64(hash_key) % slots``, where
``hash_key`` is the bytes inside the first ``{...}`` that has at least one
byte between the braces (the Redis Cluster hash-tag rule), else the whole
key. The rule lives here again, rather than imported from ``shard.slots``,
because the router depends only on ``flotillapb`` (DESIGN.md,
"Dependencies"); tests/unit/router/test_slots.py checks the two agree.

Also here, because they are pure decisions: which slots an etcd key range
may touch (``range_slot``), and which replica serves a read that tolerates
staleness (``choose_replica``).

Pure: xxhash is computation only.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

MAX_SLOTS = 1 << 16

SlotRange = tuple[int, int]


def hash_key(key: bytes) -> bytes:
    start = key.find(b"{")
    if start < 0:
        return key
    end = key.find(b"}", start + 1)
    if end <= start + 1:
        return key
    return key[start + 1 : end]


def slot_of(key: bytes, slot_count: int) -> int:
    if not 0 < slot_count <= MAX_SLOTS:
        raise ValueError(f"slot count must be in 1..{MAX_SLOTS}, got {slot_count}")
    return xxhash.xxh3_64_intdigest(hash_key(key)) % slot_count


def range_slot(key: bytes, range_end: bytes, slot_count: int) -> int | None:
    """The one slot every key of the etcd range [key, range_end) has, when the
    range alone decides it (a single key, or a range inside one hash tag such
    as the prefix ``{user1}/``); None when the range may touch any slot."""
    if not range_end:
        return slot_of(key, slot_count)
    if range_end == b"\x00":
        return None
    n = 0
    limit = min(len(key), len(range_end))
    while n < limit and key[n] == range_end[n]:
        n += 1
    common = key[:n]
    start = common.find(b"{")
    if start < 0:
        return None
    end = common.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return xxhash.xxh3_64_intdigest(common[start + 1 : end]) % slot_count


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
