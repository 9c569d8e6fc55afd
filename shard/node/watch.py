"""Watches on a replica: history (``events_since``), then live events, with
bounded per-watcher queues and progress notifications.

``Watcher`` is one stream's live queue, fed inside apply by ShardReplica;
``WatchHub`` opens streams on the node's replicas. A stream ends with a
routing error when the replica's slots change (a split, its destruction),
is cancelled when its watcher falls too far behind or the replica installs
a snapshot, and keeps going on a replica frozen for a merge (its history is
final).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence

from shard.errors import EmptyKey, RoutingError, ServerBusy
from shard.mvcc import in_range
from shard.node.replica import ShardReplica
from shard.node.requests import RequestContext, WatchBatch, WatchSpec
from shard.node.routing import RoutingChecks, check_owned
from shard.node.state import NodeState
from shard.types import Event, EventType, RangeRequest


class Watcher:
    """One watch stream's live queue on a replica. `offer` runs inside apply
    (synchronously, on the loop); the stream drains the queue."""

    __slots__ = ("spec", "start", "max_events", "queue", "queued", "wakeup", "canceled", "routing_error")

    def __init__(self, spec: WatchSpec, start: int, max_events: int) -> None:
        self.spec = spec
        self.start = start
        self.max_events = max_events
        self.queue: collections.deque[tuple[Event, ...]] = collections.deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.canceled: str | None = None
        self.routing_error: RoutingError | None = None

    def select(self, events: Sequence[Event]) -> tuple[Event, ...]:
        s = self.spec
        out = []
        for ev in events:
            if ev.kv.mod_revision < self.start or not in_range(ev.kv.key, s.key, s.range_end):
                continue
            if (s.no_put and ev.type == EventType.PUT) or (s.no_delete and ev.type == EventType.DELETE):
                continue
            if not s.prev_kv and ev.prev_kv is not None:
                ev = Event(ev.type, ev.kv)
            out.append(ev)
        return tuple(out)

    def offer(self, events: Sequence[Event]) -> None:
        if self.canceled is not None:
            return
        chosen = self.select(events)
        if not chosen:
            return
        if self.queued + len(chosen) > self.max_events:
            self.canceled = (
                f"watcher fell behind: more than {self.max_events} events waiting to be sent; "
                f"resume from the revision after the last event received"
            )
            self.queue.clear()
            self.queued = 0
        else:
            self.queue.append(chosen)
            self.queued += len(chosen)
        self.wakeup.set()

    def cancel(self, reason: str) -> None:
        if self.canceled is None:
            self.canceled = reason
            self.queue.clear()
            self.queued = 0
            self.wakeup.set()

    def cancel_routing(self, err: RoutingError) -> None:
        """End the stream with a routing error (the shard's slots changed):
        events queued so far are still delivered first."""
        if self.canceled is None:
            self.canceled = str(err)
            self.routing_error = err
            self.wakeup.set()

    def take(self, max_events: int) -> tuple[Event, ...]:
        """Whole revisions' batches, up to about max_events."""
        out: list[Event] = []
        while self.queue and (not out or len(out) + len(self.queue[0]) <= max_events):
            batch = self.queue.popleft()
            self.queued -= len(batch)
            out.extend(batch)
        return tuple(out)


class WatchHub:
    def __init__(self, state: NodeState, checks: RoutingChecks) -> None:
        self._s = state
        self._checks = checks

    async def watch(self, ctx: RequestContext, spec: WatchSpec) -> AsyncIterator[WatchBatch]:
        """History from spec.start_revision, then live events, with progress
        notifications while idle. Raises a RoutingError before the first batch."""
        rep = self._checks.replica(ctx)
        if not spec.key:
            raise EmptyKey()
        check_owned(rep, RangeRequest(spec.key, spec.range_end))
        return self._watch(rep, spec)

    async def _watch(self, rep: ShardReplica, spec: WatchSpec) -> AsyncIterator[WatchBatch]:
        cfg = self._s.cfg
        sm = rep.sm
        # From now (no start revision): after the readable revision, not just
        # after the last write. Every later write gets a revision above both
        # (shard/hlc.py), and a compaction never passes the readable revision,
        # so a watch from now is never refused as compacted on a shard that
        # had no write above a cluster-wide compaction (etcd starts it at its
        # current revision and waits).
        sid = rep.shard_id
        readable = self._s.readable_of
        closed = self._s.closed_ts_of
        start = spec.start_revision if spec.start_revision > 0 else readable(sid) + 1
        if start < sm.compact_revision:
            yield WatchBatch(compact_revision=sm.compact_revision, closed_ts=closed(sid))
            return
        w = Watcher(spec, start, cfg.watch_queue_events)
        # Registration and the history read happen with no await between them,
        # so history covers every event up to sm.revision and the queue every
        # one after it.
        rep.add_watcher(w)
        try:
            history = w.select(sm.events_since(spec.key, spec.range_end, start, prev_kv=spec.prev_kv))
            step = cfg.watch_batch_events
            i = 0
            while i < len(history):
                j = min(len(history), i + step)
                while j < len(history) and history[j].kv.mod_revision == history[j - 1].kv.mod_revision:
                    j += 1  # never split a revision
                yield WatchBatch(events=history[i:j], closed_ts=closed(sid))
                i = j
            yield _progress(rep, w, readable, closed)
            interval = spec.progress_interval_s or cfg.watch_progress_interval_s
            while True:
                if w.canceled is not None and not w.queue:
                    yield WatchBatch(error=w.routing_error or ServerBusy(w.canceled), closed_ts=closed(sid))
                    return
                if w.queue:
                    events = w.take(step)
                    yield WatchBatch(events=events, progress_revision=_progress_claim(rep, w, readable), closed_ts=closed(sid))
                    continue
                w.wakeup.clear()
                try:
                    async with asyncio.timeout(interval):
                        await w.wakeup.wait()
                except TimeoutError:
                    if not w.queue and w.canceled is None:
                        yield _progress(rep, w, readable, closed)
        finally:
            rep.discard_watcher(w)


def _progress(rep: ShardReplica, w: Watcher, readable: Callable[[int], int], closed: Callable[[int], int]) -> WatchBatch:
    return WatchBatch(progress_revision=_progress_claim(rep, w, readable), closed_ts=closed(rep.shard_id))


def _progress_claim(rep: ShardReplica, w: Watcher, readable: Callable[[int], int]) -> int:
    """The revision up to which this stream has sent every event of the
    watched range (0: no claim): the replica's readable revision once
    nothing is queued. A watcher cut off by a split, a merge or the
    replica's destruction claims nothing more: the replica's revision
    moves on for the slots it kept, and the router would take a later
    claim as the frontier of the slots that moved, skipping their new
    owner's events up to it (found by a 4-store campaign: a watch gap
    right after a split)."""
    if w.queue or w.canceled is not None:
        return 0
    return readable(rep.shard_id)
