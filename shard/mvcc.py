"""Reading and pruning the multi-version store of one shard (shard/keys.py layout).

A shard's user keys are spread over the slots it owns; each slot's keys are
one ordered run. Reads that span slots merge those runs (``heapq.merge``),
after skipping slots with no data in the range (one seek each).

- ``latest``: the version of a key at or below a revision (one seek).
- ``visible``: the live keys of an etcd range at a revision, ascending.
- ``events_since``: the change history from a revision, from the revision
  index, in (revision, sub) order.
- ``compact``: drop versions that no read at or above the compact revision
  can see (etcd's rule: keep each key's latest version <= the compact
  revision, unless it is a tombstone).

Pure: reads go through a KvReader, writes to a WriteBatch.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from shard import keys, slots
from shard.types import Event, EventType, KeyValue

if TYPE_CHECKING:
    from shard.engine import KvReader, WriteBatch

FROM_KEY = b"\x00"  # etcd's range_end for "every key >= key"


def in_range(user_key: bytes, key: bytes, range_end: bytes) -> bool:
    """Whether user_key is in etcd's range [key, range_end) (empty range_end:
    just key; ``"\\0"``: every key >= key)."""
    if not range_end:
        return user_key == key
    if range_end == FROM_KEY:
        return user_key >= key
    return key <= user_key < range_end


def to_kv(key: bytes, mod_revision: int, rec: keys.MvccRecord, keys_only: bool = False) -> KeyValue:
    return KeyValue(key, rec.create_revision, mod_revision, rec.version, b"" if keys_only else rec.value, rec.lease)


def kv_of(key: bytes, mod_revision: int, raw: bytes) -> KeyValue:
    """The KeyValue of an encoded live version (no MvccRecord in between)."""
    create, version, lease, value = keys.decode_live(raw)
    return KeyValue(key, create, mod_revision, version, value, lease)


def latest(view: KvReader, slot: int, key: bytes, at_rev: int | None = None) -> tuple[int, keys.MvccRecord] | None:
    """(revision, record) of key's newest version at or below at_rev (None:
    the newest of all), tombstones included; None if there is none."""
    lo = keys.key_prefix(slot, key)
    c = view.cursor(lo, keys.key_end(slot, key))
    c.seek(lo if at_rev is None else keys.mvcc_key(slot, key, at_rev))
    if not c.valid():
        return None
    return keys.revision_of(c.key()), keys.decode_mvcc(c.value())


def live_kv(view: KvReader, slot: int, key: bytes, at_rev: int | None = None) -> KeyValue | None:
    """The key's KeyValue at at_rev (None: now), or None if absent then."""
    found = latest(view, slot, key, at_rev)
    if found is None or found[1].tombstone:
        return None
    return to_kv(key, found[0], found[1])


def candidate_slots(
    view: KvReader, owned: slots.SlotRanges, slot_count: int, key: bytes, range_end: bytes
) -> list[int]:
    """The owned slots that hold some version of a key in [key, range_end)."""
    one = slots.single_slot(key, range_end, slot_count)
    if one is not None:
        return [one] if slots.contains(owned, one) else []
    if not owned:
        return []
    if range_end and range_end != FROM_KEY and range_end <= key:
        return []
    out: list[int] = []
    probe = view.cursor(keys.data_prefix(owned[0][0]), keys.data_slot_end(owned[-1][1] - 1))
    for lo, hi in owned:
        s = lo
        while s < hi:
            start, end = keys.mvcc_bounds(s, key, range_end)
            probe.seek(start)
            if not probe.valid():
                return out
            found = probe.key()
            found_slot = int.from_bytes(found[1:3], "big")
            if found_slot == s:
                if found < end:
                    out.append(s)
                s += 1
            else:
                s = found_slot  # skip the empty slots in between
        # the next range starts above hi; the loop seeks there
    return out


def _slot_visible(
    view: KvReader, slot: int, key: bytes, range_end: bytes, at_rev: int | None
) -> Iterator[tuple[bytes, int, bytes]]:
    """(user key, revision, raw record) of each live key of the range in one
    slot at at_rev, ascending."""
    lo, hi = keys.mvcc_bounds(slot, key, range_end)
    if lo >= hi:
        return
    c = view.cursor(lo, hi)
    c.seek(lo)
    while c.valid():
        sk = c.key()
        rev = keys.revision_of(sk)
        if at_rev is not None and rev > at_rev:
            c.seek(keys.seek_key_of(sk, at_rev))
            if not c.valid():
                return
            if c.key()[:-8] != sk[:-8]:
                continue  # no version at or below at_rev: c is on the next key
            sk = c.key()
            rev = keys.revision_of(sk)
        raw = c.value()
        if not keys.is_tombstone(raw):
            yield keys.user_key_of(sk), rev, raw
        c.seek(keys.key_end_of(sk))


def visible_raw(
    view: KvReader,
    owned: slots.SlotRanges,
    slot_count: int,
    key: bytes,
    range_end: bytes,
    at_rev: int | None = None,
) -> Iterator[tuple[bytes, int, bytes]]:
    """(user key, revision, raw record) of the live keys of [key, range_end)
    at at_rev (None: now), ascending by key, over all owned slots."""
    found = candidate_slots(view, owned, slot_count, key, range_end)
    runs = [_slot_visible(view, s, key, range_end, at_rev) for s in found]
    if len(runs) == 1:
        return runs[0]
    return heapq.merge(*runs, key=lambda t: t[0])


