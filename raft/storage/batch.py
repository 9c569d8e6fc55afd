"""LogBatch: one write batch of the log store plus the per-group view
changes it makes once committed (staging: Readys, snapshots, compaction,
bootstrap, removal with a tombstone).

Staging only fills the write batch and records, per group, the state the
batch will leave (``StagedGroup``); the group's ``GroupStorage`` changes only
when the store has written (and synced) the batch.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from raft.core.errors import Compacted, RaftInvariantError, Unavailable
from raft.core.types import ConfState, Entry, HardState, Ready, Snapshot, SnapshotMetadata
from raft.storage import keys
from raft.storage.groupview import GroupStorage, StagedGroup
from raft.storage.logstore import BOOTSTRAP_INDEX, BOOTSTRAP_TERM

__all__ = ["BatchStore", "LogBatch", "Reader"]


class Reader(Protocol):
    """A point-in-time read view of the store's DB (a RocksDB snapshot)."""

    def __getitem__(self, key: bytes) -> bytes: ...


class BatchStore(Protocol):
    """What a LogBatch needs of the store that made it (RocksLogStore, or a
    store of the same shape such as SimLogStore)."""

    keep_snapshot_data: bool

    def new_write_batch(self) -> Any: ...

    def group(self, group_id: int) -> GroupStorage: ...

    def _release(self, lb: LogBatch) -> None: ...


