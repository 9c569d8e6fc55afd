"""The RocksDB log store: every Raft group's log, hard state and snapshot
metadata in the process's one RocksDB (key layout: ``raft/storage/keys.py``).

Writing (group commit)::

    lb = store.stage([(group_id, ready), ...])   # all groups, ONE WriteBatch
    extra(lb.wb)                                  # optional: the apply step's own writes
    await store.write(lb)                         # ONE write + ONE sync, off the event loop
    # or simply: await store.persist(batch, extra_writes=extra)

Staging only fills the WriteBatch and records, per group, the view changes the
batch will make. Every ``GroupStorage`` (what the Raft core reads through)
changes only after the batch was written *and* synced, so the core never sees
an unsynced entry as stable. A failed write or sync raises ``FatalStorageError``
and poisons the store: every later write raises too, and the in-memory views
stay as they were. The runtime exits the process; recovery is a restart.

Removing: ``LogBatch.remove_group`` deletes a group's whole key range and
may leave a tombstone in it (key kind 0x20, after the log; record
``B version=1 | Q number``): a number the owner chose, kept across restarts
(``RocksLogStore.tombstone``) until cleared; a group with only a tombstone
is not recovered as a group.

Reading: metadata (offset, last index, hard state, snapshot) and the most
recent entries of each group are kept in memory; older entries are read from a
RocksDB snapshot taken right after the last successful commit, so a read can
never observe the memtable state of a batch whose sync is still in flight.
(rocksdict 0.3.29: ``Snapshot.iter()``/``items()`` ignore the snapshot and
read the live DB; only ``snapshot[key]`` honours it, so old entries are read
with point lookups, about 1 us each.)

Sync and the GIL, measured on rocksdict 0.3.29 (ext4, fsync ~0.2 ms, 2 cores):
a thread loops over one call while the main thread bumps a counter; a call
during which the counter did not move held the GIL throughout.

    call                                   calls with no main-thread progress
    write(wb, WriteOptions(sync=True))     289/300 (100 B value), median 0.20 ms
    write(wb, no sync)                     300/300 (short: memtable + write(2) to the WAL)
    write(wb, no sync); flush_wal(True)    0/300

So ``write(sync=True)`` holds the GIL while it fsyncs (the event loop stops for
the whole sync) and ``flush_wal(sync=True)`` releases it. The store therefore
writes without sync and then calls ``flush_wal(True)``, both in one job of a
single-thread executor the store owns. Durability, checked with strace: the
unsynced ``write`` puts the batch into the WAL file with write(2) (RocksDB's
``manual_wal_flush`` is off), and ``flush_wal(True)`` (``FlushWAL`` ->
``SyncWAL``) then calls fdatasync on that WAL file (plus an fsync of the DB
directory the first time). The cost of releasing the GIL: while the loop
thread is CPU-bound, the sync thread waits to get the GIL back (median
write+flush_wal 5.5-6.5 ms against a spinning main thread, with a switch
interval of 5 ms or 0.5 ms alike), which group commit amortizes over the
batch; with a mostly idle loop both variants give ~2,300 syncs/s here, and
only flush_wal leaves the loop running during the fsync itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import rocksdict

from raft.core.errors import Compacted, RaftInvariantError, Unavailable
from raft.core.storage import limit_size
from raft.core.types import (
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMetadata,
)
from raft.storage import keys

log = logging.getLogger(__name__)

BOOTSTRAP_INDEX = 1
"""Index of the snapshot a bootstrapped group starts from (see LogBatch.bootstrap)."""
BOOTSTRAP_TERM = 1


def is_bootstrap_snapshot(snapshot: Snapshot) -> bool:
    """Whether snapshot is the dataless one a group was bootstrapped with: its
    state machine state is the empty state, there is nothing to restore.
    (No real snapshot has that index: the first entry a group applies is
    BOOTSTRAP_INDEX + 1.)"""
    return snapshot.metadata.index == BOOTSTRAP_INDEX and snapshot.metadata.term == BOOTSTRAP_TERM and not snapshot.data

__all__ = [
    "BOOTSTRAP_INDEX",
    "BOOTSTRAP_TERM",
    "FatalStorageError",
    "GroupStorage",
    "LogBatch",
    "RocksLogStore",
    "is_bootstrap_snapshot",
    "open_db",
    "tombstone_key",
]

_TOMBSTONE_KIND = 0x20
"""Key kind of a destroyed group's tombstone: inside the group's key range
(``keys.group_start``/``group_end``), after its log, never read as a log key."""
_TOMBSTONE = struct.Struct(">BQ")
"""tombstone record: B version=1 | Q the owner's number (see LogBatch.remove_group)"""


