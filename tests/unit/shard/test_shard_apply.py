"""The apply step as the runtime drives it: the HLC revision rule and closed
timestamps, dedup of retried commands, events and the watch history, many
entries in one batch (reads of staged writes), restart, snapshot/restore,
slot ownership and the split placeholder."""

from __future__ import annotations

import pytest

from raft.core.types import Entry
from shard import hlc, slots
from shard.codec import encode_command
from shard.engine import MemoryEngine
from shard.errors import InvalidCommand, InvalidSplit, OutcomeUnknown, RevisionCompacted, SlotNotOwned
from shard.statemachine import Applied, ShardStateMachine
from shard.types import (
    AckResponse,
    ClosedTs,
    Command,
    CompactionRequest,
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    Split,
    TxnRequest,
)

# --- revisions ---------------------------------------------------------------------------


def test_revision_rule_stamp_and_closed_ts(shard):
    """max(prev + 1, stamp, closed_ts + 1), raised into the stamp's lane
    (shard/hlc.py: revisions of different shards never collide)."""
    t0 = hlc.make(1_700_000_000_000)  # lane 0
    assert shard.apply(PutRequest(b"a"), stamp=t0).revision == t0
    # a stamp behind the revision: prev + 1, raised into the stamp's lane (t0 - 5 is in lane 11)
    assert hlc.lane_of(t0 - 5) == 11
    assert shard.apply(PutRequest(b"a"), stamp=t0 - 5).revision == t0 + 11
    # a stamp ahead: the stamp
    assert shard.apply(PutRequest(b"a"), stamp=t0 + 100).revision == t0 + 100
    # a closed timestamp ahead of both: closed_ts + 1, in the stamp's lane (t0 + 101: lane 5)
    assert shard.apply(PutRequest(b"a"), stamp=t0 + 101, closed_ts=t0 + 500).revision == hlc.into_lane(t0 + 501, 5) == t0 + 501
    assert shard.sm.closed_ts == t0 + 500
    # a closed timestamp never moves back (no stamp: no lane)
    assert shard.apply(PutRequest(b"a"), closed_ts=t0 + 10).revision == t0 + 502
    assert shard.sm.closed_ts == t0 + 500
    kv = shard.get(b"a")
    assert (kv.create_revision, kv.mod_revision, kv.version) == (t0, t0 + 502, 5)


def test_closed_ts_entry_raises_closed_ts_only(shard):
    shard.put(b"a")
    a = shard.apply(ClosedTs(1000))
    assert a.outcome == AckResponse(1) and a.revision == 1 and a.events == ()
    assert (shard.sm.revision, shard.sm.closed_ts, shard.sm.readable_revision) == (1, 1000, 1000)
    # reads up to the closed timestamp are answered, from the state at revision 1
    assert shard.get(b"a", revision=1000).mod_revision == 1
    assert shard.apply(PutRequest(b"b")).revision == 1001


def test_non_writes_keep_the_revision(shard):
    shard.put(b"a")
    for req in (DeleteRangeRequest(b"zz"), TxnRequest(), TxnRequest((), (RangeRequest(b"a"),)), PutRequest(b"x", ignore_value=True)):
        assert shard.apply(req, stamp=hlc.make(hlc.EPOCH_MS + 10**12)).revision == 1
    assert shard.sm.revision == 1


