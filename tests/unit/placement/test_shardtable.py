"""Delta heartbeats: the store's HeartbeatDeltas against placement's
ShardTable (placement/shardtable.py, shard/agent/deltas.py)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as hs

from flotillapb import placement_pb2 as ppb
from placement.shardtable import ShardTable
from shard.agent.deltas import HeartbeatDeltas, round_rate


def st(sid: int, *, leader: bool = False, term: int = 1, reads: float = 0.0, writes: float = 0.0, keys: int = 0, merge: int = 0) -> ppb.ShardStats:
    return ppb.ShardStats(shard_id=sid, is_leader=leader, term=term, read_rate=reads, write_rate=writes, key_count=keys, merge_target=merge)


def figures(table: ShardTable, node_id: int) -> dict[int, ppb.ShardStats]:
    return {s.shard_id: s for s in table.shards_of(node_id)}


def test_a_full_heartbeat_then_deltas_change_only_what_they_carry() -> None:
    t = ShardTable()
    d = HeartbeatDeltas(7, session=11)
    truth = {1: st(1, leader=True), 2: st(2), 3: st(3, writes=5.0)}
    acked, changed = t.merge(d.full(truth, []))
    assert acked == 1 and d.answered(acked) and len(changed) == 3
    assert figures(t, 7) == truth and t.leads(7, 1) and not t.leads(7, 2)
    # Nothing changed: an empty delta, taken, changing nothing.
    req = d.delta({1: truth[1]}, [])
    assert list(req.shards) == [] and req.base_seq == 1 and req.seq == 2
    v = t.version
    acked, changed = t.merge(req)
    assert acked == 2 and d.answered(acked) and changed == [] and t.version == v
    # Shard 3 idles (its rate goes to zero), shard 2 is gone, shard 4 is new.
    truth = {1: truth[1], 3: st(3), 4: st(4, leader=True, term=3)}
    req = d.delta({2: None, 3: truth[3], 4: truth[4]}, [])
    assert [s.shard_id for s in req.shards] == [3, 4] and list(req.removed_shards) == [2]
    acked, changed = t.merge(req)
    assert d.answered(acked) and sorted(s.shard_id for s in changed) == [3, 4]
    assert figures(t, 7) == truth and d.acked == truth
    assert t.busy() == {} and set(t.leader_stats()) == {1, 4}


def test_a_duplicate_is_acknowledged_again_and_changes_nothing() -> None:
    t = ShardTable()
    d = HeartbeatDeltas(7, session=11)
    d.answered(t.merge(d.full({1: st(1)}, []))[0])
    req = d.delta({1: st(1, keys=5)}, [])
    assert t.merge(req)[0] == req.seq
    v = t.version
    acked, changed = t.merge(req)  # delivered twice
    assert acked == req.seq and changed == [] and t.version == v
    assert d.answered(acked) and figures(t, 7) == {1: st(1, keys=5)}
    # A late duplicate of an older delta, or of the first full heartbeat, is refused without effect.
    assert d.answered(t.merge(d.delta({1: st(1, keys=6)}, []))[0])
    assert t.merge(req)[0] != req.seq and figures(t, 7) == {1: st(1, keys=6)}
    old_full = ppb.StoreHeartbeatRequest(node_id=7, session=11, seq=1, full=True, shards=[st(1)])
    assert t.merge(old_full) == (3, []) and figures(t, 7) == {1: st(1, keys=6)}


def test_a_gap_asks_for_a_full_heartbeat() -> None:
    t = ShardTable()
    d = HeartbeatDeltas(7, session=11)
    d.answered(t.merge(d.full({1: st(1), 2: st(2)}, []))[0])
    lost = d.delta({1: st(1, keys=1)}, [])
    t.merge(lost)  # placement took it, but the answer was lost
    d.failed()
    assert d.want_full
    # Had the store sent a delta on its old base anyway, placement would refuse it.
    stale = ppb.StoreHeartbeatRequest(node_id=7, session=11, seq=lost.seq + 1, base_seq=lost.base_seq, shards=[st(2, keys=2)])
    acked, changed = t.merge(stale)
    assert acked == lost.seq and changed == [] and figures(t, 7)[2] == st(2)
    full = d.full({1: st(1, keys=1), 2: st(2, keys=2)}, [])
    assert d.answered(t.merge(full)[0]) and not d.want_full
    assert figures(t, 7) == {1: st(1, keys=1), 2: st(2, keys=2)}


def test_a_new_leader_or_a_restarted_store_gets_a_full_heartbeat() -> None:
    old, new = ShardTable(), ShardTable()
    d = HeartbeatDeltas(7, session=11)
    d.answered(old.merge(d.full({1: st(1, leader=True)}, []))[0])
    # The new leader has no table for this node: the delta is refused with acked_seq 0.
    req = d.delta({1: st(1, leader=True, keys=3)}, [])
    assert new.merge(req) == (0, []) and not d.answered(0) and d.want_full
    assert d.answered(new.merge(d.full({1: st(1, leader=True, keys=3)}, []))[0])
    assert figures(new, 7) == {1: st(1, leader=True, keys=3)}
    # Leadership comes back to the old leader, whose table is behind: refused too.
    assert not d.answered(old.merge(d.delta({1: st(1, keys=3)}, []))[0])
    # A restarted store (a new session) starts with a full heartbeat; its
    # deltas never apply on the old session's table.
    d2 = HeartbeatDeltas(7, session=12)
    assert new.merge(d2.delta({2: st(2)}, []))[0] == 0
    assert d2.answered(new.merge(d2.full({2: st(2)}, []))[0]) and figures(new, 7) == {2: st(2)}
    assert not new.leads(7, 1)
    # Leadership lost or won: the table is cleared.
    new.clear()
    assert figures(new, 7) == {} and new.leader_stats() == {}


def test_indexes_follow_the_figures() -> None:
    t = ShardTable()
    a, b = HeartbeatDeltas(1, session=5), HeartbeatDeltas(2, session=6)
    a.answered(t.merge(a.full({1: st(1, leader=True, term=2, reads=3.0, writes=4.0), 2: st(2, merge=9)}, []))[0])
    b.answered(t.merge(b.full({1: st(1, leader=True, term=1, reads=1.0), 2: st(2, merge=9)}, []))[0])
    assert t.leader_stats()[1].term == 2  # a stale leader's claim (lower term) loses
    assert t.frozen() == {2: {1: 9, 2: 9}}
    assert t.busy() == {1: {1: (3.0, 4.0), 2: (1.0, 0.0)}}
    a.answered(t.merge(a.delta({1: None, 2: st(2)}, []))[0])
    assert t.leader_stats()[1].term == 1 and t.frozen() == {2: {2: 9}} and t.busy() == {1: {2: (1.0, 0.0)}}
    assert not t.leads(1, 1) and t.leads(2, 1)
    t.drop([2])
    assert t.leader_stats() == {} and t.frozen() == {} and t.busy() == {}


def test_alarms_travel_in_every_heartbeat() -> None:
    t = ShardTable()
    d = HeartbeatDeltas(7, session=11)
    d.answered(t.merge(d.full({}, []))[0])
    d.answered(t.merge(d.delta({}, [3]))[0])
    assert t.alarms(7) == (3,)
    d.answered(t.merge(d.delta({}, []))[0])
    assert t.alarms(7) == ()


def test_rates_are_rounded_to_two_digits() -> None:
    assert [round_rate(x) for x in (0.0, -1.0, 0.004, 1.0, 99.4, 101.0, 1234.5)] == [0.0, 0.0, 0.004, 1.0, 99.0, 100.0, 1200.0]


@settings(max_examples=200, deadline=None)
@given(hs.integers(0, 2**32), hs.integers(20, 80))
def test_the_table_matches_the_store_through_losses_duplicates_and_leader_changes(seed: int, rounds: int) -> None:
    """Random changes to a store's shards; each heartbeat may be lost on the
    way, lost on the way back, delivered twice, or meet a new leader; old
    heartbeats are replayed late. Whenever placement acknowledges the
    heartbeat just sent, its table equals what the store had when it sent it."""
    rng = random.Random(seed)
    tables = [ShardTable(), ShardTable()]
    leader = 0
    d = HeartbeatDeltas(3, session=rng.randrange(1, 2**40))
    truth: dict[int, ppb.ShardStats] = {}
    sent: list[ppb.StoreHeartbeatRequest] = []
    acks = 0
    for _ in range(rounds):
        touched: set[int] = set()
        for _ in range(rng.randrange(0, 4)):
            sid = rng.randrange(1, 8)
            touched.add(sid)
            if rng.random() < 0.2:
                truth.pop(sid, None)
            else:
                truth[sid] = st(sid, leader=rng.random() < 0.5, keys=rng.randrange(3), writes=float(rng.randrange(2)))
        if d.want_full:
            req = d.full(dict(truth), [])
        else:
            req = d.delta({sid: truth.get(sid) for sid in touched}, [])
        sent.append(req)
        fate = rng.random()
        if fate < 0.1:
            tables[1 - leader].clear()  # the other server takes over, with no table
            leader = 1 - leader
        table = tables[leader]
        if 0.1 <= fate < 0.2:
            d.failed()  # lost on the way
            continue
        acked, _ = table.merge(req)
        if 0.2 <= fate < 0.3:
            d.failed()  # taken, but the answer was lost
            continue
        if fate > 0.9:
            assert table.merge(req)[0] == acked  # delivered twice
        if rng.random() < 0.2:
            table.merge(rng.choice(sent))  # an old heartbeat replayed late
            acked = table.nodes[3].seq if 3 in table.nodes else 0
        if d.answered(acked):
            acks += 1
            assert figures(table, 3) == d.acked == truth
    assert acks > 0
    # With a quiet channel, two heartbeats at most bring the table back.
    for _ in range(2):
        req = d.full(dict(truth), []) if d.want_full else d.delta({}, [])
        d.answered(tables[leader].merge(req)[0])
    assert not d.want_full and figures(tables[leader], 3) == truth
