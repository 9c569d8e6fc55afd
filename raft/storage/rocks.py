"""The RocksDB log store: every Raft group's log, hard state and snapshot
metadata in the process's one RocksDB (key layout: ``raft/storage/keys.py``;
a group's view: ``groupview.py``; staging: ``batch.py``; the protocol the
runtime sees: ``logstore.py``).

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
may leave a tombstone in it (``keys.tombstone_key``): a number the owner chose, kept across restarts
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
from typing import Callable, Sequence

import rocksdict

from raft.core.errors import RaftInvariantError
from raft.core.types import ConfState, Entry, HardState, Ready, Snapshot, SnapshotMetadata
from raft.storage import keys
from raft.storage.batch import LogBatch, Reader
from raft.storage.groupview import GroupStorage, StagedGroup
from raft.storage.logstore import FatalStorageError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_ENTRIES",
    "RocksLogStore",
    "open_db",
]


def _decode_tombstone(raw: bytes) -> int:
    number = keys.decode_tombstone(raw)
    if number is None:
        raise FatalStorageError(f"bad tombstone record {raw.hex()}")
    return number


DEFAULT_CACHE_ENTRIES = 512
DEFAULT_CACHE_BYTES = 1 << 20


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


class RocksLogStore:
    """The per-process log store of many groups, over one shared RocksDB.

    Call ``recover()`` once, before anything else: it rebuilds every group's
    view from disk. Then stage Readys (and compactions, snapshots, removals)
    into ``LogBatch``es and commit them; each commit is one RocksDB write
    followed by one WAL sync, run on a single-thread executor the store owns.

    ``executor`` replaces that executor (the simulation runs writes inline,
    ``raft.testing.SimLogStore``); the store shuts it down on ``close()``.
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        *,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        keep_snapshot_data: bool = False,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        if cache_entries < 0 or cache_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self._db = db
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self.keep_snapshot_data = keep_snapshot_data
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-log-sync")
        self._groups: dict[int, GroupStorage] = {}
        self._tombstones: dict[int, int] = {}
        self._reader: Reader | None = None
        self._in_flight = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
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
                raw = self._db.get(keys.tombstone_key(group_id))
                if raw is not None:
                    self._tombstones[group_id] = _decode_tombstone(raw)
                if raw is None or key != keys.tombstone_key(group_id):  # more than a tombstone: a live group
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
        pending = StagedGroup(
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
    def new_write_batch(self) -> rocksdict.WriteBatch:
        """The raw batch a LogBatch stages into (and applications write into)."""
        return rocksdict.WriteBatch(raw_mode=True)

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

    async def wait_idle(self) -> None:
        """Return once no write is in flight (at once if none is): lets a
        test wait for the sync thread on a condition instead of sleeping."""
        while self._in_flight:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

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
        if not self._in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)  # they resume after this callback: the views are installed by then
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

    def read_entry(self, group_id: int, index: int) -> Entry:
        reader = self._reader
        if reader is None:
            raise RaftInvariantError("RocksLogStore.recover() must be called first")
        try:
            return keys.decode_entry(index, reader[keys.log_key(group_id, index)])
        except Exception as exc:
            raise FatalStorageError(f"group={group_id} cannot read log entry {index}") from exc

    def read_entries(
        self, group_id: int, lo: int, hi: int, max_size: int | None
    ) -> tuple[list[Entry], bool]:
        """Entries [lo, hi) from the committed snapshot, stopping once max_size is
        exceeded; returns (entries, stopped_early)."""
        out: list[Entry] = []
        total = 0
        for index in range(lo, hi):
            e = self.read_entry(group_id, index)
            total += len(e.data)
            if out and max_size is not None and total > max_size:
                return out, True
            out.append(e)
        return out, False
