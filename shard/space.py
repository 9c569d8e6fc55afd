"""How much disk a store node's RocksDB uses, and giving space back.

The node's quota (shard/quota.py) is checked against ``RocksSpace.used_bytes``:
RocksDB's live-data estimate of its SST files
(``rocksdb.estimate-live-data-size``) plus what its memtables hold
(``rocksdb.cur-size-all-mem-tables``, which counts the arena RocksDB has
allocated: about 1 MiB as soon as anything is written). It covers the whole
DB of the process: shard data, the Raft logs (until a snapshot compacts
them) and the other groups' state. etcd counts its bbolt file, which does
not shrink until a defragmentation; likewise the estimate here drops only
once RocksDB's compactions drop the deleted versions, which ``defragment``
forces.

``defragment`` (flush the memtables, then compact the whole key range) is
blocking and may take long on a big DB: it runs on this module's one worker
thread, the explicit seam for heavy maintenance, never on the event loop. It
touches only RocksDB, never a loop object.

The node's active alarms are kept here too (``load_alarms`` /
``save_alarms``), so an alarm survives a restart until it is disarmed, as
etcd keeps its alarms in its backend: one record under ``ALARMS_KEY``,
whose first byte 0x07 no other user of the process's RocksDB takes (see
shard/keys.py), one byte per active alarm type, written synced.

``MemorySpace`` is the in-memory twin for tests of the node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Protocol

import rocksdict

LIVE_DATA = "rocksdb.estimate-live-data-size"
MEMTABLES = "rocksdb.cur-size-all-mem-tables"
ALARMS_KEY = b"\x07alarms"
_SYNC = rocksdict.WriteOptions()
_SYNC.sync = True


class SpaceMeter(Protocol):
    def used_bytes(self) -> int:
        """The space used now (cheap: read on a timer, on the loop)."""
        ...

    async def defragment(self) -> None:
        """Give the space of deleted data back (may take long)."""
        ...

    def load_alarms(self) -> tuple[int, ...]:
        """The alarm types saved active (etcdserverpb.AlarmType numbers)."""
        ...

    def save_alarms(self, alarms: tuple[int, ...]) -> None:
        """Keep these alarm types as the active ones (durably: rare and tiny)."""
        ...


class RocksSpace:
    def __init__(self, db: rocksdict.Rdict) -> None:
        self._db = db
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rocks-maintenance")

    def used_bytes(self) -> int:
        return int(self._db.property_int_value(LIVE_DATA) or 0) + int(self._db.property_int_value(MEMTABLES) or 0)

    def _compact_all(self) -> None:
        self._db.flush(wait=True)
        self._db.compact_range(None, None)

    async def defragment(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._compact_all)

    def load_alarms(self) -> tuple[int, ...]:
        raw = self._db.get(ALARMS_KEY)
        return tuple(bytes(raw)) if raw is not None else ()

    def save_alarms(self, alarms: tuple[int, ...]) -> None:
        self._db.put(ALARMS_KEY, bytes(sorted(alarms)), _SYNC)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class MemorySpace:
    """A settable measurement; defragment() subtracts ``freed_by_defragment``."""

    def __init__(self, used: int = 0) -> None:
        self.used = used
        self.freed_by_defragment = 0
        self.defragments = 0
        self.saved_alarms: tuple[int, ...] = ()

    def used_bytes(self) -> int:
        return self.used

    async def defragment(self) -> None:
        self.defragments += 1
        self.used = max(0, self.used - self.freed_by_defragment)

    def load_alarms(self) -> tuple[int, ...]:
        return self.saved_alarms

    def save_alarms(self, alarms: tuple[int, ...]) -> None:
        self.saved_alarms = tuple(sorted(alarms))
