"""The shard's dedup window per router id (shard/statemachine.py): many
writes of one router id in flight, applied in any order, each at most once;
seq_floor prunes outcomes the router no longer needs; a seq below the floor
is OutcomeUnknown and never applied. Replicated: it survives restarts,
snapshots and splits, and every replica computes the same."""

from __future__ import annotations

from raft.core.types import Entry
from shard import codec, keys
from shard.codec import decode_command, encode_command
from shard.engine import MemoryEngine, scan
from shard.errors import OutcomeUnknown
from shard.statemachine import ShardStateMachine
from shard.types import ClosedTs, Command, PutRequest, PutResponse, Split

SHARD_ID, SLOTS = 7, 16  # as the `shard` fixture's (conftest.py)
R = 42  # a router id


def _put(shard, key: bytes, seq: int, floor: int, value: bytes = b"v"):
    return shard.apply(PutRequest(key, value, prev_kv=True), router_id=R, seq=seq, seq_floor=floor)


def _dedup_records(shard) -> list[tuple[int, int | None]]:
    p = keys.dedup_prefix(shard.sm.shard_id)
    return [keys.parse_dedup_key(k) for k, _ in scan(shard.engine, p, p + b"\xff" * 17)]


def test_out_of_order_seqs_in_the_window_are_each_applied_once(shard):
    # seqs 1..4 in flight at once (floor 1); they reach the log out of order
    outs = {seq: _put(shard, b"k%d" % seq, seq, 1) for seq in (3, 1, 4, 2)}
    assert all(not a.duplicate and isinstance(a.outcome, PutResponse) for a in outs.values())
    assert shard.sm.revision == 4 and shard.keys() == [b"k1", b"k2", b"k3", b"k4"]
    assert shard.sm.dedup_window(R) == (1, (1, 2, 3, 4))
    # a retry of any of them, in any order, gets its first outcome and applies nothing
    for seq in (2, 4, 1, 3):
        again = _put(shard, b"k%d" % seq, seq, 1, b"other")
        assert again.duplicate and again.outcome == outs[seq].outcome and again.events == ()
    assert shard.sm.revision == 4 and shard.get(b"k1").value == b"v"


def test_a_seq_below_the_floor_is_outcome_unknown_and_not_applied(shard):
    _put(shard, b"a", 1, 1)
    _put(shard, b"b", 3, 1)
    _put(shard, b"c", 5, 4)  # the router has the answers of 1..3: floor 4
    assert shard.sm.dedup_window(R) == (4, (5,))
    for seq in (1, 2, 3):  # answered (1, 3) or abandoned (2): never applied
        old = _put(shard, b"late", seq, 1)
        assert old.duplicate and isinstance(old.outcome, OutcomeUnknown)
    assert shard.get(b"late") is None and shard.sm.revision == 3
    # seq 4 was never applied and is in the window: it applies
    assert not _put(shard, b"d", 4, 4).duplicate
    assert shard.sm.dedup_window(R) == (4, (4, 5))


def test_floor_is_the_largest_seen_and_pruning_drops_the_records(shard):
    for seq in range(1, 6):
        _put(shard, b"k", seq, 1)
    assert _dedup_records(shard) == [(R, None)] + [(R, s) for s in range(1, 6)]
    _put(shard, b"k", 6, 4)
    assert shard.sm.dedup_window(R) == (4, (4, 5, 6))
    assert _dedup_records(shard) == [(R, None), (R, 4), (R, 5), (R, 6)]
    # an attempt sent earlier, with a lower floor, does not lower it
    _put(shard, b"k", 7, 2)
    assert shard.sm.dedup_window(R) == (4, (4, 5, 6, 7))
    assert isinstance(_put(shard, b"k", 3, 2).outcome, OutcomeUnknown)
    # a command past every outcome: the window holds just itself
    _put(shard, b"k", 20, 20)
    assert shard.sm.dedup_window(R) == (20, (20,))
    assert _dedup_records(shard) == [(R, None), (R, 20)]
    assert shard.sm.last_seq(R) == 20


