"""A txn across shards as participants apply it (shard/txn2pc.py through
ShardStateMachine): two shards splitting 16 slots, driven step by step as
the router's coordinator (router/txn2pc.py) and resolvers drive them."""

from __future__ import annotations

import pytest

from shard import hlc, slots
from shard.codec import decode_command, decode_outcome, encode_command, encode_outcome
from shard.engine import MemoryEngine
from shard.errors import InvalidCommand, SlotNotOwned, TxnLocked
from shard.statemachine import ShardStateMachine
from shard.types import (
    COMPARE_FALSE,
    COMPARE_FALSE_EMPTY,
    COMPARE_TRUE,
    ClosedTs,
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PrepareMerge,
    PutRequest,
    RangeRequest,
    Split,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnResponse,
    TxnState,
)
from tests.unit.shard.conftest import SLOTS, ShardHarness

T0 = hlc.make(1_750_000_000_000)
A_ID, B_ID = 1, 2


def key_in(ranges: slots.SlotRanges, prefix: str) -> bytes:
    return next(k for i in range(1000) if slots.contains(ranges, slots.slot_of(k := f"{prefix}{i}".encode(), SLOTS)))


@pytest.fixture
def two() -> tuple[ShardHarness, ShardHarness]:
    ea, eb = MemoryEngine(), MemoryEngine()
    a = ShardHarness(ea, ShardStateMachine(ea, A_ID, SLOTS, ((0, 8),)))
    b = ShardHarness(eb, ShardStateMachine(eb, B_ID, SLOTS, ((8, 16),)))
    return a, b


def keys(two: tuple[ShardHarness, ShardHarness]) -> tuple[bytes, bytes]:
    return key_in(two[0].sm.slot_ranges, "a"), key_in(two[1].sm.slot_ranges, "b")


def mod_eq(key: bytes, rev: int) -> Compare:
    return Compare(key, CompareTarget.MOD, CompareResult.EQUAL, rev)


def part(h: ShardHarness, p: TxnPart, stamp: int, closed: int = 0) -> TxnPartResponse:
    out = h.ok(p, stamp=stamp, closed_ts=closed or stamp - 1)
    assert isinstance(out, TxnPartResponse), out
    return out


def test_prepare_decide_commit_applies_both_parts_at_one_revision(two):
    a, b = two
    ka, kb = keys(two)
    ra = a.put(ka, b"1").revision
    rb = b.put(kb, b"1").revision
    txn = TxnRequest(
        (mod_eq(ka, ra), mod_eq(kb, rb)),
        (PutRequest(ka, b"2"), PutRequest(kb, b"2"), RangeRequest(kb)),
    )
    pa = part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    pb = part(b, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0 + 3)
    assert pa.state == pb.state == TxnState.PREPARED
    assert pa.compares == (COMPARE_TRUE, 0) and pb.compares == (0, COMPARE_TRUE)
    assert pa.owned == (0,) and pb.owned == (1, 2)
    # the floor: the shard's revision or its closed timestamp, whichever is higher
    assert pa.revision == max(ra, T0 - 1) and pb.revision == max(rb, T0 + 2)
    floor = max(pa.revision, pb.revision)
    decided = part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=True, path=(True,), revision=floor), T0 + 5)
    assert decided.state == TxnState.COMMITTED and decided.revision > floor
    rev = decided.revision
    assert a.get(ka).value == b"2" and a.get(ka).mod_revision == rev
    assert b.get(kb).value == b"1"  # not yet
    committed = part(b, TxnPart(TxnPhase.COMMIT, b"t1", path=(True,), revision=rev), rev + 7)
    assert committed.state == TxnState.COMMITTED
    assert b.get(kb).value == b"2" and b.get(kb).mod_revision == rev
    # the range after the put saw the txn's own write on that shard
    assert isinstance(committed.txn, TxnResponse)
    assert committed.txn.responses[2].kvs[0].value == b"2"
    assert a.sm.txn_lock is None and b.sm.txn_lock is None
    # a retried COMMIT (the lock is gone) changes nothing
    again = part(b, TxnPart(TxnPhase.COMMIT, b"t1", path=(True,), revision=rev), rev + 9)
    assert again.state == TxnState.COMMITTED and b.get(kb).mod_revision == rev


