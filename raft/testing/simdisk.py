"""SimDisk and SimLogStore: the log store over a simulated disk that keeps
what was synced apart from what was only written.

``SimDisk`` is an in-memory stand-in for the process's RocksDB (the subset
``RocksLogStore`` and ``RegisterMachine`` use: ``write``, ``flush_wal``,
``get``, ``snapshot``, ``iter``). A write is visible at once (as RocksDB's
unsynced write is); only ``flush_wal(True)`` makes every write before it
durable, as a WAL sync does. ``crash()`` returns the disk a restarted process
finds: the synced writes only.

``SimLogStore`` is ``RocksLogStore`` over a ``SimDisk``, with its sync
executor run inline (no thread), so a simulation is deterministic. It shares
the real store's staging, views and recovery code on purpose: the simulation
then checks that code too, and only the disk is simulated.
"""

from __future__ import annotations

import bisect
import concurrent.futures
from typing import Any, Callable

from raft.storage.rocks import RocksLogStore

__all__ = ["InlineExecutor", "SimDisk", "SimLogStore", "SimWriteBatch"]


class InlineExecutor(concurrent.futures.Executor):
    """Runs each job at submit time, on the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting caller, as a thread pool would
            fut.set_exception(exc)
        return fut


_PUT, _DELETE, _DELETE_RANGE = 0, 1, 2


class SimWriteBatch:
    """A write batch: operations applied in order by SimDisk.write."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((_PUT, bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self.ops.append((_DELETE, bytes(key), b""))

    def delete_range(self, begin: bytes, end: bytes) -> None:
        self.ops.append((_DELETE_RANGE, bytes(begin), bytes(end)))

    def is_empty(self) -> bool:
        return not self.ops


def _apply(kv: dict[bytes, bytes], ops: list[tuple[int, bytes, bytes]]) -> None:
    for op, a, b in ops:
        if op == _PUT:
            kv[a] = b
        elif op == _DELETE:
            kv.pop(a, None)
        else:
            for k in [k for k in kv if a <= k < b]:
                del kv[k]


class _SimIter:
    """rocksdict's iterator shape over a sorted copy of the keys."""

    def __init__(self, kv: dict[bytes, bytes]) -> None:
        self._kv = kv
        self._keys = sorted(kv)
        self._i = len(self._keys)

    def seek(self, key: bytes) -> None:
        self._i = bisect.bisect_left(self._keys, key)

    def seek_for_prev(self, key: bytes) -> None:
        self._i = bisect.bisect_right(self._keys, key) - 1
        if self._i < 0:
            self._i = len(self._keys)

    def valid(self) -> bool:
        return 0 <= self._i < len(self._keys)

    def key(self) -> bytes:
        return self._keys[self._i]

    def value(self) -> bytes:
        return self._kv[self._keys[self._i]]

    def next(self) -> None:
        self._i += 1


class SimDisk:
    """A process's simulated disk: written state, and the synced part of it."""

    def __init__(self, durable: dict[bytes, bytes] | None = None) -> None:
        self._durable: dict[bytes, bytes] = dict(durable or {})
        self._live: dict[bytes, bytes] = dict(self._durable)
        self._unsynced: list[tuple[int, bytes, bytes]] = []
        self.writes = 0
        self.syncs = 0

    # -- the rocksdict subset ------------------------------------------------
    def write(self, wb: SimWriteBatch, options: object = None) -> None:
        _apply(self._live, wb.ops)
        self._unsynced.extend(wb.ops)
        self.writes += 1

    def flush_wal(self, sync: bool = True) -> None:
        if sync:
            _apply(self._durable, self._unsynced)
            self._unsynced = []
            self.syncs += 1

    def get(self, key: bytes) -> bytes | None:
        return self._live.get(key)

    def __getitem__(self, key: bytes) -> bytes:
        return self._live[key]

    def snapshot(self) -> dict[bytes, bytes]:
        """A point-in-time read view (a copy)."""
        return dict(self._live)

    def iter(self) -> _SimIter:
        return _SimIter(self._live)

    # -- the simulation ------------------------------------------------------
    @property
    def unsynced_ops(self) -> int:
        return len(self._unsynced)

    def crash(self) -> SimDisk:
        """The disk a restarted process finds: what was synced, nothing else."""
        return SimDisk(self._durable)


class SimLogStore(RocksLogStore):
    """RocksLogStore over a SimDisk, writing inline (see the module docstring)."""

    def __init__(self, disk: SimDisk, **kwargs: Any) -> None:
        super().__init__(disk, executor=InlineExecutor(), **kwargs)  # type: ignore[arg-type]
        self.disk = disk

    def new_write_batch(self) -> SimWriteBatch:  # type: ignore[override]
        return SimWriteBatch()
