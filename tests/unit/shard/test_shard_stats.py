"""The live key count and approximate live size a shard keeps in its
replicated meta (ShardStateMachine.key_count, size_bytes): followed through
puts, overwrites, deletes, txns and lease-key deletes, kept across restarts
and snapshots, divided by splits, and always equal to a brute-force count
over the engine. Every test runs on MemoryEngine and RocksEngine."""

from __future__ import annotations

from typing import Any

from shard import keys, slots
from shard.engine import MemoryEngine
from shard.reader import live_totals
from shard.statemachine import ShardStateMachine
from shard.types import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    PutRequest,
    Split,
    TxnRequest,
)

SLOTS = 16  # as the shard fixture (conftest.py)
ShardHarness = Any  # conftest.ShardHarness: new ones are made with type(shard)(engine, sm)


def brute_force(sm: ShardStateMachine, view: object) -> tuple[int, int]:
    """(live keys, sum of len(key) + len(value)) by reading every live key."""
    n = size = 0
    for lo, hi in sm.slot_ranges:
        for slot in range(lo, hi):
            c = view.cursor(keys.data_prefix(slot), keys.data_slot_end(slot))  # type: ignore[attr-defined]
            c.seek(keys.data_prefix(slot))
            last = None
            while c.valid():
                k = c.key()
                ukey = keys.user_key_of(k)
                if ukey != last:  # the newest version of each key comes first
                    last = ukey
                    rec = keys.decode_mvcc(c.value())
                    if not rec.tombstone:
                        n += 1
                        size += len(ukey) + len(rec.value)
                c.next()
    return n, size


def figures(sm: ShardStateMachine) -> tuple[int, int]:
    return sm.key_count, sm.size_bytes


def check(shard: ShardHarness) -> tuple[int, int]:
    got = figures(shard.sm)
    assert got == brute_force(shard.sm, shard.engine)
    assert got == live_totals(shard.engine, shard.sm.slot_ranges, shard.sm.slot_count)
    assert shard.sm.stats_known
    return got


def test_a_new_shard_starts_empty(shard):
    assert figures(shard.sm) == (0, 0)
    assert shard.sm.stats_known


def test_puts_overwrites_and_deletes(shard):
    shard.put(b"a", b"12345")
    assert check(shard) == (1, 6)
    shard.put(b"bb", b"xy")
    assert check(shard) == (2, 10)
    shard.put(b"a", b"1")  # overwrite: only the value's size changes
    assert check(shard) == (2, 6)
    shard.put(b"a", b"", ignore_value=True)  # keeps the value
    assert check(shard) == (2, 6)
    shard.delete(b"a")
    assert check(shard) == (1, 4)
    shard.delete(b"a")  # nothing to delete
    assert check(shard) == (1, 4)
    shard.delete(b"bb")
    assert check(shard) == (0, 0)
    shard.put(b"a", b"again")
    assert check(shard) == (1, 6)


def test_delete_range(shard):
    for i in range(20):
        shard.put(b"k%02d" % i, b"v" * i)
    assert check(shard) == (20, 20 * 3 + sum(range(20)))
    resp = shard.delete(b"k05", b"k15")
    assert resp.deleted == 10
    assert check(shard) == (10, 10 * 3 + sum(range(5)) + sum(range(15, 20)))
    shard.delete(b"\x00", b"\x00")  # everything
    assert check(shard) == (0, 0)


def test_txn(shard):
    shard.put(b"a", b"1")
    shard.txn(
        compare=[Compare(b"a", CompareTarget.VALUE, CompareResult.EQUAL, b"1")],
        success=[PutRequest(b"a", b"111"), PutRequest(b"b", b"22"), DeleteRangeRequest(b"zz")],
        failure=[PutRequest(b"never", b"x")],
    )
    assert check(shard) == (2, 4 + 3)
    # the failure branch, with a nested txn
    shard.txn(
        compare=[Compare(b"a", CompareTarget.VALUE, CompareResult.EQUAL, b"nope")],
        failure=[TxnRequest((), (DeleteRangeRequest(b"a"), PutRequest(b"c", b"3")), ())],
    )
    assert check(shard) == (2, 3 + 2)
    # a put then a from-key delete of the same key at one revision
    shard.txn(success=[PutRequest(b"d", b"4444"), DeleteRangeRequest(b"c", b"\x00")])
    assert check(shard) == (1, 1 + 2)  # b survives; c and the new d are gone


def test_failed_and_duplicate_commands_change_nothing(shard):
    shard.put(b"a", b"1")
    before = check(shard)
    shard.error(PutRequest(b"missing", b"", ignore_value=True))
    assert check(shard) == before
    # the same router seq applied twice: the second is answered from the dedup window
    shard.apply(PutRequest(b"b", b"22"), router_id=5, seq=1)
    shard.apply(PutRequest(b"b", b"22"), router_id=5, seq=1)
    assert check(shard) == (2, 2 + 3)


