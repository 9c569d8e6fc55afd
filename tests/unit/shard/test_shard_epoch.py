"""Epochs in the shard's replicated meta, and what a split leaves behind for
the node: conf_version counts applied conf changes, slot_version applied
splits; both survive restarts and travel in snapshots; a split records the
new shard's epoch, its bootstrap group and the parent's children."""

from __future__ import annotations

from shard import keys, snapshot
from shard.engine import MemoryEngine
from shard.node.split import find_split_shards
from shard.statemachine import ShardStateMachine
from shard.types import BOOTSTRAP_EPOCH, Epoch, PutRequest, Split


def test_new_shard_has_the_bootstrap_epoch(shard):
    assert shard.sm.epoch == BOOTSTRAP_EPOCH == Epoch(1, 1)
    assert shard.sm.children == () and shard.sm.bootstrap_conf is None


def test_conf_changes_bump_conf_version_and_persist(shard):
    for _ in range(2):
        wb = shard.engine.new_batch()
        shard.index += 1
        shard.sm.on_conf_change(shard.index, wb)
        shard.sm.on_applied_index(shard.index, wb)
        shard.engine.write(wb)
    assert shard.sm.epoch == Epoch(3, 1)
    assert shard.reopen().sm.epoch == Epoch(3, 1)


def test_split_bumps_slot_version_and_prepares_the_new_shard(shard):
    shard.sm.group_conf = lambda: ((1, 2, 3), (4,))
    for i in range(10):
        shard.put(b"k%d" % i)
    a = shard.apply(Split(9, ((8, 16),)))
    assert a.ok and a.split_to == 9
    assert shard.sm.epoch == Epoch(1, 2)
    assert shard.sm.children == (9,)
    new = ShardStateMachine(shard.engine, 9)
    assert new.epoch == Epoch(1, 2)
    assert new.bootstrap_conf == ((1, 2, 3), (4,))
    assert new.slot_ranges == ((8, 16),)
    assert find_split_shards(shard.engine) == [9]
    # the same child id cannot be split off twice
    assert not shard.apply(Split(9, ((4, 8),))).ok
    # a failed split changes no epoch
    assert shard.sm.epoch == Epoch(1, 2)
    re = shard.reopen().sm
    assert (re.epoch, re.children) == (Epoch(1, 2), (9,))


def test_epoch_travels_in_the_snapshot(shard):
    shard.sm.group_conf = lambda: ((1, 2, 3), ())
    shard.put(b"a")
    shard.apply(Split(9, ((8, 16),)))
    wb = shard.engine.new_batch()
    shard.sm.on_conf_change(shard.index + 1, wb)
    shard.sm.on_applied_index(shard.index + 1, wb)
    shard.engine.write(wb)
    data = shard.sm.snapshot()
    engine = MemoryEngine()
    target = ShardStateMachine(engine, shard.sm.shard_id, 16)
    wb = engine.new_batch()
    target.restore(data, snapshot.decode_header(data)[0].applied, wb)
    engine.write(wb)
    assert target.epoch == Epoch(2, 2) and target.children == (9,)
    assert ShardStateMachine(engine, shard.sm.shard_id).epoch == Epoch(2, 2)


def test_meta_key_codec():
    assert keys.shard_of_meta_key(keys.group_key(5)) == (5, keys.MetaKind.GROUP)
    assert keys.child_of_key(keys.child_key(5, 77)) == 77
    assert keys.decode_group(keys.encode_group((1, 2), ())) == ((1, 2), ())
    assert keys.decode_epoch(keys.encode_epoch(3, 4)) == (3, 4)


def test_writes_to_moved_slots_are_refused_after_split(mem_shard):
    mem_shard.apply(Split(9, ((8, 16),)))
    from shard import slots

    key = next(b"x%d" % i for i in range(1000) if slots.slot_of(b"x%d" % i, 16) >= 8)
    assert not mem_shard.apply(PutRequest(key, b"v")).ok