def test_hybrid_clock():
    c = hlc.HybridClock()
    t = hlc.EPOCH_MS + 10**12  # a wall clock in 2051
    a = c.now(t + 1000)
    assert a == hlc.make(t + 1000)
    assert c.now(t + 1000) == hlc.make(t + 1000, 1)
    assert c.now(t + 999) == hlc.make(t + 1000, 2)  # the wall clock stepped back
    assert c.now(t + 2000) == hlc.make(t + 2000)
    c.update(hlc.make(t + 5000, 7))
    assert c.now(t + 2001) == hlc.make(t + 5000, 8)
    assert c.update(1) == hlc.make(t + 5000, 8)
    assert (hlc.wall_ms_of(c.last), hlc.logical_of(c.last)) == (t + 5000, 8)
    assert hlc.next_revision(10, 5, 3) == 21  # prev + 1 = 11, raised into lane 5
    assert hlc.next_revision(10, 50, 3) == 50
    assert hlc.next_revision(10, 50, 70) == 82  # closed + 1 = 71, raised into lane 2
    assert hlc.next_revision(10, 0, 3) == 11  # no stamp: no lane
    with pytest.raises(ValueError):
        hlc.make(t, 1 << hlc.LOGICAL_BITS)


# --- dedup ---------------------------------------------------------------------------------


def test_retried_command_returns_first_outcome_without_reapplying(shard):
    first = shard.apply(PutRequest(b"k", b"v1", prev_kv=True), router_id=9, seq=1)
    assert first.outcome == PutResponse(1)
    shard.put(b"k", b"v2")  # another client
    again = shard.apply(PutRequest(b"k", b"v1", prev_kv=True), router_id=9, seq=1)
    assert again.duplicate and again.outcome == first.outcome and again.events == ()
    assert shard.get(b"k").value == b"v2" and shard.sm.revision == 2
    # an older seq: the outcome is no longer known, and nothing is applied
    shard.apply(PutRequest(b"k", b"v3"), router_id=9, seq=2)
    old = shard.apply(PutRequest(b"k", b"v1"), router_id=9, seq=1)
    assert old.duplicate and isinstance(old.outcome, OutcomeUnknown)
    assert shard.get(b"k").value == b"v3"
    assert shard.sm.last_seq(9) == 2 and shard.sm.last_seq(10) == 0


def test_dedup_is_per_router_and_remembers_errors(shard):
    err = shard.apply(PutRequest(b"k", ignore_value=True), router_id=1, seq=5)
    assert isinstance(err.outcome, Exception)
    shard.put(b"k", b"v")
    again = shard.apply(PutRequest(b"k", ignore_value=True), router_id=1, seq=5)
    assert again.duplicate and again.outcome == err.outcome
    assert shard.apply(PutRequest(b"k", b"w"), router_id=2, seq=5).outcome == PutResponse(2)


def test_dedup_of_txn_with_ranges_and_survives_restart(shard):
    shard.put(b"a", b"1")
    req = TxnRequest((), (RangeRequest(b"a"), PutRequest(b"b")))
    first = shard.apply(req, router_id=3, seq=1)
    restarted = shard.reopen()
    again = restarted.apply(req, router_id=3, seq=1)
    assert again.duplicate and again.outcome == first.outcome
    assert restarted.sm.revision == 2


def test_router_zero_is_never_deduplicated(shard):
    shard.apply(PutRequest(b"k"), seq=1)
    assert not shard.apply(PutRequest(b"k"), seq=1).duplicate
    assert shard.get(b"k").version == 2


# --- events and history ------------------------------------------------------------------


def test_events(shard):
    a = shard.apply(PutRequest(b"k", b"1", lease=4))
    assert a.events == (Event(EventType.PUT, KeyValue(b"k", 1, 1, 1, b"1", 4)),)
    a = shard.apply(PutRequest(b"k", b"2"))
    assert a.events == (Event(EventType.PUT, KeyValue(b"k", 1, 2, 2, b"2"), KeyValue(b"k", 1, 1, 1, b"1", 4)),)
    a = shard.apply(DeleteRangeRequest(b"k"))
    assert a.events == (Event(EventType.DELETE, KeyValue(b"k", mod_revision=3), KeyValue(b"k", 1, 2, 2, b"2")),)


