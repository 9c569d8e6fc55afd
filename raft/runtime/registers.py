"""RegisterMachine: the smallest real state machine, for runtime tests and benchmarks.

Payload `key=value` sets a register. State lives in the process's RocksDB
under RegisterMachine.PREFIX | group_id | key, with the applied index and a
running digest (so replicas can be compared cheaply) under the group's meta
key. Results: the index at which the entry applied.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Sequence

import rocksdict

from raft.core.types import Entry

PREFIX = b"\x03"
_META = struct.Struct(">QQ")  # applied index, applied count


class RegisterMachine:
    def __init__(self, db: rocksdict.Rdict, group_id: int) -> None:
        self._db = db
        self.group_id = group_id
        self._base = PREFIX + group_id.to_bytes(8, "big")
        self._meta_key = self._base + b"\x00"
        self._data = self._base + b"\x01"
        raw = db.get(self._meta_key)
        if raw is None:
            self._applied, self.count, self.digest = 0, 0, b"\x00" * 16
        else:
            self._applied, self.count = _META.unpack_from(raw)
            self.digest = bytes(raw[_META.size :])

    def applied_index(self) -> int:
        return self._applied

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]:
        out: list[object] = []
        for e in entries:
            key, sep, value = e.data.partition(b"=")
            if sep:
                wb.put(self._data + key, value)
            self.count += 1
            self.digest = hashlib.blake2b(self.digest + e.data, digest_size=16).digest()
            out.append(e.index)
        return out

    def on_applied_index(self, index: int, wb: Any) -> None:
        self._applied = index
        wb.put(self._meta_key, _META.pack(index, self.count) + self.digest)

    def get(self, key: bytes) -> bytes | None:
        v = self._db.get(self._data + key)
        return None if v is None else bytes(v)

    def snapshot(self) -> bytes:
        parts = [_META.pack(self._applied, self.count) + self.digest]
        it = self._db.iter()
        it.seek(self._data)
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(self._data):
                break
            v = bytes(it.value())
            kk = k[len(self._data) :]
            parts.append(struct.pack(">II", len(kk), len(v)) + kk + v)
            it.next()
        return b"".join(parts)

    def restore(self, data: bytes, index: int, wb: Any) -> None:
        # Drop the current registers, then load the snapshot's.
        it = self._db.iter()
        it.seek(self._data)
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(self._data):
                break
            wb.delete(k)
            it.next()
        applied, count = _META.unpack_from(data)
        digest = data[_META.size : _META.size + 16]
        off = _META.size + 16
        while off < len(data):
            klen, vlen = struct.unpack_from(">II", data, off)
            off += 8
            k = data[off : off + klen]
            off += klen
            v = data[off : off + vlen]
            off += vlen
            wb.put(self._data + k, v)
        if applied != index:
            raise ValueError(f"snapshot data at {applied} does not match metadata index {index}")
        self._applied, self.count, self.digest = applied, count, bytes(digest)
        wb.put(self._meta_key, _META.pack(applied, count) + self.digest)
