"""Merging two shards in the apply step: PrepareMerge freezes the source in
its own log, CommitMerge in the target's log takes over its slots, meta and
dedup windows. Both shards live in one engine, as on a store node whose
replicas of both shards are co-located (the source made by a split here, so
its data is already keyed by its slots). Runs on both engines."""

from __future__ import annotations

import pytest

from shard import keys, slots
from shard.codec import decode_command, encode_command
from shard.engine import KvEngine
from shard.errors import CodecError, SlotNotOwned
from shard.splitmerge import MergeNotReady
from shard.statemachine import ShardStateMachine
from shard.types import (
    AckResponse,
    ClosedTs,
    Command,
    CommitMerge,
    Epoch,
    PrepareMerge,
    PutRequest,
    PutResponse,
    Split,
)

from conftest import SHARD_ID, SLOTS, ShardHarness  # tests/unit/shard/conftest.py (rootdir-relative import)

SOURCE_ID = 9


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


def two_shards(engine: KvEngine) -> tuple[ShardHarness, ShardHarness]:
    """Shard 7 owning slots [0, 8) and shard 9 owning [8, 16), made by a split."""
    a = ShardHarness(engine, ShardStateMachine(engine, SHARD_ID, SLOTS))
    assert a.apply(Split(SOURCE_ID, ((8, 16),))).ok
    b = ShardHarness(engine, ShardStateMachine(engine, SOURCE_ID))
    assert b.sm.slot_ranges == ((8, 16),)
    return a, b


def test_merge_codec_roundtrip() -> None:
    for req in (PrepareMerge(7, (2, 3)), CommitMerge(9, 41, 1 << 40, (1, 4))):
        cmd = Command(req, stamp=5, closed_ts=4)
        assert decode_command(encode_command(cmd)) == cmd


def test_prepare_merge_freezes_the_source(engine: KvEngine) -> None:
    a, b = two_shards(engine)
    kb = key_in(8, 16)
    b.ok(PutRequest(kb, b"v1"), router_id=3, seq=1)
    rev = b.sm.revision
    epoch = b.sm.epoch
    closed = b.sm.closed_ts
    applied = b.apply(PrepareMerge(SHARD_ID, (a.sm.epoch.conf_version, a.sm.epoch.slot_version)))
    assert applied.ok and applied.frozen
    assert b.sm.frozen and b.sm.merge_state == keys.MergeState(SHARD_ID, applied.index, rev)
    assert b.sm.epoch == Epoch(epoch.conf_version, epoch.slot_version + 1)
    # nothing after the freeze has an effect: writes refused (a routing
    # error), no revision, no closed timestamp, nothing in the dedup window
    err = b.error(PutRequest(kb, b"v2"), router_id=3, seq=2, stamp=1 << 30, closed_ts=(1 << 30) - 1)
    assert isinstance(err, SlotNotOwned)
    b.apply(ClosedTs(1 << 31))
    assert b.sm.revision == rev and b.sm.closed_ts == closed
    assert b.sm.dedup_window(3) == (1, (1,))
    assert b.get(kb).value == b"v1"  # type: ignore[union-attr]
    # a second PrepareMerge is refused too, without effect
    assert not b.apply(PrepareMerge(SHARD_ID)).ok
    assert b.sm.merge_state.index == applied.index  # type: ignore[union-attr]
    # the freeze survives a restart
    b2 = b.reopen()
    assert b2.sm.frozen and b2.sm.merge_state == b.sm.merge_state and b2.sm.epoch == b.sm.epoch


def test_prepare_merge_into_itself_is_refused(mem_shard: ShardHarness) -> None:
    assert not mem_shard.apply(PrepareMerge(SHARD_ID)).ok
    assert not mem_shard.apply(PrepareMerge(0)).ok
    assert not mem_shard.sm.frozen


def test_commit_merge_takes_over_the_source(engine: KvEngine) -> None:
    a, b = two_shards(engine)
    ka, kb, kb2 = key_in(0, 8), key_in(8, 16), key_in(8, 16, 1)
    a.ok(PutRequest(ka, b"a"), router_id=1, seq=1)
    first = b.ok(PutRequest(kb, b"b"), router_id=2, seq=5, stamp=1000)
    assert isinstance(first, PutResponse)
    b.ok(PutRequest(kb2, b"bb"), router_id=1, seq=2, stamp=2000)
    b.delete(kb2)
    b.ok(PutRequest(kb2, b"bbb"), stamp=3000)
    a_stats = (a.sm.key_count, a.sm.size_bytes)
    b_stats = (b.sm.key_count, b.sm.size_bytes)
    b_rev = b.sm.revision
    assert b_rev > a.sm.revision
    prep = b.apply(PrepareMerge(SHARD_ID))
    a_epoch = a.sm.epoch
    applied = a.apply(CommitMerge(SOURCE_ID, prep.index, b_rev, (b.sm.epoch.conf_version, b.sm.epoch.slot_version)))
    assert applied.ok and applied.merged_from == SOURCE_ID
    assert isinstance(applied.outcome, AckResponse)
    assert a.sm.slot_ranges == ((0, 16),)
    assert a.sm.revision == b_rev
    assert a.sm.epoch == Epoch(a_epoch.conf_version, a_epoch.slot_version + 1)
    assert (a.sm.key_count, a.sm.size_bytes) == (a_stats[0] + b_stats[0], a_stats[1] + b_stats[1])
    assert a.sm.merged_sources == frozenset({SOURCE_ID})
    assert keys.decode_merge(engine.get(keys.merge_key(SOURCE_ID))).committed  # type: ignore[arg-type]
    # the source's keys, and their history, are the target's now
    assert a.get(kb).value == b"b"  # type: ignore[union-attr]
    assert a.get(kb2).value == b"bbb"  # type: ignore[union-attr]
    history = a.sm.events_since(kb2, b"", 1)
    assert [e.kv.value for e in history] == [b"bb", b"", b"bbb"]
    # a retry of a write the source applied gets its first outcome here
    dup = a.apply(PutRequest(kb, b"again"), router_id=2, seq=5)
    assert dup.duplicate and dup.outcome == first
    assert a.get(kb).value == b"b"  # type: ignore[union-attr]
    # router 1's windows of both shards merged: seq 1 (here) and 2 (the source's)
    assert a.sm.dedup_window(1) == (2, (2,))
    # the next write is above every event of both shards
    resp = a.put(kb, b"later")
    assert resp.revision > b_rev
    # and all of it survives a restart
    a2 = a.reopen()
    assert a2.sm.slot_ranges == ((0, 16),) and a2.sm.merged_sources == frozenset({SOURCE_ID})
    assert a2.sm.epoch == a.sm.epoch and a2.sm.revision == a.sm.revision
    assert a2.get(kb).value == b"later"  # type: ignore[union-attr]
    assert a2.sm.dedup_window(2) == a.sm.dedup_window(2)


