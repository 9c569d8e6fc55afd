"""Regression (issue #7, multi-Raft bugs): a snapshot that overlaps a split.

Shard P (slots 0..16) splits at slot 8 into C, on the same replicas. A
replica X of P was down and missed the split. It then gets, in some order,
a snapshot of P (from before or after the split) and a snapshot of C (its
replica of C created from the map). Whatever the order, X must not keep or
resurrect data in slots P no longer owns, must not wipe or roll back the
data C holds there, and P must not serve C's keys once it knows of the
split. Pure: state machines over MemoryEngines, driven as the runtime
drives them (apply batches, then restores).

Not here: a snapshot of P from BEFORE the split installed after X's C caught
up would wipe C's newer data in slots 8..16 (as would P's pre-split log
entries, replayed over it). The state machine cannot tell; the node never
gets there: it does not host C while its P still holds C's slots
(StoreNode.host_shard; tests/unit/runtime/test_split_overlap.py).
"""

from __future__ import annotations

from typing import Any

from raft.core.types import Entry
from shard import keys, slots
from shard.codec import encode_command
from shard.engine import MemoryEngine, scan
from shard.statemachine import ShardStateMachine
from shard.types import Command, PutRequest, RangeRequest, Split

SLOTS = 16
P, C = 1, 2
CONF = ((1, 2, 3), ())


def key_in(lo: int, hi: int, i: int = 0) -> bytes:
    found = [k for k in (b"k%d" % j for j in range(500)) if lo <= slots.slot_of(k, SLOTS) < hi]
    return found[i]


LOW, HIGH = key_in(0, 8), key_in(8, 16)


class Replica:
    """One state machine over an engine, applying entries as the runtime does."""

    def __init__(self, engine: MemoryEngine, shard_id: int, ranges: slots.SlotRanges | None, others: dict[int, "Replica"]) -> None:
        self.engine = engine
        self.others = others
        self.sm = ShardStateMachine(
            engine,
            shard_id,
            SLOTS,
            ranges,
            group_conf=lambda: CONF,
            other_slots=lambda: slots.normalize(
                r for sid, rep in others.items() if sid != shard_id for r in rep.sm.slot_ranges
            ),
        )
        others[shard_id] = self
        self.index = self.sm.applied_index()

    def apply(self, request: Any) -> None:
        self.index += 1
        wb = self.engine.new_batch()
        self.sm.apply([Entry(term=1, index=self.index, data=encode_command(Command(request)))], wb)
        self.sm.on_applied_index(self.index, wb)
        self.engine.write(wb)
        self.sm.release_staged()  # read the engine from now on, as after any later batch

    def install(self, snapshot: tuple[int, bytes]) -> None:
        index, data = snapshot
        wb = self.engine.new_batch()
        self.sm.restore(data, index, wb)
        self.engine.write(wb)
        self.sm.release_staged()
        self.index = index

    def take(self) -> tuple[int, bytes]:
        return self.sm.applied_index(), self.sm.snapshot()

    def get(self, key: bytes) -> bytes | None:
        kvs = self.sm.range(RangeRequest(key)).kvs
        return kvs[0].value if kvs else None


def keys_in(engine: MemoryEngine, lo: int, hi: int) -> list[bytes]:
    out = []
    for start, end in ((keys.data_prefix(lo), keys.data_prefix(hi)), (keys.rev_prefix(lo), keys.rev_prefix(hi))):
        out.extend(k for k, _ in scan(engine, start, end))
    return out


def history() -> dict[str, Any]:
    """The leader side: P written, snapshotted before the split, split, then
    both shards written. Returns the snapshots and the final values."""
    leader: dict[int, Replica] = {}
    p = Replica(MemoryEngine(), P, ((0, SLOTS),), leader)
    p.apply(PutRequest(LOW, b"low-1"))
    p.apply(PutRequest(HIGH, b"high-1"))
    before = p.take()
    p.apply(PutRequest(HIGH, b"high-2"))
    p.apply(Split(C, ((8, SLOTS),)))
    c = Replica(p.engine, C, None, leader)  # the split's new shard on the leader's node
    assert c.sm.slot_ranges == ((8, SLOTS),)
    p.apply(PutRequest(LOW, b"low-3"))
    c.apply(PutRequest(HIGH, b"high-3"))
    return {"p_before": before, "p_after": p.take(), "c": c.take()}


def stale_replica() -> tuple[dict[int, Replica], Replica]:
    """X: applied P's first write only, then went down (missed the split)."""
    x: dict[int, Replica] = {}
    p = Replica(MemoryEngine(), P, ((0, SLOTS),), x)
    p.apply(PutRequest(LOW, b"low-1"))
    p.apply(PutRequest(HIGH, b"high-0-stale"))
    return x, p


def test_parent_snapshot_after_the_split_drops_the_moved_slots() -> None:
    h = history()
    x, p = stale_replica()
    assert keys_in(p.engine, 8, SLOTS)
    p.install(h["p_after"])
    assert p.sm.slot_ranges == ((0, 8),)
    assert keys_in(p.engine, 8, SLOTS) == [], "stale data of the moved slots kept"
    assert not p.sm.owns(HIGH)  # the node answers WrongShard for C's keys
    assert p.get(LOW) == b"low-3"


def test_child_snapshot_then_parent_snapshot_keeps_the_childs_data() -> None:
    h = history()
    x, p = stale_replica()
    c = Replica(p.engine, C, ((8, SLOTS),), x)  # created from the map, empty
    c.install(h["c"])
    assert c.get(HIGH) == b"high-3"
    p.install(h["p_after"])
    assert c.get(HIGH) == b"high-3", "the parent's snapshot wiped the child's data"
    assert not p.sm.owns(HIGH) and p.get(LOW) == b"low-3"