def test_events_since(shard):
    shard.put(b"a", b"1")  # 1
    shard.put(b"b", b"1")  # 2
    shard.txn([], [PutRequest(b"a", b"2"), PutRequest(b"c", b"1"), DeleteRangeRequest(b"b")])  # 3
    shard.put(b"x", b"1")  # 4
    events = shard.sm.events_since(b"a", b"d", 1)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (EventType.PUT, b"a", 1),
        (EventType.PUT, b"b", 2),
        (EventType.PUT, b"a", 3),
        (EventType.PUT, b"c", 3),
        (EventType.DELETE, b"b", 3),
    ]
    with_prev = shard.sm.events_since(b"a", b"d", 3, prev_kv=True)
    assert [e.prev_kv.value if e.prev_kv else None for e in with_prev] == [b"1", None, b"1"]
    assert with_prev[0].kv == KeyValue(b"a", 1, 3, 2, b"2")
    assert shard.sm.events_since(b"x", b"", 0) == (Event(EventType.PUT, KeyValue(b"x", 4, 4, 1, b"1")),)
    assert len(shard.sm.events_since(b"\x00", b"\x00", 0)) == 6
    # a limit never splits a revision: 2 events asked, the whole of revision 3 comes
    assert [e.kv.mod_revision for e in shard.sm.events_since(b"a", b"d", 2, limit=2)] == [2, 3, 3, 3]


def test_events_since_matches_applied_events(shard):
    live: list[Event] = []
    for i in range(30):
        key = b"k%d" % (i % 7)
        req = DeleteRangeRequest(key) if i % 5 == 4 else PutRequest(key, b"%d" % i)
        live.extend(shard.apply(req).events)
    assert shard.sm.events_since(b"k", b"l", 0, prev_kv=True) == tuple(live)


def test_events_since_compacted(shard):
    for i in range(4):
        shard.put(b"a", b"%d" % i)
    shard.ok(CompactionRequest(3))
    with pytest.raises(RevisionCompacted):
        shard.sm.events_since(b"a", b"", 2)
    assert [e.kv.mod_revision for e in shard.sm.events_since(b"a", b"", 3, prev_kv=True)] == [3, 4]
    assert shard.sm.events_since(b"a", b"", 4, prev_kv=True)[0].prev_kv.value == b"2"


# --- batches, restart --------------------------------------------------------------------


def test_many_entries_in_one_batch_read_staged_writes(shard):
    es = [
        shard.entry(PutRequest(b"a", b"1")),
        shard.entry(PutRequest(b"a", b"2", prev_kv=True)),
        shard.entry(TxnRequest((), (DeleteRangeRequest(b"a", b"\x00"), PutRequest(b"b")))),
        shard.entry(PutRequest(b"a", b"3")),
        shard.entry(TxnRequest((), (RangeRequest(b"a", b"\x00"),))),
    ]
    out = shard.apply_entries(es)
    assert out[1].outcome.prev_kv == KeyValue(b"a", 1, 1, 1, b"1")
    assert out[2].outcome.responses[0].deleted == 1
    assert shard.get(b"a") == KeyValue(b"a", 4, 4, 1, b"3")
    assert [kv.key for kv in out[4].outcome.responses[0].kvs] == [b"a", b"b"]
    assert shard.sm.applied_index() == 5


def test_reads_between_apply_and_batch_write_see_the_applied_state(engine):
    sm = ShardStateMachine(engine, 1, 16)
    wb = engine.new_batch()
    sm.apply([Entry(1, 1, data=encode_command(Command(PutRequest(b"a", b"1"))))], wb)
    # the runtime has not written wb yet
    assert sm.range(RangeRequest(b"a")).kvs[0].value == b"1"
    frozen = sm.reader(frozen=True)
    sm.apply([Entry(1, 2, data=encode_command(Command(PutRequest(b"b", b"1"))))], wb)
    assert frozen.range(RangeRequest(b"a", b"\x00")).count == 1
    assert frozen.range(RangeRequest(b"a", b"\x00")).revision == 1
    assert sm.range(RangeRequest(b"a", b"\x00")).count == 2
    engine.write(wb)
    assert sm.range(RangeRequest(b"a", b"\x00")).count == 2


