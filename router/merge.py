"""Merging what many shards answered into one etcd answer (pure).

Range: every shard got the same request (limit, sort, filters, revision), so
each answered its own top `limit` keys in the requested order, its own count
of matching keys and whether it cut anything (`more`). The answer over all
shards is the same order applied to the union, cut to `limit`:

- count is the sum of the shards' counts (etcd counts before the revision
  filters and before limit, and so does each shard);
- `more` is true when any shard cut something or the union is cut;
- order: etcd's effective order (NONE with a target other than KEY sorts
  ASCEND; KEY ASCEND is the natural key order), ties in key order as the
  shards break them.

Watch: each shard's events arrive in revision order, and a shard's frontier
(its last event, or a progress revision) says every event of that shard up
to it has arrived. ``WatchMerger`` releases events only up to the least
frontier over the shards, in revision order, so a client sees one history
with growing revisions, never half of a revision.

Objects are duck-typed (protobuf KeyValue/Event or any with the same
attribute names), so this module needs no protobuf.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# etcd's enum numbers (etcdserverpb.RangeRequest.SortOrder/SortTarget).
SORT_NONE, SORT_ASCEND, SORT_DESCEND = 0, 1, 2
TARGET_KEY, TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE = 0, 1, 2, 3, 4

_TARGET_ATTR = {
    TARGET_KEY: "key",
    TARGET_VERSION: "version",
    TARGET_CREATE: "create_revision",
    TARGET_MOD: "mod_revision",
    TARGET_VALUE: "value",
}


class KeyValueLike(Protocol):
    key: bytes
    value: bytes
    version: int
    create_revision: int
    mod_revision: int


def effective_order(sort_order: int, sort_target: int) -> int:
    if sort_target != TARGET_KEY and sort_order == SORT_NONE:
        return SORT_ASCEND
    if sort_target == TARGET_KEY and sort_order == SORT_ASCEND:
        return SORT_NONE
    return sort_order


@dataclass(frozen=True, slots=True)
class ShardRange:
    """One shard's answer to the scattered range."""

    kvs: Sequence[Any]
    more: bool
    count: int


@dataclass(frozen=True, slots=True)
class MergedRange:
    kvs: tuple[Any, ...]
    more: bool
    count: int


def merge_ranges(parts: Sequence[ShardRange], *, limit: int, sort_order: int, sort_target: int) -> MergedRange:
    count = sum(p.count for p in parts)
    more = any(p.more for p in parts)
    order = effective_order(sort_order, sort_target)
    if order == SORT_NONE:
        kvs = list(heapq.merge(*(p.kvs for p in parts), key=lambda kv: kv.key))
    elif order == SORT_DESCEND and sort_target == TARGET_KEY:
        kvs = list(heapq.merge(*(p.kvs for p in parts), key=lambda kv: kv.key, reverse=True))
    else:
        attr = _TARGET_ATTR[sort_target]
        kvs = sorted((kv for p in parts for kv in p.kvs), key=lambda kv: kv.key)
        kvs.sort(key=lambda kv: getattr(kv, attr), reverse=order == SORT_DESCEND)  # stable: ties keep key order
    if limit > 0 and len(kvs) > limit:
        kvs = kvs[:limit]
        more = True
    return MergedRange(tuple(kvs), more, count)


def event_revision(ev: Any) -> int:
    return int(ev.kv.mod_revision)


@dataclass(slots=True)
class _Source:
    frontier: int
    pending: list[Any] = field(default_factory=list)


class WatchMerger:
    """Orders the events of many shard streams of one watch by revision.

    ``add(source, events, progress_revision)`` takes a batch of one source
    (events in revision order; a batch never ends mid-revision) and returns
    the events that may now be delivered: every pending event whose revision
    is at most the least frontier over all sources, in revision order (ties,
    which only one source can have, keep its order).
    """

    def __init__(self, sources: Iterable[Any], start_revision: int) -> None:
        # Before anything arrives, a source is known complete up to start - 1.
        self._sources: dict[Any, _Source] = {s: _Source(max(0, start_revision - 1)) for s in sources}
        self._released = max(0, start_revision - 1)
        """Every event up to this revision was released (or precedes the watch)."""

    @property
    def sources(self) -> tuple[Any, ...]:
        return tuple(self._sources)

    def frontier(self) -> int:
        """Every event with a revision up to this has been released."""
        return min((s.frontier for s in self._sources.values()), default=0)

    def source_frontier(self, source: Any) -> int:
        return self._sources[source].frontier

    def add(self, source: Any, events: Sequence[Any], progress_revision: int = 0) -> list[Any]:
        s = self._sources[source]
        if events:
            s.pending.extend(events)
            s.frontier = max(s.frontier, event_revision(events[-1]))
        if progress_revision:
            s.frontier = max(s.frontier, progress_revision)
        return self._release()

    def replace(self, old: Any, new: Sequence[Any]) -> list[Any]:
        """Swap one source for others (a shard split while watched): the new
        ones start at the old one's frontier, and take its pending events."""
        s = self._sources.pop(old)
        pending_given = False
        for n in new:
            cur = self._sources.get(n)
            if cur is not None:
                # Already a source (a merge into a shard this watch reads): it
                # takes the old source's pending events, in revision order,
                # and its frontier drops to the old one's if that is lower.
                # The old source's events after its frontier (up to its
                # freeze) now live in this source's history: its stream must
                # be restarted from the new frontier (the caller does).
                if s.pending and not pending_given:
                    cur.pending = sorted([*cur.pending, *s.pending], key=event_revision)
                    pending_given = True
                cur.frontier = min(cur.frontier, s.frontier)
                continue
            self._sources[n] = _Source(s.frontier, [] if pending_given else list(s.pending))
            pending_given = True
        return self._release()

    def _release(self) -> list[Any]:
        """Release what every source is complete up to, each event once.

        The same event can reach the merger twice when slots change hands
        while watched: a shard merged into one this watch reads hands over
        its pending events, and the target's stream, restarted after the
        merge from its own frontier, reads the same events again from the
        merged slots' history. An event at or below what was released
        already is such a repeat (no source can still deliver an event below
        its frontier), and so is a second (key, revision, type) in one release."""
        upto = self.frontier()
        out: list[Any] = []
        for s in self._sources.values():
            n = 0
            while n < len(s.pending) and event_revision(s.pending[n]) <= upto:
                n += 1
            if n:
                out.extend(ev for ev in s.pending[:n] if event_revision(ev) > self._released)
                del s.pending[:n]
        out.sort(key=event_revision)  # stable: one source's events of one revision keep their order
        seen: set[tuple[bytes, int, int]] = set()
        unique: list[Any] = []
        for ev in out:
            ident = (bytes(ev.kv.key), event_revision(ev), int(getattr(ev, "type", 0)))
            if ident not in seen:
                seen.add(ident)
                unique.append(ev)
        self._released = max(self._released, upto)
        return unique