def test_a_locked_shard_applies_nothing_else_and_keeps_its_closed_timestamp(two):
    a, _ = two
    ka, _ = keys(two)
    a.put(ka, b"0")
    part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, TxnRequest(success=(PutRequest(ka, b"x"),))), T0)
    closed = a.sm.closed_ts
    rev = a.sm.revision
    for req in (PutRequest(ka, b"other"), DeleteRangeRequest(ka), ClosedTs(T0 + 1000), Split(9, ((4, 8),))):
        err = a.error(req, stamp=T0 + 500, closed_ts=T0 + 499)
        assert isinstance(err, TxnLocked) and err.txn_id == b"t1" and err.primary == A_ID and err.locked_at == T0
    other = TxnPart(TxnPhase.PREPARE, b"t2", A_ID, TxnRequest(success=(PutRequest(ka, b"y"),)))
    assert isinstance(a.error(other, stamp=T0 + 600), TxnLocked)
    assert (a.sm.closed_ts, a.sm.revision, a.get(ka).value) == (closed, rev, b"0")
    # a refused command leaves no trace in the dedup table: its retry applies later
    assert isinstance(a.error(PutRequest(ka, b"z"), router_id=5, seq=1, stamp=T0 + 700), TxnLocked)
    part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=False), T0 + 800)
    assert a.sm.closed_ts == T0 + 799  # moving again once the txn is decided here
    assert a.ok(PutRequest(ka, b"z"), router_id=5, seq=1, stamp=T0 + 900, closed_ts=T0 + 899)
    assert a.get(ka).value == b"z"


def test_abort_applies_nothing_and_records_the_outcome_on_the_primary(two):
    a, b = two
    ka, kb = keys(two)
    txn = TxnRequest(success=(PutRequest(ka, b"x"), PutRequest(kb, b"x")))
    part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    part(b, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    assert part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=False), T0 + 1).state == TxnState.ABORTED
    assert part(b, TxnPart(TxnPhase.ABORT, b"t1"), T0 + 1).state == TxnState.ABORTED
    assert a.get(ka) is None and b.get(kb) is None
    assert a.sm.txn_lock is None and b.sm.txn_lock is None
    # the record answers a late DECIDE(commit) with the first outcome
    assert part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=True, path=(True,)), T0 + 2).state == TxnState.ABORTED
    assert a.get(ka) is None


def test_resolve_aborts_an_undecided_txn_and_a_late_prepare_on_the_primary_is_refused(two):
    a, b = two
    ka, kb = keys(two)
    txn = TxnRequest(success=(PutRequest(ka, b"x"), PutRequest(kb, b"x")))
    # the coordinator prepared the secondary, then died before the primary
    part(b, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    resolved = part(a, TxnPart(TxnPhase.RESOLVE, b"t1"), T0 + 5000)
    assert resolved.state == TxnState.ABORTED
    # its PREPARE arriving late at the primary takes no lock
    late = part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0 + 5001)
    assert late.state == TxnState.ABORTED and a.sm.txn_lock is None
    part(b, TxnPart(TxnPhase.ABORT, b"t1"), T0 + 5002)
    assert b.sm.txn_lock is None and b.get(kb) is None


def test_resolve_after_the_decision_answers_it_so_the_secondary_commits(two):
    a, b = two
    ka, kb = keys(two)
    txn = TxnRequest(success=(PutRequest(ka, b"x"), PutRequest(kb, b"y")))
    part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    pb = part(b, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    decided = part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=True, path=(True,), revision=pb.revision), T0 + 10)
    # the coordinator died here; a resolver asks the primary
    rec = part(a, TxnPart(TxnPhase.RESOLVE, b"t1"), T0 + 9000)
    assert (rec.state, rec.revision, rec.path) == (TxnState.COMMITTED, decided.revision, (True,))
    part(b, TxnPart(TxnPhase.COMMIT, b"t1", path=rec.path, revision=rec.revision), T0 + 9001)
    assert b.get(kb).value == b"y" and b.get(kb).mod_revision == decided.revision == a.get(ka).mod_revision
    # records keep a merge away until forgotten
    assert isinstance(a.error(PrepareMerge(B_ID), stamp=T0 + 9002), TxnLocked)
    part(a, TxnPart(TxnPhase.FORGET, b"t1"), T0 + 9003)
    assert a.ok(PrepareMerge(B_ID), stamp=T0 + 9004)