def test_restart_restores_state(shard):
    shard.apply(PutRequest(b"a"), stamp=50, closed_ts=80)  # 81 raised into lane 2: 82
    shard.ok(CompactionRequest(82))
    shard.apply(PutRequest(b"b"), router_id=4, seq=9)
    r = shard.reopen()
    assert (r.sm.applied_index(), r.sm.revision, r.sm.compact_revision, r.sm.closed_ts) == (3, 83, 82, 80)
    assert r.sm.last_seq(4) == 9
    assert r.keys() == [b"a", b"b"]
    assert r.sm.slot_ranges == ((0, 16),) and r.sm.slot_count == 16


def test_on_applied_index_for_entries_without_commands(shard):
    shard.put(b"a")
    wb = shard.engine.new_batch()
    shard.sm.on_applied_index(10, wb)
    shard.engine.write(wb)
    assert shard.reopen().sm.applied_index() == 10


def test_invalid_entry_is_answered_not_applied(shard):
    shard.index += 1
    out = shard.apply_entries([Entry(1, shard.index, data=b"\x07garbage")])
    assert isinstance(out[0].outcome, InvalidCommand) and shard.sm.revision == 0
    assert shard.sm.applied_index() == 1


# --- snapshots ----------------------------------------------------------------------------


def _fill(shard) -> None:
    for i in range(40):
        shard.put(b"key%02d" % i, b"v%d" % i)
    shard.delete(b"key1", b"key2")
    shard.apply(PutRequest(b"key05", b"x"), router_id=2, seq=7, closed_ts=100)
    shard.ok(CompactionRequest(20))


def test_snapshot_restore_roundtrip(shard):
    _fill(shard)
    data = shard.sm.snapshot()
    assert b"".join(shard.sm.snapshot_chunks(chunk_bytes=200)) == data
    target_engine = MemoryEngine()
    target = ShardStateMachine(target_engine, shard.sm.shard_id, 16, ())
    wb = target_engine.new_batch()
    target.restore(data, shard.sm.applied_index(), wb)
    target_engine.write(wb)
    for sm in (target, ShardStateMachine(target_engine, shard.sm.shard_id)):
        assert sm.applied_index() == shard.sm.applied_index()
        assert (sm.revision, sm.compact_revision, sm.closed_ts) == (shard.sm.revision, 20, 100)
        assert sm.slot_ranges == shard.sm.slot_ranges and sm.last_seq(2) == 7
        assert sm.range(RangeRequest(b"\x00", b"\x00")) == shard.range(b"\x00", b"\x00")
        assert sm.range(RangeRequest(b"\x00", b"\x00", revision=25)) == shard.range(b"\x00", b"\x00", revision=25)
        assert sm.events_since(b"\x00", b"\x00", 20) == shard.sm.events_since(b"\x00", b"\x00", 20)
        assert sm.snapshot() == data


def test_restore_replaces_existing_state(shard):
    _fill(shard)
    data = shard.sm.snapshot()
    index = shard.sm.applied_index()
    shard.put(b"later")
    shard.put(b"zzz")
    wb = shard.engine.new_batch()
    shard.sm.restore(data, index, wb)
    shard.engine.write(wb)
    assert shard.get(b"later") is None and shard.get(b"zzz") is None
    assert shard.sm.snapshot() == data
    with pytest.raises(ValueError):
        shard.sm.restore(data, index + 1, shard.engine.new_batch())


def test_restore_then_apply_in_the_same_batch(shard):
    _fill(shard)
    data = shard.sm.snapshot()
    index = shard.sm.applied_index()
    engine = MemoryEngine()
    sm = ShardStateMachine(engine, shard.sm.shard_id, 16)
    wb = engine.new_batch()
    sm.restore(data, index, wb)
    out = sm.apply([Entry(1, index + 1, data=encode_command(Command(PutRequest(b"key30", b"new", prev_kv=True))))], wb)
    assert out[0].outcome.prev_kv.value == b"v30"
    engine.write(wb)
    assert sm.range(RangeRequest(b"key30")).kvs[0].version == 2


