"""The apply step finds a key's live version through the shard's KeyIndex
(shard/keyindex.py) instead of a seek per put. These tests check what a
client sees (create_revision, version, lease, prev_kv) wherever the index
could go stale: a restart, a snapshot restore, a split and a merge back,
compaction, deletes (single, from-key, inside a txn), txn parts across
shards and lease deletes; and, after a seeded random workload, that every
loaded slot of the index equals a fresh load from the engine. Each runs on
MemoryEngine and on RocksDB (the ``engine`` fixture)."""

from __future__ import annotations

import random

import pytest

from shard import hlc, slots
from shard.engine import KvEngine, MemoryEngine
from shard.keyindex import KeyIndex
from shard.statemachine import ShardStateMachine
from shard.types import (
    CommitMerge,
    Compare,
    CompareResult,
    CompareTarget,
    CompactionRequest,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    EventType,
    PrepareMerge,
    PutRequest,
    RangeRequest,
    Split,
    TxnPart,
    TxnPartResponse,
    TxnPhase,
    TxnRequest,
    TxnState,
)

from conftest import SHARD_ID, SLOTS, ShardHarness  # tests/unit/shard/conftest.py (rootdir-relative import)


def key_in(lo: int, hi: int, n: int = 0) -> bytes:
    """The n-th key (k0, k1, ...) whose slot is in [lo, hi)."""
    i = 0
    while True:
        k = f"k{i}".encode()
        if lo <= slots.slot_of(k, SLOTS) < hi:
            if n == 0:
                return k
            n -= 1
        i += 1


def assert_index_fresh(h: ShardHarness) -> None:
    """Every slot the shard's index loaded equals a fresh load from the
    engine (call it after the harness wrote the apply batch)."""
    index: KeyIndex = h.sm._index  # white box: the invariant the apply step relies on
    for slot in index.loaded():
        fresh = KeyIndex()
        fresh.revision(h.engine, slot, b"")
        assert index.live_keys(slot) == fresh.live_keys(slot), f"slot {slot}"


def test_versions_continue_after_a_restart(shard: ShardHarness) -> None:
    r1 = shard.put(b"k", b"1").revision
    shard.put(b"k", b"2")
    shard.put(b"gone", b"x")
    shard.delete(b"gone")
    again = shard.reopen()
    resp = again.put(b"k", b"3", prev_kv=True)
    assert resp.prev_kv is not None and resp.prev_kv.value == b"2" and resp.prev_kv.version == 2
    kv = again.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version, kv.mod_revision) == (r1, 3, resp.revision)
    r = again.put(b"gone", b"y").revision
    kv = again.get(b"gone")
    assert kv is not None and (kv.create_revision, kv.version) == (r, 1)
    assert_index_fresh(again)


def test_a_put_after_a_delete_starts_a_new_life(shard: ShardHarness) -> None:
    shard.put(b"k", b"1")
    shard.put(b"k", b"2")
    shard.delete(b"k")
    resp = shard.put(b"k", b"3", prev_kv=True)
    assert resp.prev_kv is None
    kv = shard.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version) == (resp.revision, 1)
    applied = shard.apply(PutRequest(b"k", b"4"))
    (ev,) = applied.events
    assert ev.type == EventType.PUT and ev.prev_kv is not None and ev.prev_kv.value == b"3"
    assert (ev.kv.create_revision, ev.kv.version) == (resp.revision, 2)
    assert_index_fresh(shard)


def test_a_delete_of_one_key_deletes_just_that_key(shard: ShardHarness) -> None:
    shard.put(b"k", b"1")
    shard.put(b"k\x00", b"2")  # sorts right after k: not part of a one-key delete
    resp = shard.delete(b"k", prev_kv=True)
    assert resp.deleted == 1 and [kv.value for kv in resp.prev_kvs] == [b"1"]
    assert shard.delete(b"k").deleted == 0
    assert shard.keys() == [b"k\x00"]
    assert_index_fresh(shard)


def test_put_and_from_key_delete_of_one_key_in_one_txn(shard: ShardHarness) -> None:
    shard.put(b"k", b"0")
    # put, then delete from k on: the key's last write at this revision is the delete
    shard.txn(success=[PutRequest(b"k", b"1"), DeleteRangeRequest(b"k", b"\x00")])
    assert shard.get(b"k") is None
    r = shard.put(b"k", b"2").revision
    kv = shard.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version) == (r, 1)
    # delete from k on, then put: the put is the key's live version, created here
    t = shard.txn(success=[DeleteRangeRequest(b"k", b"\x00"), PutRequest(b"k", b"3")])
    kv = shard.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version, kv.value) == (t.revision, 1, b"3")
    shard.put(b"k", b"4")
    kv = shard.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version) == (t.revision, 2)
    assert_index_fresh(shard)