def test_compares_of_keys_absent_and_of_ranges_report_whether_keys_were_seen(two):
    a, _ = two
    ka, kb = keys(two)
    txn = TxnRequest(
        (
            Compare(ka, CompareTarget.VALUE, CompareResult.EQUAL, b"v"),
            Compare(kb, CompareTarget.CREATE, CompareResult.EQUAL, 0),
            Compare(b"a", CompareTarget.VERSION, CompareResult.GREATER, 0, b"b"),
        ),
        (PutRequest(ka, b"v"), PutRequest(kb, b"v")),
    )
    p = part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, txn), T0)
    # a value compare on a missing key fails, as etcd's; kb is not this shard's;
    # the range compare over many slots saw no key here
    assert p.compares[0] == COMPARE_FALSE_EMPTY and p.compares[1] == 0 and p.compares[2] == COMPARE_FALSE_EMPTY


def test_a_prepare_planned_before_a_split_is_refused(two):
    a, _ = two
    ka, _ = keys(two)
    a.ok(Split(9, ((4, 8),)), stamp=T0)
    stale = TxnPart(TxnPhase.PREPARE, b"t1", A_ID, TxnRequest(success=(PutRequest(ka, b"x"),)), slot_version=1)
    assert isinstance(a.error(stale, stamp=T0 + 1), SlotNotOwned)
    assert a.sm.txn_lock is None


def test_the_lock_survives_a_restart(two):
    a, _ = two
    ka, _ = keys(two)
    part(a, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, TxnRequest(success=(PutRequest(ka, b"x"),))), T0)
    again = a.reopen()
    assert again.sm.txn_lock is not None and again.sm.txn_lock.txn_id == b"t1"
    assert isinstance(again.error(PutRequest(ka, b"y"), stamp=T0 + 1), TxnLocked)


def test_a_commit_at_or_below_the_floor_is_refused(two):
    _, b = two
    _, kb = keys(two)
    b.put(kb, b"0")
    p = part(b, TxnPart(TxnPhase.PREPARE, b"t1", A_ID, TxnRequest(success=(PutRequest(kb, b"x"),))), T0)
    assert isinstance(b.error(TxnPart(TxnPhase.COMMIT, b"t1", path=(True,), revision=p.revision), stamp=T0 + 1), InvalidCommand)
    assert b.sm.txn_lock is not None


def test_txn_parts_and_their_answers_round_trip_through_the_codecs():
    txn = TxnRequest((mod_eq(b"k", 3),), (PutRequest(b"k", b"v", lease=7),), (RangeRequest(b"a", b"z"),))
    for p in (
        TxnPart(TxnPhase.PREPARE, b"\x01" * 16, 4, txn, slot_version=3),
        TxnPart(TxnPhase.DECIDE, b"id", commit=True, path=(True, False), revision=99),
        TxnPart(TxnPhase.COMMIT, b"id", path=(False,), revision=100),
        TxnPart(TxnPhase.FORGET, b"id"),
    ):
        cmd = Command(p, router_id=1, seq=2, stamp=3, closed_ts=2)
        assert decode_command(encode_command(cmd)) == cmd
    resp = TxnPartResponse(TxnState.COMMITTED, 5, (1, 0, 4), (0, 2), ((1, 2),), (True,), TxnResponse(5, True, ()))
    assert decode_outcome(encode_outcome(resp)) == resp
    locked = TxnLocked("locked", txn_id=b"x", primary=3, locked_at=7)
    assert isinstance(decode_outcome(encode_outcome(locked)), TxnLocked)