class LogBatch:
    """One RocksDB WriteBatch plus the per-group view changes it makes once committed.

    ``wb`` is the raw WriteBatch: an application may add its own writes (shard
    data, applied index) so they commit atomically with the log. Create with
    ``RocksLogStore.batch()``; commit with ``RocksLogStore.write()``/``commit()``.
    """

    def __init__(self, store: BatchStore) -> None:
        self._store = store
        self.wb = store.new_write_batch()
        self.must_sync = False
        self._pending: dict[int, StagedGroup] = {}
        self._closed = False
        # The read view right after this batch was written (set by the writer,
        # taken by the install: never kept by futures, which may outlive the DB).
        self._reader: Reader | None = None

    @property
    def group_ids(self) -> list[int]:
        return list(self._pending)

    # -- staging --------------------------------------------------------------
    def add_ready(self, group_id: int, rd: Ready) -> None:
        """Stage what a Ready asks to persist: snapshot, then entries, then hard state."""
        if rd.snapshot is not None:
            self.apply_snapshot(group_id, rd.snapshot)
        if rd.entries:
            self.append(group_id, rd.entries)
        if rd.hard_state is not None:
            self.set_hard_state(group_id, rd.hard_state)
        if rd.must_sync:
            self.must_sync = True

    def set_hard_state(self, group_id: int, hs: HardState) -> None:
        p = self._claim(group_id)
        if hs.term != p.hard_state.term or hs.vote != p.hard_state.vote:
            self.must_sync = True
        self.wb.put(keys.hard_state_key(group_id), keys.encode_hard_state(hs))
        p.hard_state = hs

    def append(self, group_id: int, entries: Sequence[Entry]) -> None:
        """Append entries, deleting any conflicting suffix (MemoryStorage.append)."""
        if not entries:
            return
        p = self._claim(group_id)
        first = p.offset + 1
        last = entries[-1].index
        if last < first:
            return  # all compacted already
        ents = list(entries)
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        start = ents[0].index
        if start > p.last + 1:
            raise RaftInvariantError(
                f"group={group_id} missing log entry [last: {p.last}, append at: {start}]"
            )
        wb = self.wb
        if p.last == p.offset:
            # Empty log: make sure the dummy record at the offset exists on disk
            # (recovery reads the offset from the first log key).
            wb.put(keys.log_key(group_id, p.offset), keys.encode_entry(Entry(p.offset_term, p.offset)))
        if p.last > last:
            wb.delete_range(keys.log_key(group_id, last + 1), keys.log_key(group_id, p.last + 1))
        put, log_key, encode_entry = wb.put, keys.log_key, keys.encode_entry
        for e in ents:
            put(log_key(group_id, e.index), encode_entry(e))
        if p.tail and start >= p.tail[0].index:
            del p.tail[start - p.tail[0].index :]
            p.tail.extend(ents)
        else:
            p.tail = ents
        p.last = last
        self.must_sync = True

    def apply_snapshot(self, group_id: int, snapshot: Snapshot) -> None:
        """Replace the group's whole log by a snapshot (stale ones are ignored).

        The snapshot's data belongs to the state machine: only its metadata is
        kept, plus the data itself if the store keeps snapshot data (tests)."""
        p = self._claim(group_id)
        meta = snapshot.metadata
        if meta.index <= p.snapshot.metadata.index:
            return
        wb = self.wb
        wb.delete_range(keys.log_key(group_id, 0), keys.log_end(group_id))
        wb.put(keys.log_key(group_id, meta.index), keys.encode_entry(Entry(meta.term, meta.index)))
        p.snapshot = self._record_snapshot(group_id, meta, snapshot.data)
        p.offset, p.offset_term, p.last = meta.index, meta.term, meta.index
        p.tail = []
        p.drop_log = True
        self.must_sync = True

    def create_snapshot(self, group_id: int, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        """Record a snapshot of the applied state at index (does not compact)."""
        p = self._claim(group_id)
        if index <= p.snapshot.metadata.index:
            return p.snapshot
        if index > p.last:
            raise RaftInvariantError(f"group={group_id} snapshot {index} is out of bound lastindex({p.last})")
        meta = SnapshotMetadata(index=index, term=self._term(p, index), conf_state=conf_state)
        p.snapshot = self._record_snapshot(group_id, meta, data)
        self.must_sync = True
        return p.snapshot

    def compact(self, group_id: int, index: int) -> None:
        """Discard entries before index (it becomes the dummy entry)."""
        p = self._claim(group_id)
        if index <= p.offset:
            return
        if index > p.last:
            raise RaftInvariantError(f"group={group_id} compact {index} is out of bound lastindex({p.last})")
        term = self._term(p, index)
        self.wb.delete_range(keys.log_key(group_id, p.offset), keys.log_key(group_id, index))
        self.wb.put(keys.log_key(group_id, index), keys.encode_entry(Entry(term, index)))
        if p.tail and p.tail[0].index <= index:
            del p.tail[: index - p.tail[0].index + 1]
        p.offset, p.offset_term = index, term
        self.must_sync = True

    def bootstrap(self, group_id: int, conf_state: ConfState) -> None:
        """Give a brand-new group its initial configuration: a snapshot at
        (BOOTSTRAP_INDEX, BOOTSTRAP_TERM) carrying conf_state and no data (the
        empty state), the log starting after it, and a hard state at that term
        and commit. Every initial replica bootstraps exactly so.

        Why not metadata at index 0 (MemoryStorage(conf_state)): a node added
        later would then be caught up from the log at index 1 and never learn
        the initial voters (the configuration lives only in the bootstrap
        metadata), so it could count itself a majority and elect itself. With
        the log starting at BOOTSTRAP_INDEX + 1, a new member (empty log) is
        always sent a snapshot, whose metadata carries the whole configuration
        (TiKV's RAFT_INIT_LOG_INDEX; etcd's rafttest bootstraps at index >= 1)."""
        p = self._claim(group_id)
        if p.last != 0 or p.snapshot.metadata.index != 0 or not p.hard_state.is_empty:
            raise RaftInvariantError(f"group={group_id} bootstrap of a non-empty group")
        meta = SnapshotMetadata(index=BOOTSTRAP_INDEX, term=BOOTSTRAP_TERM, conf_state=conf_state)
        self.wb.delete_range(keys.log_key(group_id, 0), keys.log_end(group_id))
        self.wb.put(keys.log_key(group_id, meta.index), keys.encode_entry(Entry(meta.term, meta.index)))
        p.snapshot = self._record_snapshot(group_id, meta, b"")
        p.offset, p.offset_term, p.last = meta.index, meta.term, meta.index
        p.tail = []
        p.drop_log = True
        self.set_hard_state(group_id, HardState(term=BOOTSTRAP_TERM, vote=0, commit=BOOTSTRAP_INDEX))
        self.must_sync = True

    def remove_group(self, group_id: int, *, tombstone: int | None = None) -> None:
        """Delete everything of the group (its log, hard state, snapshot, applied key).

        tombstone, if given, is left in the group's place (``keys.tombstone_key``):
        a number its owner chose (a shard keeps the configuration version it
        was destroyed at), read back with ``RocksLogStore.tombstone`` even
        after a restart, so the owner can tell a stale message or map entry
        for the destroyed replica from a genuine re-add (TiKV's Tombstone peer
        state). Written after the range delete in the same batch, so it wins."""
        p = self._claim(group_id)
        self.wb.delete_range(keys.group_start(group_id), keys.group_end(group_id))
        if tombstone is not None:
            self.wb.put(keys.tombstone_key(group_id), keys.encode_tombstone(tombstone))
        p.removed = True
        p.tombstone = tombstone
        self.must_sync = True

    def clear_tombstone(self, group_id: int) -> None:
        """Forget a destroyed group's tombstone (it is being hosted again)."""
        p = self._claim(group_id)
        self.wb.delete(keys.tombstone_key(group_id))
        p.tombstone_cleared = True
        self.must_sync = True

    def discard(self) -> None:
        """Abandon an uncommitted batch, releasing its groups for other batches."""
        self._store._release(self)

    # -- helpers --------------------------------------------------------------
    def _claim(self, group_id: int) -> StagedGroup:
        if self._closed:
            raise RaftInvariantError("staging into a committed or discarded LogBatch")
        p = self._pending.get(group_id)
        if p is not None:
            if p.removed:
                raise RaftInvariantError(f"group={group_id} staged after its removal in the same batch")
            return p
        view = self._store.group(group_id)
        if view._staged_in is not None:
            raise RaftInvariantError(f"group={group_id} is already staged in another uncommitted batch")
        view._staged_in = self
        p = StagedGroup(
            view=view,
            offset=view._offset,
            offset_term=view._offset_term,
            last=view._last,
            hard_state=view._hard_state,
            snapshot=view._snapshot,
        )
        self._pending[group_id] = p
        return p

    def _term(self, p: StagedGroup, index: int) -> int:
        if index < p.offset:
            raise Compacted(f"index {index} compacted (first is {p.offset + 1})")
        if index > p.last:
            raise Unavailable(f"index {index} beyond last index {p.last}")
        if index == p.offset:
            return p.offset_term
        if p.tail and index >= p.tail[0].index:
            return p.tail[index - p.tail[0].index].term
        return p.view.term(index)  # below what this batch touched: committed state

    def _record_snapshot(self, group_id: int, meta: SnapshotMetadata, data: bytes) -> Snapshot:
        self.wb.put(keys.snapshot_meta_key(group_id), keys.encode_snapshot_metadata(meta))
        if not self._store.keep_snapshot_data:
            return Snapshot(meta)
        if data:
            self.wb.put(keys.snapshot_data_key(group_id), data)
        else:
            self.wb.delete(keys.snapshot_data_key(group_id))
        return Snapshot(meta, data)