def test_commit_merge_compact_and_closed_take_the_larger(mem_shard: ShardHarness) -> None:
    a, b = two_shards(mem_shard.engine)
    kb = key_in(8, 16)
    b.ok(PutRequest(kb, b"1"), stamp=100)
    b.ok(PutRequest(kb, b"2"), stamp=200)
    from shard.types import CompactionRequest

    b.ok(CompactionRequest(200))
    b.apply(ClosedTs(5000))
    prep = b.apply(PrepareMerge(SHARD_ID))
    assert a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision)).ok
    assert a.sm.compact_revision == 200
    assert a.sm.closed_ts == 5000
    assert a.put(key_in(0, 8), b"x").revision > 5000


def test_commit_merge_of_an_unfrozen_source_fails_stop(engine: KvEngine) -> None:
    a, b = two_shards(engine)
    b.put(key_in(8, 16), b"v")
    with pytest.raises(MergeNotReady):
        a.apply(CommitMerge(SOURCE_ID, b.index, b.sm.revision))


def test_commit_merge_at_another_index_fails_stop(mem_shard: ShardHarness) -> None:
    a, b = two_shards(mem_shard.engine)
    prep = b.apply(PrepareMerge(SHARD_ID))
    with pytest.raises(MergeNotReady):
        a.apply(CommitMerge(SOURCE_ID, prep.index + 1, b.sm.revision))


def test_commit_merge_frozen_for_another_target_fails_stop(mem_shard: ShardHarness) -> None:
    a, b = two_shards(mem_shard.engine)
    prep = b.apply(PrepareMerge(SHARD_ID + 100))
    with pytest.raises(MergeNotReady):
        a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision))


def test_a_second_commit_merge_is_a_no_op(engine: KvEngine) -> None:
    a, b = two_shards(engine)
    b.put(key_in(8, 16), b"v")
    prep = b.apply(PrepareMerge(SHARD_ID))
    assert a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision)).ok
    epoch, ranges, stats = a.sm.epoch, a.sm.slot_ranges, a.sm.key_count
    again = a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision))
    assert again.ok and again.merged_from == SOURCE_ID
    assert (a.sm.epoch, a.sm.slot_ranges, a.sm.key_count) == (epoch, ranges, stats)


def test_merged_dedup_prefers_an_outcome_over_a_refusal(mem_shard: ShardHarness) -> None:
    """A write the target refused (the router's map was behind) and the
    source applied: after the merge, its retry gets the source's outcome."""
    a, b = two_shards(mem_shard.engine)
    kb = key_in(8, 16)
    refused = a.apply(PutRequest(kb, b"x"), router_id=4, seq=7)
    assert isinstance(refused.outcome, SlotNotOwned)
    first = b.ok(PutRequest(kb, b"x"), router_id=4, seq=7)
    prep = b.apply(PrepareMerge(SHARD_ID))
    assert a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision)).ok
    dup = a.apply(PutRequest(kb, b"x"), router_id=4, seq=7)
    assert dup.duplicate and dup.outcome == first


def test_figures_become_unknown_if_the_source_did_not_know_them(engine: KvEngine) -> None:
    a, b = two_shards(engine)
    a.put(key_in(0, 8), b"a")
    wb = engine.new_batch()
    wb.delete(keys.stats_key(SOURCE_ID))  # a source from before the figures were kept
    engine.write(wb)
    b = b.reopen()
    assert not b.sm.stats_known
    prep = b.apply(PrepareMerge(SHARD_ID))
    assert a.apply(CommitMerge(SOURCE_ID, prep.index, b.sm.revision)).ok
    assert not a.sm.stats_known
    assert not a.reopen().sm.stats_known


def test_merge_record_roundtrip_and_bad_records() -> None:
    m = keys.MergeState(7, 41, 1 << 50, True)
    assert keys.decode_merge(keys.encode_merge(m)) == m
    for bad in (b"", keys.encode_merge(m)[:-1], b"\x09" + keys.encode_merge(m)[1:]):
        with pytest.raises(CodecError):
            keys.decode_merge(bad)
