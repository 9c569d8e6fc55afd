"""The Storage protocol the core reads its durable log through, and MemoryStorage.

The core only *reads* storage; the host writes to it after handling a Ready
(persist entries, hard state, snapshot), then calls ``RawNode.advance``.
Returned sequences are fresh lists or tuples: callers may keep them, and
storage may keep its own.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from raft.core.errors import Compacted, RaftInvariantError, Unavailable
from raft.core.types import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration of the last snapshot
        (or the bootstrap configuration)."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi). Raises Compacted if lo <= snapshot index,
        Unavailable if hi > last_index() + 1. With max_size, returns at least
        one entry and stops before the total data size exceeds it."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at index, for first_index()-1 <= index <= last_index().
        Raises Compacted below that range, Unavailable above it."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. May raise SnapshotTemporarilyUnavailable."""
        ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Keep a prefix of entries whose data fits in max_size (always at least one)."""
    if max_size is None or len(entries) <= 1:
        return entries
    total = len(entries[0].data)
    n = 1
    while n < len(entries):
        total += len(entries[n].data)
        if total > max_size:
            break
        n += 1
    return entries[:n]


class MemoryStorage:
    """Storage kept in memory: the in-memory twin of the RocksDB log store.

    ``self._ents[0]`` is a dummy entry holding the snapshot's (index, term),
    as etcd's MemoryStorage does.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMetadata(conf_state=conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(term=0, index=0)]

    # -- Storage protocol ------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries [{lo}, {hi}) beyond last index {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(f"index {index} compacted (first is {offset + 1})")
        if index - offset >= len(self._ents):
            raise Unavailable(f"index {index} beyond last index {self.last_index()}")
        return self._ents[index - offset].term

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes, done by the host after a Ready ---------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot (a follower installing one)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            return  # stale snapshot: ignore, as etcd does (ErrSnapOutOfDate)
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at index (does not compact)."""
        if index <= self._snapshot.metadata.index:
            return self._snapshot
        if index > self.last_index():
            raise RaftInvariantError(f"snapshot {index} is out of bound lastindex({self.last_index()})")
        term = self.term(index)
        self._snapshot = Snapshot(SnapshotMetadata(index=index, term=term, conf_state=conf_state), data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries before compact_index (it becomes the dummy entry)."""
        offset = self._ents[0].index
        if compact_index <= offset:
            return
        if compact_index > self.last_index():
            raise RaftInvariantError(f"compact {compact_index} is out of bound lastindex({self.last_index()})")
        i = compact_index - offset
        self._ents = [Entry(term=self._ents[i].term, index=self._ents[i].index)] + self._ents[i + 1 :]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries, truncating any conflicting suffix."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all compacted already
        ents = list(entries)
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise RaftInvariantError(
                f"missing log entry [last: {self.last_index()}, append at: {ents[0].index}]"
            )
        self._ents = self._ents[:offset] + ents
