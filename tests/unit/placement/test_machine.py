"""PlacementMachine on a real RocksDB: records survive a reopen, snapshots
restore elsewhere, listeners see each map change at its version."""

from __future__ import annotations

from pathlib import Path

import rocksdict

from placement.machine import PlacementMachine
from placement.codec import encode_command
from placement.commands import AttachKeys, Bootstrap, GrantLease, KeyChange, MapChange, RegisterNode, RevokeLease
from placement.model import NodeKind
from raft.core.types import Entry
from raft.storage.rocks import open_db

COMMANDS = [
    RegisterNode(1, NodeKind.STORE, "a:1", (("zone", "x"),)),
    RegisterNode(2, NodeKind.STORE, "a:2", (("zone", "y"),)),
    Bootstrap(0xFEED, 64, 2),
    GrantLease(5, 10),
    GrantLease(-6, 20),
    AttachKeys((KeyChange(5, b"k1"), KeyChange(-6, b"k2"))),
    RevokeLease(-6),
]


def apply_all(m: PlacementMachine, db: rocksdict.Rdict, start_index: int = 1) -> list[object]:
    wb = rocksdict.WriteBatch(raw_mode=True)
    entries = [Entry(term=1, index=start_index + i, data=encode_command(c)) for i, c in enumerate(COMMANDS)]
    out = m.apply(entries, wb)
    m.on_applied_index(entries[-1].index, wb)
    db.write(wb)
    return out


def test_state_survives_reopen(tmp_path: Path) -> None:
    db = open_db(tmp_path / "db")
    m = PlacementMachine(db, 0)
    seen: list[MapChange] = []
    m.add_listener(seen.append)
    apply_all(m, db)
    assert [c.map_version for c in seen] == [1, 2, 3] and seen[-1].full
    snap = m.snapshot()
    db.close()

    db2 = open_db(tmp_path / "db")
    again = PlacementMachine(db2, 0)
    assert again.applied_index() == len(COMMANDS)
    assert again.snapshot() == snap
    assert again.state.ending == {-6: frozenset({b"k2"})} and again.state.leases_of(b"k1") == {5}
    db2.close()


def test_snapshot_restores_into_another_machine(tmp_path: Path) -> None:
    db = open_db(tmp_path / "a")
    m = PlacementMachine(db, 0)
    apply_all(m, db)
    other_db = open_db(tmp_path / "b")
    other = PlacementMachine(other_db, 0)
    other_db.put(b"\x08" + (0).to_bytes(8, "big") + b"\x02" + (99).to_bytes(8, "big"), b"\x01{}")  # a stale lease record
    seen: list[MapChange] = []
    other.add_listener(seen.append)
    wb = rocksdict.WriteBatch(raw_mode=True)
    other.restore(m.snapshot(), 7, wb)
    other_db.write(wb)
    assert seen and seen[-1].full and seen[-1].map_version == m.state.map_version
    assert other.snapshot() == m.snapshot() and other.applied_index() == 7
    other_db.close()
    reopened_db = open_db(tmp_path / "b")
    reopened = PlacementMachine(reopened_db, 0)
    assert reopened.snapshot() == m.snapshot()
    reopened_db.close()
    db.close()