def test_txn_puts_and_compares_see_the_index(shard: ShardHarness) -> None:
    r1 = shard.put(b"a", b"1").revision
    t = shard.txn(
        compare=[Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 1)],
        success=[PutRequest(b"a", b"2"), PutRequest(b"b", b"1")],
    )
    assert t.succeeded
    a, b = shard.get(b"a"), shard.get(b"b")
    assert a is not None and (a.create_revision, a.version, a.mod_revision) == (r1, 2, t.revision)
    assert b is not None and (b.create_revision, b.version) == (t.revision, 1)
    t2 = shard.txn(
        compare=[Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 2), Compare(b"b", CompareTarget.CREATE, CompareResult.EQUAL, t.revision)],
        success=[PutRequest(b"a", ignore_value=True, ignore_lease=True)],
        failure=[PutRequest(b"a", b"failed")],
    )
    assert t2.succeeded
    a = shard.get(b"a")
    assert a is not None and (a.value, a.version) == (b"2", 3)
    assert_index_fresh(shard)


def test_lease_attachment_and_lease_deletes(shard: ShardHarness) -> None:
    shard.put(b"k", b"1", lease=5)
    shard.put(b"k", b"2", ignore_lease=True)
    kv = shard.get(b"k")
    assert kv is not None and (kv.lease, kv.version) == (5, 2)
    shard.put(b"other", b"1", lease=6)
    resp = shard.ok(DeleteLeaseKeys(5, (b"k", b"other")))
    assert resp.deleted == 1  # type: ignore[union-attr]
    assert shard.get(b"k") is None and shard.get(b"other") is not None
    r = shard.put(b"k", b"3").revision
    kv = shard.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version, kv.lease) == (r, 1, 0)
    assert_index_fresh(shard)


def test_compaction_leaves_the_index_right(shard: ShardHarness) -> None:
    shard.put(b"dead", b"1")
    shard.delete(b"dead")
    c1 = shard.put(b"live", b"1").revision
    top = shard.put(b"live", b"2").revision
    shard.ok(CompactionRequest(top))  # drops dead's tombstone and version, and live's first
    r = shard.put(b"dead", b"2").revision
    dead = shard.get(b"dead")
    assert dead is not None and (dead.create_revision, dead.version) == (r, 1)
    shard.put(b"live", b"3")
    live = shard.get(b"live")
    assert live is not None and (live.create_revision, live.version) == (c1, 3)
    assert_index_fresh(shard)
    again = shard.reopen()  # loads from the compacted data
    again.put(b"live", b"4")
    live = again.get(b"live")
    assert live is not None and (live.create_revision, live.version) == (c1, 4)
    assert_index_fresh(again)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_snapshot_restore_replaces_what_the_index_knew(engine: KvEngine, streamed: bool) -> None:
    source = MemoryEngine()
    leader = ShardHarness(source, ShardStateMachine(source, SHARD_ID, SLOTS))
    follower = ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
    for h in (leader, follower):  # one history, applied by both
        h.put(b"k", b"1")
        h.put(b"k", b"2")
        h.put(b"j", b"1")
    created = leader.get(b"k").create_revision  # type: ignore[union-attr]
    assert follower.get(b"k").version == 2  # type: ignore[union-attr]
    # the follower falls behind; the leader goes on
    leader.put(b"k", b"3")
    leader.put(b"k", b"4")
    leader.delete(b"j")
    index = leader.sm.applied_index()
    wb = engine.new_batch()
    if streamed:
        data = leader.sm.snapshot()
        follower.sm.restore_chunks([data[:50], data[50:]], index, wb, batch_bytes=64)
    else:
        follower.sm.restore(leader.sm.snapshot(), index, wb)
    engine.write(wb)
    follower.index = index
    follower.put(b"k", b"5")
    kv = follower.get(b"k")
    assert kv is not None and (kv.create_revision, kv.version) == (created, 5)
    r = follower.put(b"j", b"2").revision
    kv = follower.get(b"j")
    assert kv is not None and (kv.create_revision, kv.version) == (r, 1)
    assert_index_fresh(follower)


def test_split_then_merge_back_keeps_versions(engine: KvEngine) -> None:
    a = ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
    kb = key_in(8, 16)
    created = a.put(kb, b"1").revision
    a.put(kb, b"2")  # a's index holds kb's slot now
    assert slots.slot_of(kb, SLOTS) in a.sm._index.loaded()
    assert a.apply(Split(9, ((8, 16),))).ok
    assert all(s < 8 for s in a.sm._index.loaded())  # the moved slots are forgotten
    b = ShardHarness(engine, ShardStateMachine(engine, 9))
    b.ok(PutRequest(kb, b"3"), stamp=1 << 20)
    b.ok(PutRequest(kb, b"4"), stamp=1 << 21)
    kv = b.get(kb)
    assert kv is not None and (kv.create_revision, kv.version) == (created, 4)
    prep = b.apply(PrepareMerge(SHARD_ID))
    assert prep.ok
    assert a.apply(CommitMerge(9, prep.index, b.sm.revision, (b.sm.epoch.conf_version, b.sm.epoch.slot_version))).ok
    resp = a.put(kb, b"5", prev_kv=True)
    assert resp.prev_kv is not None and resp.prev_kv.value == b"4"
    kv = a.get(kb)
    assert kv is not None and (kv.create_revision, kv.version) == (created, 5)
    assert_index_fresh(a)


