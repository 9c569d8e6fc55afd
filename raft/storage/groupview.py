"""One group's read view of the log store (what its Raft core reads), and
the staged state a batch will install into it once committed.

``GroupStorage`` implements ``raft.core.storage.Storage`` over the store's
committed state: metadata and the newest entries in memory, older entries
read back from the store (``ViewSource``). Only a committed ``LogBatch``
changes it, through ``StagedGroup`` (``raft/storage/batch.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from raft.core.errors import Compacted, Unavailable
from raft.core.storage import limit_size
from raft.core.types import ConfState, Entry, HardState, Snapshot

__all__ = ["GroupStorage", "StagedGroup", "ViewSource"]


class ViewSource(Protocol):
    """Where a view reads entries it does not keep in memory (the store's
    committed state, never an unsynced batch)."""

    def read_entry(self, group_id: int, index: int) -> Entry: ...

    def read_entries(self, group_id: int, lo: int, hi: int, max_size: int | None) -> tuple[list[Entry], bool]: ...


class GroupStorage:
    """One group's view, implementing ``raft.core.storage.Storage``.

    Mirrors ``MemoryStorage``: a dummy entry at the offset (snapshot or
    compaction index) carries that index's term; ``first_index`` is offset+1.
    Reflects only committed batches. Written through ``LogBatch`` only.
    """

    __slots__ = ("_cache", "_cache_bytes", "_hard_state", "_last", "_offset", "_offset_term", "_snapshot", "_staged_in", "_store", "group_id")  # thousands per store (issue #20)

    def __init__(self, store: ViewSource, group_id: int) -> None:
        self._store = store
        self.group_id = group_id
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._offset = 0
        self._offset_term = 0
        self._last = 0
        # The newest entries, contiguous and ending at _last (possibly empty).
        self._cache: list[Entry] = []
        self._cache_bytes = 0
        self._staged_in: object | None = None  # the uncommitted LogBatch it is staged in

    def __repr__(self) -> str:
        return (
            f"GroupStorage(group_id={self.group_id}, first={self._offset + 1}, last={self._last}, "
            f"hard_state={self._hard_state}, snapshot_index={self._snapshot.metadata.index})"
        )

    # -- Storage protocol ---------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._offset + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def term(self, index: int) -> int:
        if index < self._offset:
            raise Compacted(f"index {index} compacted (first is {self._offset + 1})")
        if index > self._last:
            raise Unavailable(f"index {index} beyond last index {self._last}")
        if index == self._offset:
            return self._offset_term
        cache = self._cache
        if cache and index >= cache[0].index:
            return cache[index - cache[0].index].term
        return self._store.read_entry(self.group_id, index).term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self._offset:
            raise Compacted(f"index {lo} compacted (first is {self._offset + 1})")
        if hi > self._last + 1:
            raise Unavailable(f"entries [{lo}, {hi}) beyond last index {self._last}")
        cache = self._cache
        start = cache[0].index if cache else self._last + 1
        if lo >= start:
            return limit_size(cache[lo - start : hi - start], max_size)
        out, full = self._store.read_entries(self.group_id, lo, min(hi, start), max_size)
        if not full and hi > start:
            out.extend(cache[: hi - start])
        return limit_size(out, max_size)

    # -- extras -----------------------------------------------------------
    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def cached_first_index(self) -> int:
        """Lowest index served from memory (last_index()+1 when none is)."""
        return self._cache[0].index if self._cache else self._last + 1

    def trim_cache(self) -> None:
        """Keep only the newest entry in memory (its term is the one asked
        for most); older ones are read back from the store if ever needed.
        The runtime calls it when the group goes quiet: every member then
        has the whole log, and thousands of idle groups each kept up to
        the cache's bounds (issue #20)."""
        cache = self._cache
        if len(cache) > 1:
            last = cache[-1]
            self._cache, self._cache_bytes = [last], len(last.data)

    # -- installing a committed batch (store only) ----------------------------
    def _reset(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._offset = self._offset_term = self._last = 0
        self._cache = []
        self._cache_bytes = 0

    def _install(self, p: StagedGroup, max_entries: int, max_bytes: int) -> None:
        cache = self._cache
        nbytes = self._cache_bytes
        if p.drop_log:
            cache, nbytes = [], 0
        tail = p.tail
        if tail:
            start = tail[0].index
            if cache and cache[0].index + len(cache) != start:  # not a plain append
                cut = start - cache[0].index
                if cut > 0:
                    for e in cache[cut:]:
                        nbytes -= len(e.data)
                    del cache[cut:]
                else:
                    cache, nbytes = [], 0
            for e in tail:
                nbytes += len(e.data)
            cache.extend(tail)
        if cache:
            # Drop what is at or below the offset, then the oldest over the bounds.
            n = len(cache)
            drop = 0
            if cache[0].index <= p.offset:
                drop = min(n, p.offset - cache[0].index + 1)
                for e in cache[:drop]:
                    nbytes -= len(e.data)
            while drop < n and (n - drop > max_entries or nbytes > max_bytes):
                nbytes -= len(cache[drop].data)
                drop += 1
            if drop:
                del cache[:drop]
        self._cache, self._cache_bytes = cache, nbytes
        self._offset, self._offset_term, self._last = p.offset, p.offset_term, p.last
        self._hard_state = p.hard_state
        self._snapshot = p.snapshot


@dataclass(slots=True)
class StagedGroup:
    """A group's state as a LogBatch will leave it (the view is untouched until commit)."""

    view: GroupStorage
    offset: int
    offset_term: int
    last: int
    hard_state: HardState
    snapshot: Snapshot
    tail: list[Entry] = field(default_factory=list)  # entries staged here, ending at last
    drop_log: bool = False  # the committed log is dropped (snapshot applied)
    removed: bool = False
    tombstone: int | None = None  # with removed: the tombstone left in its place
    tombstone_cleared: bool = False