def test_a_duplicate_still_raises_the_floor(shard):
    first = _put(shard, b"k", 2, 1)
    _put(shard, b"k", 1, 1)
    again = _put(shard, b"k", 2, 2)  # retry of 2, now that 1 is answered
    assert again.duplicate and again.outcome == first.outcome
    assert shard.sm.dedup_window(R) == (2, (2,))


def test_windows_are_per_router(shard):
    _put(shard, b"a", 9, 9)
    other = shard.apply(PutRequest(b"b"), router_id=R + 1, seq=1, seq_floor=1)
    assert not other.duplicate
    assert shard.sm.dedup_window(R) == (9, (9,)) and shard.sm.dedup_window(R + 1) == (1, (1,))
    assert shard.sm.dedup_window(7) == (0, ())


def test_without_seq_floor_the_window_is_the_latest_seq(shard):
    # commands of format 1 (no seq_floor): one write in flight per router id
    first = shard.apply(PutRequest(b"k", b"1"), router_id=R, seq=1)
    shard.apply(PutRequest(b"k", b"2"), router_id=R, seq=2)
    assert shard.sm.dedup_window(R) == (2, (2,))
    assert isinstance(shard.apply(PutRequest(b"k"), router_id=R, seq=1).outcome, OutcomeUnknown)
    assert first.outcome == PutResponse(1)


def test_restart_keeps_the_window(shard):
    outs = {seq: _put(shard, b"k%d" % seq, seq, 2) for seq in (2, 5, 3)}
    r = shard.reopen()
    assert r.sm.dedup_window(R) == (2, (2, 3, 5))
    assert r.apply(PutRequest(b"k5", b"x", prev_kv=True), router_id=R, seq=5, seq_floor=2).outcome == outs[5].outcome
    assert isinstance(r.apply(PutRequest(b"x"), router_id=R, seq=1, seq_floor=2).outcome, OutcomeUnknown)
    assert not r.apply(PutRequest(b"k4"), router_id=R, seq=4, seq_floor=2).duplicate


def test_snapshot_restore_keeps_the_window(shard):
    outs = {seq: _put(shard, b"k%d" % seq, seq, 3) for seq in (3, 6, 4)}
    data = shard.sm.snapshot()
    engine = MemoryEngine()
    target = ShardStateMachine(engine, SHARD_ID, SLOTS, ())
    wb = engine.new_batch()
    target.restore(data, shard.sm.applied_index(), wb)
    engine.write(wb)
    chunked_engine = MemoryEngine()
    chunked = ShardStateMachine(chunked_engine, SHARD_ID, SLOTS, ())
    wb = chunked_engine.new_batch()
    chunked.restore_chunks(shard.sm.snapshot_chunks(chunk_bytes=64), shard.sm.applied_index(), wb)
    chunked_engine.write(wb)
    for e, sm in ((engine, target), (engine, ShardStateMachine(engine, SHARD_ID)), (chunked_engine, chunked)):
        assert sm.dedup_window(R) == (3, (3, 4, 6))
        h = type(shard)(e, sm)
        assert h.apply(PutRequest(b"k4", b"x", prev_kv=True), router_id=R, seq=4, seq_floor=3).outcome == outs[4].outcome
        assert isinstance(h.apply(PutRequest(b"x"), router_id=R, seq=2, seq_floor=3).outcome, OutcomeUnknown)


def test_split_copies_the_window(shard):
    _put(shard, b"a", 4, 2)
    _put(shard, b"b", 2, 2)
    shard.ok(Split(99, ((8, 16),)))
    new = ShardStateMachine(shard.engine, 99)
    assert new.dedup_window(R) == shard.sm.dedup_window(R) == (2, (2, 4))