def test_txn_parts_across_shards(engine: KvEngine) -> None:
    t0 = hlc.make(1_750_000_000_000)
    a = ShardHarness(engine, ShardStateMachine(engine, 1, SLOTS, ((0, 8),)))
    b = ShardHarness(engine, ShardStateMachine(engine, 2, SLOTS, ((8, 16),)))
    ka, kb = key_in(0, 8), key_in(8, 16)
    ca = a.put(ka, b"1").revision
    txn = TxnRequest(success=(PutRequest(ka, b"2"), PutRequest(kb, b"1")))

    def part(h: ShardHarness, p: TxnPart, stamp: int) -> TxnPartResponse:
        out = h.ok(p, stamp=stamp, closed_ts=stamp - 1)
        assert isinstance(out, TxnPartResponse), out
        return out

    pa = part(a, TxnPart(TxnPhase.PREPARE, b"t1", 1, txn), t0)
    pb = part(b, TxnPart(TxnPhase.PREPARE, b"t1", 1, txn), t0 + 1)
    floor = max(pa.revision, pb.revision)
    decided = part(a, TxnPart(TxnPhase.DECIDE, b"t1", commit=True, path=(True,), revision=floor), t0 + 2)
    assert decided.state == TxnState.COMMITTED
    rev = decided.revision
    part(b, TxnPart(TxnPhase.COMMIT, b"t1", path=(True,), revision=rev), rev + 1)
    kva, kvb = a.get(ka), b.get(kb)
    assert kva is not None and (kva.create_revision, kva.version, kva.mod_revision) == (ca, 2, rev)
    assert kvb is not None and (kvb.create_revision, kvb.version, kvb.mod_revision) == (rev, 1, rev)
    # each shard indexed only its own slots (a skipped kb's put: b's slot)
    assert all(s < 8 for s in a.sm._index.loaded()) and all(s >= 8 for s in b.sm._index.loaded())
    a.ok(PutRequest(ka, b"3"), stamp=rev + 10)
    b.ok(PutRequest(kb, b"2"), stamp=rev + 10)
    assert a.get(ka).version == 3 and b.get(kb).version == 2  # type: ignore[union-attr]
    assert_index_fresh(a)
    assert_index_fresh(b)


@pytest.mark.parametrize("seed", range(3))
def test_random_workload_index_matches_the_engine(engine: KvEngine, seed: int) -> None:
    """Puts, deletes (one key, ranges), txns, compactions and restarts at
    random; a model of (create_revision, version) per live key checks every
    put, and the index is compared with a fresh load after every step."""
    rng = random.Random(seed)
    h = ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
    names = [f"key{i:02d}".encode() for i in range(24)]
    model: dict[bytes, tuple[int, int]] = {}
    for step in range(250):
        op = rng.random()
        if op < 0.55:
            k = rng.choice(names)
            r = h.put(k, b"v%d" % step).revision
            create, version = model.get(k, (r, 0))
            model[k] = (create, version + 1)
        elif op < 0.7:
            k = rng.choice(names)
            h.delete(k)
            model.pop(k, None)
        elif op < 0.78:
            lo, hi = sorted(rng.sample(names, 2))
            h.delete(lo, hi)
            for k in [k for k in model if lo <= k < hi]:
                del model[k]
        elif op < 0.9:
            k1, k2 = rng.sample(names, 2)
            t = h.txn(success=[PutRequest(k1, b"t"), DeleteRangeRequest(k2), RangeRequest(k1)])
            create, version = model.get(k1, (t.revision, 0))
            model[k1] = (create, version + 1)
            model.pop(k2, None)
        elif op < 0.95:
            if h.sm.revision > h.sm.compact_revision:
                h.ok(CompactionRequest(rng.randint(h.sm.compact_revision + 1, h.sm.revision)))
        else:
            h = h.reopen()
        live = {kv.key: (kv.create_revision, kv.version) for kv in h.range(b"\x00", b"\x00").kvs}
        assert live == model, f"step {step}"
        assert_index_fresh(h)


def test_a_slot_loads_with_the_writes_staged_before_it_in_the_round(shard: ShardHarness) -> None:
    for i in range(6):
        shard.put(b"k%d" % i, b"1")
    shard.put(b"k3", b"2")
    again = shard.reopen()  # nothing loaded
    # one apply round: a range delete (which loads nothing), then puts whose
    # slots load from the engine plus that round's staged tombstones
    out = again.apply_entries(
        [again.entry(DeleteRangeRequest(b"k0", b"k5")), again.entry(PutRequest(b"k3", b"3")), again.entry(PutRequest(b"k5", b"2"))]
    )
    assert all(a.ok for a in out)
    rev = out[1].revision
    k3, k5 = again.get(b"k3"), again.get(b"k5")
    assert k3 is not None and (k3.create_revision, k3.version) == (rev, 1)
    assert k5 is not None and k5.version == 2
    assert again.keys() == [b"k3", b"k5"]
    assert_index_fresh(again)