def test_lease_key_deletes(shard):
    shard.put(b"leased", b"v", lease=9)
    shard.put(b"other", b"vv", lease=8)
    shard.apply(DeleteLeaseKeys(9, (b"leased", b"other")))
    assert check(shard) == (1, 7)


def test_compaction_changes_nothing(shard):
    for i in range(5):
        shard.put(b"k", b"v%d" % i)
    shard.delete(b"k")
    shard.put(b"j", b"1")
    before = check(shard)
    from shard.types import CompactionRequest

    shard.ok(CompactionRequest(shard.sm.revision))
    assert check(shard) == before == (1, 2)


def test_figures_survive_a_restart(shard):
    for i in range(10):
        shard.put(b"k%d" % i, b"x" * i)
    before = check(shard)
    re = shard.reopen()
    assert figures(re.sm) == before
    re.put(b"k0", b"longer")
    assert check(re) == (10, before[1] + 6)


def test_snapshot_restore_keeps_the_figures(shard):
    for i in range(10):
        shard.put(b"k%d" % i, b"x" * i)
    shard.delete(b"k3")
    expect = check(shard)
    data = shard.sm.snapshot()
    index = shard.sm.applied_index()
    for streamed in (False, True):
        engine = MemoryEngine()
        target = ShardStateMachine(engine, shard.sm.shard_id, SLOTS)
        wb = engine.new_batch()
        if streamed:
            target.restore_chunks(iter(shard.sm.snapshot_chunks(chunk_bytes=64)), index, wb)
        else:
            target.restore(data, index, wb)
        engine.write(wb)
        assert figures(target) == expect
        t = type(shard)(engine, target)
        t.put(b"new", b"1")
        assert check(t) == (expect[0] + 1, expect[1] + 4)
        assert figures(ShardStateMachine(engine, shard.sm.shard_id)) == figures(target)


def _split_keys(shard: ShardHarness) -> list[bytes]:
    ks = [b"key-%d" % i for i in range(60)]
    for i, k in enumerate(ks):
        shard.put(k, b"v" * (i % 7))
    shard.delete(ks[0])
    shard.delete(ks[1])
    shard.put(ks[2], b"rewritten value")
    return ks


def test_split_divides_the_figures(shard):
    _split_keys(shard)
    total = check(shard)
    shard.apply(Split(9, ((8, 16),)))
    parent = check(shard)
    child = ShardStateMachine(shard.engine, 9)
    assert figures(child) == brute_force(child, shard.engine)
    assert child.stats_known
    assert parent[0] > 0 and child.key_count > 0
    assert (parent[0] + child.key_count, parent[1] + child.size_bytes) == total
    # both halves go on counting
    c = type(shard)(shard.engine, child)
    key = next(b"x%d" % i for i in range(1000) if slots.slot_of(b"x%d" % i, SLOTS) >= 8)
    c.put(key, b"12")
    assert check(c) == (child.key_count, child.size_bytes)
    assert figures(child) == (total[0] - parent[0] + 1, total[1] - parent[1] + len(key) + 2)
    assert check(shard) == parent


def test_split_onto_an_already_hosted_shard_counts_the_kept_slots(shard):
    _split_keys(shard)
    # the new shard is already hosted here (created from the map): its meta is its own
    ShardStateMachine(shard.engine, 9, SLOTS, ((8, 16),))
    wb = shard.engine.new_batch()
    wb.put(keys.slots_key(9), keys.encode_slots(SLOTS, ((8, 16),)))
    shard.engine.write(wb)
    shard.apply(Split(9, ((8, 16),)))
    check(shard)


def test_a_shard_from_before_the_figures_reports_them_unknown(shard):
    for i in range(10):
        shard.put(b"k%d" % i, b"v")
    wb = shard.engine.new_batch()
    wb.delete(keys.stats_key(shard.sm.shard_id))  # as written before STATS existed
    shard.engine.write(wb)
    old = shard.reopen()
    assert not old.sm.stats_known
    assert figures(old.sm) == (0, 0)
    old.put(b"more", b"v")
    old.delete(b"k0")
    assert figures(old.sm) == (0, 0)
    assert old.engine.get(keys.stats_key(old.sm.shard_id)) is None
    # a split recomputes both halves
    old.apply(Split(9, ((8, 16),)))
    assert check(old) == figures(old.sm)
    child = ShardStateMachine(old.engine, 9)
    assert child.stats_known and figures(child) == brute_force(child, old.engine)
    assert old.sm.key_count + child.key_count == 10


def test_stats_record_roundtrip():
    assert keys.decode_stats(keys.encode_stats(3, 1 << 40)) == (3, 1 << 40)
    assert keys.shard_of_meta_key(keys.stats_key(5)) == (5, keys.MetaKind.STATS)