def tombstone_key(group_id: int) -> bytes:
    """Where a destroyed group's tombstone is kept."""
    return keys.group_start(group_id) + bytes([_TOMBSTONE_KIND])


def _decode_tombstone(raw: bytes) -> int:
    if len(raw) != _TOMBSTONE.size or raw[0] != 1:
        raise FatalStorageError(f"bad tombstone record {raw.hex()}")
    return int(_TOMBSTONE.unpack(raw)[1])


DEFAULT_CACHE_ENTRIES = 512
DEFAULT_CACHE_BYTES = 1 << 20


class FatalStorageError(Exception):
    """A RocksDB write, sync or read failed, or stored data cannot be decoded.

    Fail-stop: the runtime exits the process and recovers by restarting from
    disk. Deliberately not a ``FlotillaError``: no handler of expected outcomes
    may swallow it.
    """


class _Reader(Protocol):
    def __getitem__(self, key: bytes) -> bytes: ...


def open_db(path: str | os.PathLike[str]) -> rocksdict.Rdict:
    """Open (or create) the process's RocksDB in raw (bytes) mode, WAL on."""
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    # Recover up to the last intact WAL record after a crash (RocksDB's default,
    # stated because the log store depends on it).
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
    opts.increase_parallelism(os.cpu_count() or 2)
    try:
        return rocksdict.Rdict(os.fspath(path), opts)
    except Exception as exc:
        raise FatalStorageError(f"cannot open RocksDB at {os.fspath(path)}") from exc


_NO_SYNC = rocksdict.WriteOptions()
_NO_SYNC.sync = False


