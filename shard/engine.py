"""The KvEngine seam: the ordered key-value store under a shard, and its twins.

    KvReader     get(key); cursor(lower, upper) over keys in [lower, upper)
    Cursor       seek(key), valid(), key(), value(), next()  (ascending only)
    WriteBatch   put, delete, delete_range (the runtime's RocksDB WriteBatch
                 satisfies it)
    KvEngine     a KvReader plus snapshot() (a consistent read view),
                 new_batch() and write(batch)

``MemoryEngine`` is the in-memory twin for unit tests (a sorted list and a
dict, copy-on-write, so a snapshot or an open cursor never sees later
writes). ``RocksEngine`` (``shard/rocks.py``) is the real one over the
process's RocksDB.

``StagedView`` is how the state machine reads its own writes before the
runtime commits them: the runtime hands ``apply`` a WriteBatch that is
written only after the whole round is applied, and a WriteBatch cannot be
read. The view forwards every write to that batch and remembers it, and
every read merges what it remembers over the engine.

Pure: no I/O, no clocks, no threads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol


class Cursor(Protocol):
    def seek(self, key: bytes) -> None:
        """Move to the first key >= key (and >= the cursor's lower bound)."""
        ...

    def valid(self) -> bool: ...

    def key(self) -> bytes: ...

    def value(self) -> bytes: ...

    def next(self) -> None: ...


class KvReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        """A cursor over the keys in [lower, upper), not yet positioned:
        call seek() first."""
        ...


class WriteBatch(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def delete_range(self, begin: bytes, end: bytes) -> None: ...


class KvEngine(KvReader, Protocol):
    def snapshot(self) -> KvReader:
        """A read view that later writes do not change."""
        ...

    def new_batch(self) -> WriteBatch: ...

    def write(self, batch: WriteBatch) -> None:
        """Apply a batch from new_batch() atomically."""
        ...


def scan(reader: KvReader, lower: bytes, upper: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) with lower <= key < upper, ascending."""
    c = reader.cursor(lower, upper)
    c.seek(lower)
    while c.valid():
        yield c.key(), c.value()
        c.next()


# --- the in-memory engine -------------------------------------------------------------


class _ListCursor:
    """A cursor over a sorted key list and a dict that nobody mutates."""

    __slots__ = ("_keys", "_data", "_lower", "_upper", "_i", "_end")

    def __init__(self, keys: list[bytes], data: dict[bytes, bytes], lower: bytes, upper: bytes) -> None:
        self._keys = keys
        self._data = data
        self._lower = lower
        self._upper = upper
        self._end = bisect.bisect_left(keys, upper)
        self._i = self._end

    def seek(self, key: bytes) -> None:
        self._i = bisect.bisect_left(self._keys, max(key, self._lower), 0, self._end)

    def valid(self) -> bool:
        return self._i < self._end

    def key(self) -> bytes:
        return self._keys[self._i]

    def value(self) -> bytes:
        return self._data[self._keys[self._i]]

    def next(self) -> None:
        self._i += 1


class _FrozenView:
    __slots__ = ("_keys", "_data")

    def __init__(self, keys: list[bytes], data: dict[bytes, bytes]) -> None:
        self._keys = keys
        self._data = data

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        return _ListCursor(self._keys, self._data, lower, upper)


class MemoryWriteBatch:
    """Operations recorded in order, applied by MemoryEngine.write."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[str, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append(("put", bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self.ops.append(("delete", bytes(key), b""))

    def delete_range(self, begin: bytes, end: bytes) -> None:
        self.ops.append(("delete_range", bytes(begin), bytes(end)))

    def __len__(self) -> int:
        return len(self.ops)


class MemoryEngine:
    """The in-memory KvEngine. Each write builds new structures (copy on
    write), so snapshots and open cursors are stable for free."""

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        return _ListCursor(self._keys, self._data, lower, upper)

    def snapshot(self) -> KvReader:
        return _FrozenView(self._keys, self._data)

    def new_batch(self) -> MemoryWriteBatch:
        return MemoryWriteBatch()

    def write(self, batch: WriteBatch) -> None:
        if not isinstance(batch, MemoryWriteBatch):
            raise TypeError(f"MemoryEngine writes MemoryWriteBatch, not {type(batch).__name__}")
        data = dict(self._data)
        for op, a, b in batch.ops:
            if op == "put":
                data[a] = b
            elif op == "delete":
                data.pop(a, None)
            else:
                for k in [k for k in data if a <= k < b]:
                    del data[k]
        self._data = data
        self._keys = sorted(data)

    def __len__(self) -> int:
        return len(self._data)


# --- reading one's own staged writes ------------------------------------------------


class StagedView:
    """A KvReader over `base` plus the writes staged into `batch` since this
    view was made; it is also the WriteBatch the state machine writes to.

    Staged writes live in a dict (value, or None for a delete) with a sorted
    key list, and the deleted ranges in a sorted list of disjoint ranges; a
    put after a delete_range is in the dict, which always wins. Keys written in ascending order (a
    snapshot restore) are appended at O(1) each."""

    def __init__(self, base: KvReader, batch: WriteBatch) -> None:
        self.base = base
        self.batch = batch
        self._ops: dict[bytes, bytes | None] = {}
        self._keys: list[bytes] = []
        self._ranges: list[tuple[bytes, bytes]] = []

    def __len__(self) -> int:
        return len(self._ops)

    # writes
    def put(self, key: bytes, value: bytes) -> None:
        self.batch.put(key, value)
        self._remember(key, value)

    def delete(self, key: bytes) -> None:
        self.batch.delete(key)
        self._remember(key, None)

    def delete_range(self, begin: bytes, end: bytes) -> None:
        if begin >= end:
            return
        self.batch.delete_range(begin, end)
        lo = bisect.bisect_left(self._keys, begin)
        hi = bisect.bisect_left(self._keys, end)
        for k in self._keys[lo:hi]:
            del self._ops[k]
        del self._keys[lo:hi]
        self._add_range(begin, end)

    def _add_range(self, begin: bytes, end: bytes) -> None:
        # _ranges stays sorted and disjoint: merge what [begin, end) touches.
        i = bisect.bisect_left(self._ranges, begin, key=_range_start)
        if i > 0 and self._ranges[i - 1][1] >= begin:
            i -= 1
        j = i
        while j < len(self._ranges) and self._ranges[j][0] <= end:
            begin = min(begin, self._ranges[j][0])
            end = max(end, self._ranges[j][1])
            j += 1
        self._ranges[i:j] = [(begin, end)]

    def _remember(self, key: bytes, value: bytes | None) -> None:
        if key not in self._ops:
            if not self._keys or key > self._keys[-1]:
                self._keys.append(key)
            else:
                bisect.insort(self._keys, key)
        self._ops[key] = value

    # reads
    def _range_deleted(self, key: bytes) -> bool:
        i = bisect.bisect_right(self._ranges, key, key=_range_start) - 1
        return i >= 0 and key < self._ranges[i][1]

    def hides(self, key: bytes) -> bool:
        """Whether a base key is shadowed by a staged write or deleted range."""
        return key in self._ops or (bool(self._ranges) and self._range_deleted(key))

    def get(self, key: bytes) -> bytes | None:
        if key in self._ops:
            return self._ops[key]
        if self._ranges and self._range_deleted(key):
            return None
        return self.base.get(key)

    def cursor(self, lower: bytes, upper: bytes) -> Cursor:
        if not self._ops and not self._ranges:
            return self.base.cursor(lower, upper)
        return _MergeCursor(self, lower, upper)

    def staged_items(self, lower: bytes, upper: bytes) -> list[tuple[bytes, bytes | None]]:
        lo = bisect.bisect_left(self._keys, lower)
        hi = bisect.bisect_left(self._keys, upper)
        return [(k, self._ops[k]) for k in self._keys[lo:hi]]

    def freeze(self) -> StagedView:
        """A copy that later writes to this view do not change (for reading
        off the event loop). The base is shared."""
        out = StagedView(self.base, _NullBatch())
        out._ops = dict(self._ops)
        out._keys = list(self._keys)
        out._ranges = list(self._ranges)
        return out


def _range_start(r: tuple[bytes, bytes]) -> bytes:
    return r[0]


class _NullBatch:
    def put(self, key: bytes, value: bytes) -> None:
        raise TypeError("a frozen StagedView is read-only")

    def delete(self, key: bytes) -> None:
        raise TypeError("a frozen StagedView is read-only")

    def delete_range(self, begin: bytes, end: bytes) -> None:
        raise TypeError("a frozen StagedView is read-only")


class _MergeCursor:
    """Merges the base cursor (minus hidden keys) with the staged puts.

    The staged entries in [lower, upper) are copied when the cursor is made:
    writes staged while it is open are not seen by it."""

    __slots__ = ("_view", "_base", "_staged", "_si", "_lower", "_cur", "_from_staged")

    def __init__(self, view: StagedView, lower: bytes, upper: bytes) -> None:
        self._view = view
        self._base = view.base.cursor(lower, upper)
        self._staged = [(k, v) for k, v in view.staged_items(lower, upper) if v is not None]
        self._si = len(self._staged)
        self._lower = lower
        self._cur: tuple[bytes, bytes] | None = None
        self._from_staged = False

    def _skip_hidden(self) -> None:
        b = self._base
        while b.valid() and self._view.hides(b.key()):
            b.next()

    def _settle(self) -> None:
        b = self._base
        base_key = b.key() if b.valid() else None
        staged = self._staged[self._si] if self._si < len(self._staged) else None
        if staged is not None and (base_key is None or staged[0] < base_key):
            self._cur, self._from_staged = staged, True
        elif base_key is not None:
            self._cur, self._from_staged = (base_key, b.value()), False
        else:
            self._cur = None

    def seek(self, key: bytes) -> None:
        key = max(key, self._lower)
        self._base.seek(key)
        self._skip_hidden()
        self._si = bisect.bisect_left(self._staged, (key,))
        self._settle()

    def valid(self) -> bool:
        return self._cur is not None

    def key(self) -> bytes:
        assert self._cur is not None
        return self._cur[0]

    def value(self) -> bytes:
        assert self._cur is not None
        return self._cur[1]

    def next(self) -> None:
        if self._from_staged:
            self._si += 1
        else:
            self._base.next()
            self._skip_hidden()
        self._settle()
