"""ShardReplica: one shard replica as the runtime's StateMachine seam.

It delegates to the ShardStateMachine (the pure apply step), then feeds
what was applied to the node: every applied revision to the node's HLC, the
events to this replica's watchers (shard/node/watch.py) and to the lease
reports (shard/node/leases.py), a split's new shard to the split loop
(shard/node/split.py), a merge's source to the merge loop
(shard/node/merge.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from raft.core.types import Entry
from shard.errors import EpochNotMatch, RoutingError
from shard.statemachine import Applied, ShardStateMachine
from shard.types import Epoch, Event

log = logging.getLogger(__name__)


class Watcher(Protocol):
    """What a replica needs of a watch stream's live queue (shard/node/watch.py's
    Watcher): events to offer as they apply, and two ways to end it."""

    def offer(self, events: Sequence[Event]) -> None: ...

    def cancel(self, reason: str) -> None: ...

    def cancel_routing(self, err: RoutingError) -> None: ...


_NO_WATCHERS: frozenset[Watcher] = frozenset()


class ShardReplica:
    """A shard replica as the runtime's StateMachine: delegates to the
    ShardStateMachine, then feeds what was applied to the node (HLC) and to
    this replica's watchers."""

    # A store hosts thousands of these, mostly idle: slots, and no set of
    # watchers until the first watch (issue #20).
    __slots__ = (
        "sm", "watchers", "_clock_update", "_on_split", "_on_events", "on_merge", "retired", "_lock_changed", "releasing", "on_applied"
    )

    def __init__(
        self,
        sm: ShardStateMachine,
        clock_update: Callable[[int], int],
        on_split: Callable[[int, int, int], None] | None = None,
        on_events: Callable[[int, tuple[Event, ...]], None] | None = None,
    ) -> None:
        self.sm = sm
        self.watchers: set[Watcher] | frozenset[Watcher] = _NO_WATCHERS
        """This replica's watch streams (add_watcher, discard_watcher)."""
        self._clock_update = clock_update
        self._on_split = on_split
        self._on_events = on_events
        self.on_merge: Callable[[int, int, int], None] | None = None
        """(target shard, index, source shard) of each CommitMerge applied here."""
        self.retired = False
        """This frozen replica's merge target applied the CommitMerge here: it is being destroyed."""
        self._lock_changed: asyncio.Event | None = None
        self.releasing: bytes | None = None
        """The id of the locked txn whose deciding step (DECIDE, COMMIT, ABORT,
        RESOLVE) this leader proposed: requests after it need not wait
        (shard/node/writes.py)."""
        self.on_applied: Callable[[int], None] | None = None
        """Called with the shard id after each apply or restore (the closed timestamps' bookkeeping)."""

    def add_watcher(self, w: Watcher) -> None:
        if not self.watchers:
            self.watchers = set()
        assert isinstance(self.watchers, set)
        self.watchers.add(w)

    def discard_watcher(self, w: Watcher) -> None:
        if isinstance(self.watchers, set):
            self.watchers.discard(w)
            if not self.watchers:
                self.watchers = _NO_WATCHERS

    async def lock_change(self, timeout_s: float) -> None:
        """Wait until the shard's txn lock (shard/txn2pc.py) changes, at most timeout_s."""
        if self._lock_changed is None:
            self._lock_changed = asyncio.Event()
        try:
            await asyncio.wait_for(self._lock_changed.wait(), max(0.0, timeout_s))
        except TimeoutError:
            pass

    @property
    def epoch(self) -> Epoch:
        return self.sm.epoch

    @property
    def shard_id(self) -> int:
        return self.sm.shard_id

    def applied_index(self) -> int:
        return self.sm.applied_index()

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]:
        lock = self.sm.txn_lock
        out = self.sm.apply(entries, wb)
        if self.sm.txn_lock is not lock:
            self.releasing = None
            if self._lock_changed is not None:
                self._lock_changed.set()  # requests waiting for it look again
                self._lock_changed = None
        for a in out:
            if not isinstance(a, Applied):
                continue
            if a.events and self.watchers:
                for w in list(self.watchers):
                    w.offer(a.events)
            if a.events and self._on_events is not None:
                self._on_events(self.shard_id, a.events)
            if a.split_to:
                log.info("shard=%d applied split at index=%d: new shard=%d epoch=%s", self.shard_id, a.index, a.split_to, self.sm.epoch)
                for w in list(self.watchers):
                    w.cancel_routing(EpochNotMatch(self.sm.epoch, self.sm.slot_ranges))
                if self._on_split is not None:
                    self._on_split(self.shard_id, a.index, a.split_to)
            if a.frozen:
                # Watchers stay: the shard's history is final and they have
                # it all; they end when the replica is destroyed.
                log.info("shard=%d applied PrepareMerge at index=%d: frozen for shard=%d epoch=%s", self.shard_id, a.index, self.sm.merge_state.target if self.sm.merge_state else 0, self.sm.epoch)
            if a.merged_from:
                # Watchers stay too: the source's slots join their feed from
                # here on, every event above both shards' last revisions.
                log.info("shard=%d applied CommitMerge at index=%d: took over shard=%d epoch=%s slots=%s", self.shard_id, a.index, a.merged_from, self.sm.epoch, self.sm.slot_ranges)
                if self.on_merge is not None:
                    self.on_merge(self.shard_id, a.index, a.merged_from)
        self._clock_update(self.sm.readable_revision)
        if self.on_applied is not None:
            self.on_applied(self.shard_id)
        return out

    def on_applied_index(self, index: int, wb: Any) -> None:
        self.sm.on_applied_index(index, wb)

    def on_conf_change(self, index: int, wb: Any) -> None:
        self.sm.on_conf_change(index, wb)

    def release_staged(self) -> None:
        self.sm.release_staged()

    def snapshot(self) -> bytes:
        return self.sm.snapshot()

    def snapshot_stream(self) -> tuple[int, Iterator[bytes]]:
        return self.sm.snapshot_stream()

    def restore_chunks(self, chunks: Iterable[bytes], index: int, wb: Any) -> None:
        self.sm.restore_chunks(chunks, index, wb)
        self._restored()

    def restore(self, data: bytes, index: int, wb: Any) -> None:
        self.sm.restore(data, index, wb)
        self._restored()

    def _restored(self) -> None:
        self._clock_update(self.sm.readable_revision)
        if self.on_applied is not None:
            self.on_applied(self.shard_id)
        if self._lock_changed is not None:
            self._lock_changed.set()
            self._lock_changed = None
        for w in list(self.watchers):
            w.cancel("the replica installed a snapshot; resume from the revision after the last event received")
        if self.on_merge is not None:
            # A snapshot taken after a merge: the source's local replica (still
            # frozen here) is destroyed as if this replica had applied it.
            for source in sorted(self.sm.merged_sources):
                self.on_merge(self.shard_id, self.sm.applied_index(), source)