class GroupStorage:
    """One group's view, implementing ``raft.core.storage.Storage``.

    Mirrors ``MemoryStorage``: a dummy entry at the offset (snapshot or
    compaction index) carries that index's term; ``first_index`` is offset+1.
    Reflects only committed batches. Written through ``LogBatch`` only.
    """

    def __init__(self, store: RocksLogStore, group_id: int) -> None:
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
        self._staged_in: LogBatch | None = None

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
        return self._store._read_entry(self.group_id, index).term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self._offset:
            raise Compacted(f"index {lo} compacted (first is {self._offset + 1})")
        if hi > self._last + 1:
            raise Unavailable(f"entries [{lo}, {hi}) beyond last index {self._last}")
        cache = self._cache
        start = cache[0].index if cache else self._last + 1
        if lo >= start:
            return limit_size(cache[lo - start : hi - start], max_size)
        out, full = self._store._read_entries(self.group_id, lo, min(hi, start), max_size)
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

    # -- installing a committed batch (store only) ----------------------------
    def _reset(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._offset = self._offset_term = self._last = 0
        self._cache = []
        self._cache_bytes = 0

    def _install(self, p: _Pending, max_entries: int, max_bytes: int) -> None:
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
class _Pending:
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


class LogBatch:
    """One RocksDB WriteBatch plus the per-group view changes it makes once committed.

    ``wb`` is the raw WriteBatch: an application may add its own writes (shard
    data, applied index) so they commit atomically with the log. Create with
    ``RocksLogStore.batch()``; commit with ``RocksLogStore.write()``/``commit()``.
    """

    def __init__(self, store: RocksLogStore) -> None:
        self._store = store
        self.wb = rocksdict.WriteBatch(raw_mode=True)
        self.must_sync = False
        self._pending: dict[int, _Pending] = {}
        self._closed = False
        # The read view right after this batch was written (set by the writer,
        # taken by the install: never kept by futures, which may outlive the DB).
        self._reader: _Reader | None = None

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

        tombstone, if given, is left in the group's place (``tombstone_key``):
        a number its owner chose (a shard keeps the configuration version it
        was destroyed at), read back with ``RocksLogStore.tombstone`` even
        after a restart, so the owner can tell a stale message or map entry
        for the destroyed replica from a genuine re-add (TiKV's Tombstone peer
        state). Written after the range delete in the same batch, so it wins."""
        p = self._claim(group_id)
        self.wb.delete_range(keys.group_start(group_id), keys.group_end(group_id))
        if tombstone is not None:
            self.wb.put(tombstone_key(group_id), _TOMBSTONE.pack(1, tombstone))
        p.removed = True
        p.tombstone = tombstone
        self.must_sync = True

    def clear_tombstone(self, group_id: int) -> None:
        """Forget a destroyed group's tombstone (it is being hosted again)."""
        p = self._claim(group_id)
        self.wb.delete(tombstone_key(group_id))
        p.tombstone_cleared = True
        self.must_sync = True

    def discard(self) -> None:
        """Abandon an uncommitted batch, releasing its groups for other batches."""
        self._store._release(self)

    # -- helpers --------------------------------------------------------------
    def _claim(self, group_id: int) -> _Pending:
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
        p = _Pending(
            view=view,
            offset=view._offset,
            offset_term=view._offset_term,
            last=view._last,
            hard_state=view._hard_state,
            snapshot=view._snapshot,
        )
        self._pending[group_id] = p
        return p

    def _term(self, p: _Pending, index: int) -> int:
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


class RocksLogStore:
    """The per-process log store of many groups, over one shared RocksDB.

    Call ``recover()`` once, before anything else: it rebuilds every group's
    view from disk. Then stage Readys (and compactions, snapshots, removals)
    into ``LogBatch``es and commit them; each commit is one RocksDB write
    followed by one WAL sync, run on a single-thread executor the store owns.
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        *,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        keep_snapshot_data: bool = False,
    ) -> None:
        if cache_entries < 0 or cache_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self._db = db
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self.keep_snapshot_data = keep_snapshot_data
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-log-sync")
        self._groups: dict[int, GroupStorage] = {}
        self._tombstones: dict[int, int] = {}
        self._reader: _Reader | None = None
        self._in_flight = 0
        self._failed: BaseException | None = None
        self._closed = False

    @property
    def db(self) -> rocksdict.Rdict:
        """The shared DB handle (reads of other prefixes; never write Raft keys)."""
        return self._db

    @property
    def failed(self) -> bool:
        return self._failed is not None

    # -- recovery ---------------------------------------------------------------
    def recover(self, *, verify: bool = False) -> dict[int, GroupStorage]:
        """Rebuild every group's view from what is on disk; call once, first.

        With verify, also check every group's whole log for holes (reads it all)."""
        if self._reader is not None:
            raise RaftInvariantError("RocksLogStore.recover() called twice")
        try:
            it = self._db.iter()
            end = keys.raft_end()
            it.seek(keys.RAFT_PREFIX)
            while it.valid():
                key = it.key()
                if key >= end:
                    break
                group_id = keys.parse_group(key)
                raw = self._db.get(tombstone_key(group_id))
                if raw is not None:
                    self._tombstones[group_id] = _decode_tombstone(raw)
                if raw is None or key != tombstone_key(group_id):  # more than a tombstone: a live group
                    self._groups[group_id] = self._load_group(group_id, it, verify)
                it.seek(keys.group_end(group_id))
            del it
            self._reader = self._db.snapshot()
        except FatalStorageError:
            raise
        except Exception as exc:
            raise FatalStorageError("recovering the raft log store failed") from exc
        log.info("recovered raft log store groups=%d", len(self._groups))
        return dict(self._groups)

    def _load_group(self, group_id: int, it: rocksdict.RdictIter, verify: bool) -> GroupStorage:
        view = GroupStorage(self, group_id)
        raw = self._db.get(keys.hard_state_key(group_id))
        hs = keys.decode_hard_state(raw) if raw is not None else HardState()
        raw = self._db.get(keys.snapshot_meta_key(group_id))
        meta = keys.decode_snapshot_metadata(raw) if raw is not None else SnapshotMetadata()
        data = b""
        if self.keep_snapshot_data:
            data = self._db.get(keys.snapshot_data_key(group_id)) or b""
        log_end = keys.log_end(group_id)
        pending = _Pending(
            view, offset=meta.index, offset_term=meta.term, last=meta.index, hard_state=hs, snapshot=Snapshot(meta, data)
        )
        it.seek(keys.log_key(group_id, 0))
        if it.valid() and it.key() < log_end:
            _, _, first = keys.parse_key(it.key())
            assert first is not None
            dummy = keys.decode_entry(first, it.value())
            it.seek_for_prev(keys.log_key(group_id, keys.MAX_U64))
            _, _, last = keys.parse_key(it.key())
            assert last is not None
            start = first + 1 if verify else max(first + 1, last - self.cache_entries + 1)
            it.seek(keys.log_key(group_id, start))
            tail: list[Entry] = []
            expect = start
            while it.valid() and it.key() < log_end:
                _, _, index = keys.parse_key(it.key())
                if index != expect:
                    raise FatalStorageError(f"group={group_id} log has a hole: index {expect} missing (found {index})")
                tail.append(keys.decode_entry(expect, it.value()))
                expect += 1
                it.next()
            if expect != last + 1:
                raise FatalStorageError(f"group={group_id} log ends at {expect - 1}, want {last}")
            pending.offset, pending.offset_term, pending.last = first, dummy.term, last
            pending.tail = tail
        view._install(pending, self.cache_entries, self.cache_bytes)
        return view

    # -- views --------------------------------------------------------------------
    def group(self, group_id: int) -> GroupStorage:
        """The group's view (an empty one for a group never written)."""
        if self._reader is None:
            raise RaftInvariantError("RocksLogStore.recover() must be called first")
        view = self._groups.get(group_id)
        if view is None:
            view = self._groups[group_id] = GroupStorage(self, group_id)
        return view

    def group_ids(self) -> list[int]:
        """Ids of the groups recovered or touched since (removed ones excluded)."""
        return sorted(self._groups)

    def tombstone(self, group_id: int) -> int | None:
        """The tombstone a removal left for group_id (None: none, or cleared)."""
        return self._tombstones.get(group_id)

    # -- writing ------------------------------------------------------------------
    def batch(self) -> LogBatch:
        return LogBatch(self)

    def stage(self, batch: Sequence[tuple[int, Ready]], lb: LogBatch | None = None) -> LogBatch:
        """Stage every group's Ready into one LogBatch (a new one unless given)."""
        if lb is None:
            lb = LogBatch(self)
        for group_id, rd in batch:
            lb.add_ready(group_id, rd)
        return lb

    def commit(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        """Write the batch and sync (if sync, default lb.must_sync), blocking the caller.

        For tests and tools; the runtime uses write()/persist()."""
        if self._in_flight:
            raise RaftInvariantError("blocking commit() while asynchronous writes are in flight")
        do_sync = lb.must_sync if sync is None else sync
        self._check_batch(lb)
        self._write_durably(lb, do_sync)
        self._install(lb)

    async def write(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        """Write the batch and sync (if sync, default lb.must_sync) on the store's
        executor; the group views change only once that succeeded.

        Cancelling the caller does not cancel the write: the views are still
        updated when it completes."""
        do_sync = lb.must_sync if sync is None else sync
        self._check_batch(lb)
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._executor, self._write_durably, lb, do_sync)
        except BaseException:
            self._release(lb)  # nothing was written (e.g. the store is closed)
            raise
        self._in_flight += 1
        fut.add_done_callback(functools.partial(self._on_written, lb))
        await asyncio.shield(fut)
        if self._failed is not None:
            raise FatalStorageError("the raft log store failed") from self._failed

    async def persist(
        self,
        batch: Sequence[tuple[int, Ready]],
        extra_writes: Callable[[rocksdict.WriteBatch], None] | None = None,
    ) -> None:
        """Persist every group's Ready with one write and one sync (group commit).

        extra_writes, if given, adds its own writes to the same WriteBatch."""
        lb = self.stage(batch)
        if extra_writes is not None:
            extra_writes(lb.wb)
        await self.write(lb)

    async def apply_snapshot(self, group_id: int, snapshot: Snapshot) -> None:
        lb = self.batch()
        lb.apply_snapshot(group_id, snapshot)
        await self.write(lb)

    async def create_snapshot(self, group_id: int, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        lb = self.batch()
        snap = lb.create_snapshot(group_id, index, conf_state, data)
        await self.write(lb)
        return snap

    async def compact(self, group_id: int, index: int) -> None:
        lb = self.batch()
        lb.compact(group_id, index)
        await self.write(lb)

    async def remove_group(self, group_id: int, *, tombstone: int | None = None) -> None:
        lb = self.batch()
        lb.remove_group(group_id, tombstone=tombstone)
        await self.write(lb)

    async def clear_tombstone(self, group_id: int) -> None:
        lb = self.batch()
        lb.clear_tombstone(group_id)
        await self.write(lb)

    async def bootstrap(self, group_id: int, conf_state: ConfState) -> None:
        lb = self.batch()
        lb.bootstrap(group_id, conf_state)
        await self.write(lb)

    def close(self) -> None:
        """Stop the executor (after queued writes) and drop the read view.

        Does not close the DB: its opener does, after this. (A live rocksdict
        snapshot or iterator keeps the DB, and its LOCK file, open.)"""
        self._executor.shutdown(wait=True)
        self._reader = None
        self._closed = True

    # -- internals ------------------------------------------------------------------
    def _check_batch(self, lb: LogBatch) -> None:
        if lb._store is not self:
            raise RaftInvariantError("LogBatch of another store")
        if lb._closed:
            raise RaftInvariantError("LogBatch committed twice")
        if self._reader is None:
            raise RaftInvariantError("RocksLogStore.recover() must be called first")
        lb._closed = True

    def _write_durably(self, lb: LogBatch, sync: bool) -> None:
        """One RocksDB write, then one WAL sync: on the executor thread (or inline).

        Also takes the read view the install will publish: a RocksDB snapshot
        taken right here, before any later batch is written."""
        if self._failed is not None:
            raise FatalStorageError("an earlier write or sync failed; refusing to write") from self._failed
        try:
            self._db.write(lb.wb, _NO_SYNC)
            if sync:
                # Releases the GIL during the fsync, unlike write(sync=True).
                self._db.flush_wal(True)
            lb._reader = self._db.snapshot()
        except Exception as exc:
            self._failed = exc
            log.critical("raft log store write failed sync=%s: %r", sync, exc)
            raise FatalStorageError(f"RocksDB write/sync failed: {exc}") from exc

    def _on_written(self, lb: LogBatch, fut: asyncio.Future[None]) -> None:
        """Done-callback on the loop thread: install the views of a written batch."""
        self._in_flight -= 1
        if fut.cancelled():
            self._failed = self._failed or RuntimeError("log store write was cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            self._failed = self._failed or exc
            return
        try:
            self._install(lb)
        except BaseException as err:  # a bug: poison the store, the writer raises
            self._failed = err
            log.critical("installing a committed raft log batch failed", exc_info=True)

    def _install(self, lb: LogBatch) -> None:
        if lb._reader is None:
            raise RaftInvariantError("installing a batch that was not written")
        # A write that completes after close() (its caller was cancelled)
        # must not publish a read view: it would pin the closed DB (and its LOCK).
        self._reader, lb._reader = (None if self._closed else lb._reader), None
        for group_id, p in lb._pending.items():
            view = p.view
            view._staged_in = None
            if p.removed and p.tombstone is not None:
                self._tombstones[group_id] = p.tombstone
            elif p.removed or p.tombstone_cleared:  # the range delete took an older one too
                self._tombstones.pop(group_id, None)
            if p.removed:
                view._reset()
                if self._groups.get(group_id) is view:
                    del self._groups[group_id]
                log.info("group=%d removed from the raft log store", group_id)
                continue
            snap_changed = p.snapshot is not view._snapshot
            view._install(p, self.cache_entries, self.cache_bytes)
            if p.drop_log:
                log.info("group=%d applied snapshot index=%d term=%d", group_id, p.offset, p.offset_term)
            elif snap_changed:
                log.info("group=%d recorded snapshot index=%d", group_id, p.snapshot.metadata.index)
        lb._pending = {}

    def _release(self, lb: LogBatch) -> None:
        for p in lb._pending.values():
            if p.view._staged_in is lb:
                p.view._staged_in = None
        lb._pending = {}
        lb._closed = True

    def _read_entry(self, group_id: int, index: int) -> Entry:
        reader = self._reader
        if reader is None:
            raise RaftInvariantError("RocksLogStore.recover() must be called first")
        try:
            return keys.decode_entry(index, reader[keys.log_key(group_id, index)])
        except Exception as exc:
            raise FatalStorageError(f"group={group_id} cannot read log entry {index}") from exc

    def _read_entries(
        self, group_id: int, lo: int, hi: int, max_size: int | None
    ) -> tuple[list[Entry], bool]:
        """Entries [lo, hi) from the committed snapshot, stopping once max_size is
        exceeded; returns (entries, stopped_early)."""
        out: list[Entry] = []
        total = 0
        for index in range(lo, hi):
            e = self._read_entry(group_id, index)
            total += len(e.data)
            if out and max_size is not None and total > max_size:
                return out, True
            out.append(e)
        return out, False