def visible(
    view: KvReader,
    owned: slots.SlotRanges,
    slot_count: int,
    key: bytes,
    range_end: bytes,
    at_rev: int | None = None,
    keys_only: bool = False,
) -> Iterator[KeyValue]:
    for ukey, rev, raw in visible_raw(view, owned, slot_count, key, range_end, at_rev):
        yield to_kv(ukey, rev, keys.decode_mvcc(raw), keys_only)


# --- history ----------------------------------------------------------------------


def _slot_changes(
    view: KvReader, slot: int, start_rev: int, key: bytes, range_end: bytes
) -> Iterator[tuple[int, int, int, bytes]]:
    """(revision, sub, slot, user key) of the slot's changes from start_rev."""
    lo = keys.rev_key(slot, start_rev, 0)
    c = view.cursor(lo, keys.rev_slot_end(slot))
    c.seek(lo)
    while c.valid():
        ukey = c.value()
        if in_range(ukey, key, range_end):
            _, rev, sub = keys.parse_rev_key(c.key())
            yield rev, sub, slot, ukey
        c.next()


def _change_slots(view: KvReader, owned: slots.SlotRanges, slot_count: int, key: bytes, range_end: bytes, start_rev: int) -> list[int]:
    one = slots.single_slot(key, range_end, slot_count)
    if one is not None:
        return [one] if slots.contains(owned, one) else []
    out = []
    for s in slots.iter_slots(owned):
        lo = keys.rev_key(s, start_rev, 0)
        c = view.cursor(lo, keys.rev_slot_end(s))
        c.seek(lo)
        if c.valid():
            out.append(s)
    return out


def events_since(
    view: KvReader,
    owned: slots.SlotRanges,
    slot_count: int,
    key: bytes,
    range_end: bytes,
    start_rev: int,
    limit: int = 0,
    prev_kv: bool = False,
) -> tuple[Event, ...]:
    """The events of [key, range_end) at revisions >= start_rev, in (revision,
    sub) order. With limit > 0, stops after the revision during which the
    limit was reached (a revision's events are never split), so the caller
    resumes from the last event's revision + 1. The caller checks start_rev
    against the compact revision."""
    found = _change_slots(view, owned, slot_count, key, range_end, start_rev)
    runs = [_slot_changes(view, s, start_rev, key, range_end) for s in found]
    stream: Iterator[tuple[int, int, int, bytes]] = runs[0] if len(runs) == 1 else heapq.merge(*runs)
    out: list[Event] = []
    for rev, _sub, slot, ukey in stream:
        if limit and len(out) >= limit and out[-1].kv.mod_revision != rev:
            break
        raw = view.get(keys.mvcc_key(slot, ukey, rev))
        if raw is None:
            continue  # pruned by a compaction
        rec = keys.decode_mvcc(raw)
        prev = live_kv(view, slot, ukey, rev - 1) if prev_kv and rev > 0 else None
        if rec.tombstone:
            out.append(Event(EventType.DELETE, KeyValue(ukey, mod_revision=rev), prev))
        else:
            out.append(Event(EventType.PUT, to_kv(ukey, rev, rec), prev))
    return tuple(out)


# --- compaction --------------------------------------------------------------------


def compact(view: KvReader, wb: WriteBatch, owned: Sequence[tuple[int, int]], prev_compact: int, at_rev: int) -> int:
    """Delete every version that no read at a revision >= at_rev can see, and
    the revision index below at_rev; return how many versions were deleted.

    Only keys changed at revisions in [prev_compact, at_rev) can have such
    versions (the previous compaction pruned the rest), and the revision
    index names them. For each, the latest version <= at_rev stays unless it
    is a tombstone below at_rev; all older versions go."""
    deleted = 0
    for s in slots.iter_slots(tuple(owned)):
        lo = keys.rev_key(s, prev_compact, 0)
        hi = keys.rev_key(s, at_rev, 0)
        changed: set[bytes] = set()
        c = view.cursor(lo, hi)
        c.seek(lo)
        while c.valid():
            changed.add(c.value())
            c.next()
        doomed: list[bytes] = []
        for ukey in sorted(changed):
            doomed.extend(_prunable(view, s, ukey, at_rev))
        for k in doomed:
            wb.delete(k)
        deleted += len(doomed)
        if changed:
            wb.delete_range(keys.rev_prefix(s), hi)
    return deleted


def _prunable(view: KvReader, slot: int, key: bytes, at_rev: int) -> list[bytes]:
    lo = keys.key_prefix(slot, key)
    c = view.cursor(lo, keys.key_end(slot, key))
    c.seek(keys.mvcc_key(slot, key, at_rev))
    out: list[bytes] = []
    if not c.valid():
        return out
    kept = c.key()
    if keys.is_tombstone(c.value()) and keys.revision_of(kept) < at_rev:
        out.append(kept)
    c.next()
    while c.valid():
        out.append(c.key())
        c.next()
    return out
