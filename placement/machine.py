"""PlacementMachine: the placement state on the runtime's StateMachine seam.

Persistence in the process's RocksDB, under PREFIX | group_id(8) | kind::

    0x00            applied index  (B version=1 | Q index)
    0x01            the map record (cluster, nodes, shards; placement/codec.py)
    0x02 | id(8)    one record per lease, live or ending (id as unsigned 64-bit)
    0x03            the auth record (users, roles, simple tokens; placement/authbook.py)

Each apply round writes the map record if the map changed, the records of
the leases it touched, and the applied index, in the runtime's WriteBatch.
Listeners get each MapChange as it applies (the map watch).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

import rocksdict

from placement.authbook import AuthBook
from placement.codec import decode_command
from placement.commands import Applied, MapChange
from placement.state import PlacementState
from raft.core.types import Entry

log = logging.getLogger(__name__)

PREFIX = b"\x08"
_APPLIED = struct.Struct(">BQ")
_KIND_APPLIED = b"\x00"
_KIND_MAP = b"\x01"
_KIND_LEASE = b"\x02"
_KIND_AUTH = b"\x03"


class PlacementMachine:
    def __init__(self, db: rocksdict.Rdict, group_id: int) -> None:
        self._db = db
        self._base = PREFIX + group_id.to_bytes(8, "big")
        self._listeners: list[Callable[[MapChange], None]] = []
        self._apply_listeners: list[Callable[[], None]] = []
        raw = db.get(self._base + _KIND_APPLIED)
        self._applied = 0 if raw is None else _APPLIED.unpack(bytes(raw))[1]
        self.state = self._read_state()

    def _lease_key(self, lease_id: int) -> bytes:
        return self._base + _KIND_LEASE + (lease_id & ((1 << 64) - 1)).to_bytes(8, "big")

    def _read_state(self) -> PlacementState:
        map_rec = self._db.get(self._base + _KIND_MAP)
        st = PlacementState.load(None if map_rec is None else bytes(map_rec), [v for _, v in self._lease_items()])
        auth_rec = self._db.get(self._base + _KIND_AUTH)
        if auth_rec is not None:
            st.auth = AuthBook.decode(bytes(auth_rec))
        return st

    def _lease_items(self) -> list[tuple[bytes, bytes]]:
        start = self._base + _KIND_LEASE
        out = []
        it = self._db.iter()
        it.seek(start)
        while it.valid():
            k = bytes(it.key())
            if not k.startswith(start):
                break
            out.append((k, bytes(it.value())))
            it.next()
        return out

    def add_listener(self, fn: Callable[[MapChange], None]) -> None:
        self._listeners.append(fn)

    def add_apply_listener(self, fn: Callable[[], None]) -> None:
        self._apply_listeners.append(fn)

    # -- StateMachine -----------------------------------------------------------
    def applied_index(self) -> int:
        return self._applied

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]:
        results: list[object] = []
        map_changed = False
        auth_changed = False
        touched: set[int] = set()
        for e in entries:
            out: Applied = self.state.apply(decode_command(e.data))
            results.append(out.result)
            if out.change is not None:
                map_changed = True
                for fn in self._listeners:  # now, while the state is at exactly this map version
                    fn(out.change)
            touched.update(out.leases_touched)
            auth_changed |= out.auth_changed
        if map_changed:
            wb.put(self._base + _KIND_MAP, self.state.encode_map())
        if auth_changed:
            wb.put(self._base + _KIND_AUTH, self.state.auth.encode())
        for lid in touched:
            rec = self.state.encode_lease(lid)
            if rec is None:
                wb.delete(self._lease_key(lid))
            else:
                wb.put(self._lease_key(lid), rec)
        for afn in self._apply_listeners:
            afn()
        return results

    def on_applied_index(self, index: int, wb: Any) -> None:
        self._applied = index
        wb.put(self._base + _KIND_APPLIED, _APPLIED.pack(1, index))

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def restore(self, data: bytes, index: int, wb: Any) -> None:
        for k, _ in self._lease_items():
            wb.delete(k)
        self.state = PlacementState.from_snapshot(data)
        wb.put(self._base + _KIND_MAP, self.state.encode_map())
        wb.put(self._base + _KIND_AUTH, self.state.auth.encode())
        for lid in {*self.state.leases, *self.state.ending}:
            rec = self.state.encode_lease(lid)
            assert rec is not None
            wb.put(self._lease_key(lid), rec)
        self.on_applied_index(index, wb)
        log.info("placement restored from snapshot at index=%d map_version=%d", index, self.state.map_version)
        change = MapChange(self.state.map_version, full=True)
        for fn in self._listeners:
            fn(change)
        for afn in self._apply_listeners:
            afn()
