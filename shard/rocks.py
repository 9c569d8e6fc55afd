"""RocksEngine: the KvEngine over the process's RocksDB (a raw-mode rocksdict).

The DB is shared with the Raft log store (``raft/storage``); shard data keeps
to its own first bytes (``shard/keys.py``). The state machine never writes
the DB itself: its writes go into the runtime's WriteBatch for the apply
round, so they land atomically with the applied index.

rocksdict 0.3.29 notes (checked by tests/unit/shard):

- ``Snapshot.iter()``/``items()`` read the live DB, not the snapshot; only
  ``snapshot[key]`` honours it. A RocksDB iterator, however, reads the
  implicit snapshot taken when it was created, so ``snapshot()`` here pins
  one iterator and serves every read of the view from it.
- ``ReadOptions`` cannot be built in raw mode, so iterator bounds set on it
  would be encoded wrongly: bounds are checked in Python instead.
"""

from __future__ import annotations

from typing import Any

import rocksdict

from shard.engine import Cursor, KvReader


class _RocksCursor:
    __slots__ = ("_it", "_lower", "_upper", "_valid")

    def __init__(self, it: Any, lower: bytes, upper: bytes) -> None:
        self._it = it
        self._lower = lower
        self._upper = upper
        self._valid = False

    def _check(self) -> None:
        self._valid = bool(self._it.valid()) and bytes(self._it.key()) < self._upper

    def seek(self, key: bytes) -> None:
        self._it.seek(max(key, self._lower))
        self._check()

    def valid(self) -> bool:
        return self._valid

    def key(self) -> bytes:
        return bytes(self._it.key())

    def value(self) -> bytes:
        return bytes(self._it.value())

    def next(self) -> None:
        self._it.next()
        self._check()


class _PinnedView:
    """Every read goes through one iterator made at snapshot time, so all of
    them see the DB as it was then. Cursors share that iterator: use one
    cursor at a time (and no get() while a cursor is in use)."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self._it = db.iter()

    def get(self, key: bytes) -> bytes | None:
        self._it.seek(key)
        if self._it.valid() and bytes(self._it.key()) == key:
            return bytes(self._it.value())
        return None

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        return _RocksCursor(self._it, lower, upper)


class RocksEngine:
    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db = db

    def get(self, key: bytes) -> bytes | None:
        v = self.db.get(key)
        return None if v is None else bytes(v)

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        return _RocksCursor(self.db.iter(), lower, upper)

    def snapshot(self) -> KvReader:
        return _PinnedView(self.db)

    def new_batch(self) -> rocksdict.WriteBatch:
        return rocksdict.WriteBatch(raw_mode=True)

    def write(self, batch: Any) -> None:
        self.db.write(batch)

    def flush_memtable(self) -> None:
        """Flush the memtable to an SST file (bounds the memory of a big
        snapshot ingest; the data is in the WAL already)."""
        self.db.flush(wait=True)