# --- slots -------------------------------------------------------------------------------


def _key_in(slot_set, owned: bool) -> bytes:
    for i in range(10_000):
        k = b"key-%d" % i
        if slots.contains(slot_set, slots.slot_of(k, 16)) == owned:
            return k
    raise AssertionError("no key found")


def test_keys_outside_owned_slots_are_refused(engine):
    owned = ((0, 8),)
    sm = ShardStateMachine(engine, 3, 16, owned)
    inside, outside = _key_in(owned, True), _key_in(owned, False)
    wb = engine.new_batch()
    cmds = [PutRequest(inside), PutRequest(outside), TxnRequest((), (PutRequest(inside), PutRequest(outside)))]
    out = sm.apply([Entry(1, i + 1, data=encode_command(Command(c))) for i, c in enumerate(cmds)], wb)
    engine.write(wb)
    assert out[0].ok and isinstance(out[1].outcome, SlotNotOwned) and isinstance(out[2].outcome, SlotNotOwned)
    assert sm.revision == 1 and sm.owns(inside) and not sm.owns(outside)
    with pytest.raises(SlotNotOwned):
        sm.range(RangeRequest(outside))
    # a range over many slots is answered for the owned part
    assert [kv.key for kv in sm.range(RangeRequest(b"\x00", b"\x00")).kvs] == [inside]


def test_split_placeholder(shard):
    for i in range(20):
        shard.put(b"k%d" % i)
    before = {kv.key for kv in shard.range(b"\x00", b"\x00").kvs}
    assert isinstance(shard.error(Split(8, ((0, 16),))), InvalidSplit)
    assert isinstance(shard.error(Split(8, ((10, 20),))), InvalidSplit)
    assert isinstance(shard.error(Split(8, ())), InvalidSplit)
    assert shard.ok(Split(8, ((8, 16),))) == AckResponse(20)
    assert shard.sm.slot_ranges == ((0, 8),)
    kept = {k for k in before if slots.slot_of(k, 16) < 8}
    assert {kv.key for kv in shard.range(b"\x00", b"\x00").kvs} == kept
    assert shard.reopen().sm.slot_ranges == ((0, 8),)
    assert isinstance(shard.error(Split(shard.sm.shard_id, ((0, 4),))), InvalidSplit)


def test_split_shard_continues_the_history(shard):
    for i in range(20):
        shard.put(b"k%d" % i, b"v")
    shard.apply(PutRequest(b"k0", b"w"), router_id=4, seq=3, closed_ts=50)
    shard.ok(Split(8, ((8, 16),)))
    new = ShardStateMachine(shard.engine, 8)
    assert new.slot_ranges == ((8, 16),) and new.slot_count == 16
    assert (new.applied_index(), new.revision, new.closed_ts, new.last_seq(4)) == (0, 51, 50, 3)
    moved = {k for k in (b"k%d" % i for i in range(20)) if slots.slot_of(k, 16) >= 8}
    assert {kv.key for kv in new.range(RangeRequest(b"\x00", b"\x00")).kvs} == moved
    key = sorted(moved)[0]
    wb = shard.engine.new_batch()
    out = new.apply([Entry(1, 1, data=encode_command(Command(PutRequest(key, b"after"))))], wb)
    shard.engine.write(wb)
    assert out[0].revision == 52 and new.range(RangeRequest(key)).kvs[0].version == 2
    # the two shards share one engine without touching each other's keys
    assert shard.sm.range(RangeRequest(b"\x00", b"\x00")).count == 20 - len(moved)
    assert shard.sm.snapshot() != new.snapshot()


def test_applied_results_are_applied_objects(mem_shard):
    out = mem_shard.apply_entries([mem_shard.entry(PutRequest(b"a"))])
    assert isinstance(out[0], Applied) and out[0].index == 1 and out[0].ok