def _entries() -> list[Entry]:
    cmds = []
    for i in range(60):
        seq = [3, 1, 2][i % 3] + 3 * (i // 3) + 1  # out of order within groups of 3
        floor = max(1, seq - 5 - i % 4)
        cmds.append(Command(PutRequest(b"k%d" % (i % 7), b"v%d" % i), router_id=R + i % 2, seq=seq, seq_floor=floor))
        if i % 5 == 0:  # retries, some below the floor by now
            cmds.append(Command(PutRequest(b"k", b"retry"), router_id=R, seq=max(1, seq - 6), seq_floor=max(1, seq - 8)))
    cmds.append(Command(ClosedTs(5), stamp=5, closed_ts=5))
    return [Entry(1, i + 1, data=encode_command(c)) for i, c in enumerate(cmds)]


def _run(entries: list[Entry], batch: int) -> tuple[MemoryEngine, ShardStateMachine, list]:
    engine = MemoryEngine()
    sm = ShardStateMachine(engine, SHARD_ID, SLOTS)
    out = []
    for i in range(0, len(entries), batch):
        wb = engine.new_batch()
        out += sm.apply(entries[i : i + batch], wb)
        engine.write(wb)
        if i % (3 * batch) == 0:  # a restart now and then
            sm = ShardStateMachine(engine, SHARD_ID)
    return engine, sm, out


def test_replicas_compute_the_same_state():
    entries = _entries()
    runs = [_run(entries, batch) for batch in (1, 4, 1000)]
    (e0, sm0, out0), rest = runs[0], runs[1:]
    for e, sm, out in rest:
        assert [(a.outcome, a.duplicate, a.revision) for a in out] == [(a.outcome, a.duplicate, a.revision) for a in out0]
        assert sm.snapshot() == sm0.snapshot()
        assert sm.dedup_window(R) == sm0.dedup_window(R) and sm.dedup_window(R + 1) == sm0.dedup_window(R + 1)
    assert any(isinstance(a.outcome, OutcomeUnknown) for a in out0)


def test_a_version_1_dedup_record_still_reads(shard):
    # A shard written before windows: the router record held (latest seq, outcome).
    engine = shard.engine
    outcome = codec.encode_outcome(PutResponse(3))
    wb = engine.new_batch()
    wb.put(keys.dedup_key(SHARD_ID, R), keys.encode_dedup(7, outcome))
    engine.write(wb)
    shard = shard.reopen()
    assert shard.sm.dedup_window(R) == (7, (7,))
    assert shard.apply(PutRequest(b"k"), router_id=R, seq=7).outcome == PutResponse(3)
    assert isinstance(shard.apply(PutRequest(b"k"), router_id=R, seq=6).outcome, OutcomeUnknown)
    assert not _put(shard, b"k", 9, 7).duplicate  # in the window, new
    assert shard.reopen().sm.dedup_window(R) == (7, (7, 9))
    _put(shard, b"k", 10, 9)  # the floor moves: the record is rewritten in version 2
    raw = engine.get(keys.dedup_key(SHARD_ID, R))
    assert raw is not None and keys.decode_dedup_router(raw) == (9, None)
    assert shard.reopen().sm.dedup_window(R) == (9, (9, 10))


def test_command_encoding_carries_seq_floor():
    cmd = Command(PutRequest(b"k", b"v"), router_id=1, seq=9, stamp=3, closed_ts=2, seq_floor=5)
    raw = encode_command(cmd)
    assert raw[0] == codec.COMMAND_VERSION and decode_command(raw) == cmd
    old = Command(PutRequest(b"k", b"v"), router_id=1, seq=9, stamp=3, closed_ts=2)
    assert encode_command(old)[0] == 1 and decode_command(encode_command(old)).seq_floor == 0
    for bad in (raw[:41], raw[:-1], raw + b"\x00", raw[:18] + b"\x00" * 8 + raw[26:]):
        try:
            decode_command(bad)
        except codec.CodecError:
            continue
        raise AssertionError(f"decoded {bad!r}")
