"""Keys to slots, and sets of slots as sorted half-open ranges.

``slot_of(key, slots) = xxh3_64(hash_key(key)) % slots``. ``hash_key`` is the
Redis Cluster hash-tag rule: if the key has a ``{``, and a ``}`` somewhere
after that first ``{``, and at least one byte between the two, only those
bytes are hashed; otherwise the whole key is. So ``{user1000}.following`` and
``{user1000}.followers`` share a slot, ``foo{}{bar}`` hashes whole,
``foo{{bar}}zap`` hashes ``{bar`` and ``foo{bar}{zap}`` hashes ``bar``.

A shard owns a set of slots, kept as a tuple of ``(lo, hi)`` half-open ranges,
sorted, non-empty, non-overlapping and non-adjacent (``normalize`` makes any
list of ranges canonical, so equal sets compare equal).

Pure: xxhash is computation only.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

import xxhash

DEFAULT_SLOTS = 1024
MAX_SLOTS = 1 << 16

SlotRange = tuple[int, int]
SlotRanges = tuple[SlotRange, ...]


def hash_key(key: bytes) -> bytes:
    """The bytes of key that choose its slot (Redis Cluster's hash-tag rule)."""
    start = key.find(b"{")
    if start < 0:
        return key
    end = key.find(b"}", start + 1)
    if end <= start + 1:  # no '}' after the '{', or an empty tag
        return key
    return key[start + 1 : end]


def slot_of(key: bytes, slots: int) -> int:
    if not 0 < slots <= MAX_SLOTS:
        raise ValueError(f"slot count must be in 1..{MAX_SLOTS}, got {slots}")
    return xxhash.xxh3_64_intdigest(hash_key(key)) % slots


def single_slot(key: bytes, range_end: bytes, slots: int) -> int | None:
    """The one slot every key of the etcd range [key, range_end) hashes to, if
    the range alone decides it; else None (the range may touch any slot).

    An empty range_end names the single key. Otherwise every key in the range
    starts with the longest common prefix of key and range_end; if that prefix
    holds a complete non-empty hash tag (from its first ``{``), every key in the
    range shares the tag and so the slot. range_end ``"\\0"`` (all keys >= key)
    never decides.
    """
    if not range_end:
        return slot_of(key, slots)
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
    return xxhash.xxh3_64_intdigest(common[start + 1 : end]) % slots


def normalize(ranges: Iterable[SlotRange]) -> SlotRanges:
    """Sort, drop empty ranges, merge overlapping and adjacent ones."""
    out: list[list[int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] < r[1]):
        if lo < 0:
            raise ValueError(f"negative slot in range ({lo}, {hi})")
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def full(slots: int) -> SlotRanges:
    """Every slot of a cluster with `slots` slots."""
    return ((0, slots),)


def contains(ranges: SlotRanges, slot: int) -> bool:
    """Whether the (normalized) ranges hold slot."""
    i = bisect.bisect_right(ranges, (slot, MAX_SLOTS + 1)) - 1
    return i >= 0 and ranges[i][0] <= slot < ranges[i][1]


def count(ranges: SlotRanges) -> int:
    return sum(hi - lo for lo, hi in ranges)


def iter_slots(ranges: SlotRanges) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi)


def merge(a: Iterable[SlotRange], b: Iterable[SlotRange]) -> SlotRanges:
    """The union of two sets of slots."""
    return normalize([*a, *b])


def subtract(a: SlotRanges, b: SlotRanges) -> SlotRanges:
    """The slots of a that are not in b (both normalized)."""
    out: list[SlotRange] = []
    for lo, hi in a:
        cur = lo
        for blo, bhi in b:
            if bhi <= cur or blo >= hi:
                continue
            if blo > cur:
                out.append((cur, blo))
            cur = max(cur, bhi)
            if cur >= hi:
                break
        if cur < hi:
            out.append((cur, hi))
    return normalize(out)


def intersect(a: SlotRanges, b: SlotRanges) -> SlotRanges:
    return subtract(a, subtract(a, b))


def is_subset(a: SlotRanges, b: SlotRanges) -> bool:
    """Whether every slot of a is in b."""
    return not subtract(a, b)


def split(ranges: SlotRanges, at: int) -> tuple[SlotRanges, SlotRanges]:
    """Divide the slots into those below `at` and those at or above it."""
    below = normalize((lo, min(hi, at)) for lo, hi in ranges)
    above = normalize((max(lo, at), hi) for lo, hi in ranges)
    return below, above


def split_half(ranges: SlotRanges) -> tuple[SlotRanges, SlotRanges]:
    """Divide the slots into two parts of (nearly) equal slot counts, lower
    slots first. Needs at least two slots."""
    total = count(ranges)
    if total < 2:
        raise ValueError(f"cannot split {total} slot(s)")
    want = total // 2
    for lo, hi in ranges:
        if want <= hi - lo:
            return split(ranges, lo + want)
        want -= hi - lo
    raise AssertionError("unreachable: want <= total")
