"""The dashboard's heat map (placement/heatmap.py: rows, spreading a shard's
rate over its slots, the bounded ring) and its sampler and document
(placement/dashboard.py: rates from the replicas' heartbeats, nodes, shards,
operators with progress, samples after the reader's last)."""

from __future__ import annotations

import json

import pytest

from flotillapb import placement_pb2 as ppb
from placement.dashboard import HeatSampler, document, shard_rates, step_text
from placement.shardtable import ShardTable
from placement.heatmap import HeatMap, row_bounds
from placement.model import Node, NodeKind, NodeState, Replica, Shard
from placement.operators import Operator, OperatorKind, OperatorState, Split, TransferLeader, move_steps
from placement.state import PlacementState

NOW = 500.0


def test_rows_cover_every_slot_once_at_most_max_rows() -> None:
    for slots, max_rows in ((1024, 256), (16384, 256), (10, 256), (1000, 7), (1, 256)):
        rows = row_bounds(slots, max_rows)
        assert len(rows) == min(slots, max_rows)
        assert rows[0][0] == 0 and rows[-1][1] == slots
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        widths = {hi - lo for lo, hi in rows}
        assert max(widths) - min(widths) <= 1


def test_a_shards_rate_is_spread_evenly_over_its_slots() -> None:
    h = HeatMap(16, max_rows=4)  # rows of 4 slots
    s = h.record(1_000, [(((0, 8),), 8.0, 0.0), (((8, 10), (14, 16)), 0.0, 40.0)])
    assert list(s.reads) == [1.0, 1.0, 0.0, 0.0]  # 8 reads/s over 8 slots: 1 per slot
    # 40 writes/s over 4 slots: 10 per slot; slots 8-9 are half of row 2, 14-15 half of row 3.
    assert list(s.writes) == [0.0, 0.0, 5.0, 5.0]
    # A row's mean per slot times its width adds up to the shards' rates.
    assert sum(v * (hi - lo) for v, (lo, hi) in zip(s.writes, h.rows)) == pytest.approx(40.0)


def test_a_shard_inside_one_row_heats_that_row() -> None:
    h = HeatMap(1024)  # 256 rows of 4 slots
    s = h.record(0, [(((512, 513),), 0.0, 3.0)])
    assert s.writes[128] == pytest.approx(0.75) and sum(s.writes) == pytest.approx(0.75)


def test_the_ring_keeps_the_newest_samples_and_answers_after_a_sequence() -> None:
    h = HeatMap(8, max_samples=3)
    for t in range(5):
        h.record(t * 1000, [(((0, 8),), float(t), 0.0)])
    assert [s.seq for s in h.samples] == [3, 4, 5]
    assert (h.first_seq, h.next_seq) == (3, 6)
    assert [s.seq for s in h.since(0)] == [3, 4, 5]  # older than kept: all there is
    assert [s.seq for s in h.since(5)] == [5]
    assert list(h.since(6)) == []
    assert [s.wall_ms for s in h.since(4)] == [3000, 4000]


def _state() -> PlacementState:
    st = PlacementState(cluster_id=0xABC, slot_count=64, map_version=9)
    for n in (1, 2, 3):
        st.nodes[n] = Node(n, NodeKind.STORE, f"127.0.0.1:{7000 + n}", (("zone", f"z{n}"),))
    st.nodes[4] = Node(4, NodeKind.STORE, "127.0.0.1:7004", state=NodeState.DRAINING)
    st.nodes[9] = Node(9, NodeKind.ROUTER, "127.0.0.1:2379")
    st.shards[1] = Shard(1, ((0, 32),), (Replica(1), Replica(2), Replica(3)), leader_node_id=1, leader_term=2)
    st.shards[2] = Shard(2, ((32, 64),), (Replica(1), Replica(2), Replica(4, learner=True)), leader_node_id=2, leader_term=3)
    return st


def _hb(node: int, *shards: tuple[int, bool, float, float]) -> ppb.StoreHeartbeatRequest:
    return ppb.StoreHeartbeatRequest(
        node_id=node,
        shards=[ppb.ShardStats(shard_id=sid, is_leader=lead, term=1, read_rate=r, write_rate=w, key_count=10 * sid, size_bytes=100 * sid)
                for sid, lead, r, w in shards],
    )


def _table(*beats: ppb.StoreHeartbeatRequest) -> ShardTable:
    t = ShardTable()
    for hb in beats:
        t.merge(hb)
    return t


def test_rates_sum_every_fresh_replicas_heartbeat() -> None:
    stats = _table(_hb(1, (1, True, 5.0, 20.0), (2, False, 1.0, 0.0)), _hb(2, (1, False, 3.0, 0.0), (2, True, 2.0, 6.0)), _hb(3, (1, False, 100.0, 0.0)))
    heard = {1: NOW - 0.5, 2: NOW - 1.0, 3: NOW - 10.0}  # node 3 not heard for 10 s: its figures are stale
    assert shard_rates(stats, heard, NOW, fresh_s=3.0) == {1: (8.0, 20.0), 2: (3.0, 6.0)}


def test_the_sampler_samples_on_its_interval_only_while_leading() -> None:
    st = _state()
    stats = _table(_hb(1, (1, True, 0.0, 32.0)))
    heard = {1: NOW}
    sampler = HeatSampler(interval_s=1.0, max_rows=8)
    assert not sampler.maybe_sample(NOW, 1, st, stats, heard)  # no ring: not leading
    sampler.reset("1.5")
    assert sampler.maybe_sample(NOW, 1_000, st, stats, heard)
    assert not sampler.maybe_sample(NOW + 0.5, 1_500, st, stats, heard)
    assert sampler.maybe_sample(NOW + 1.0, 2_000, st, stats, heard)
    assert sampler.heat is not None and [s.wall_ms for s in sampler.heat.samples] == [1_000, 2_000]
    assert list(sampler.heat.samples[-1].writes) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # 32/s over slots 0-31: 1 each
    sampler.reset()  # leadership lost: the ring is the leader's memory
    assert sampler.heat is None and not sampler.maybe_sample(NOW + 5, 9_000, st, stats, heard)


def test_the_document_shows_nodes_shards_operators_and_new_samples() -> None:
    st = _state()
    stats = _table(_hb(1, (1, True, 5.0, 20.0), (2, False, 1.0, 0.0)), _hb(2, (1, False, 3.0, 0.0), (2, True, 2.0, 6.0)))
    heard = {1: NOW - 0.5, 2: NOW - 1.0}
    sampler = HeatSampler(max_rows=4)
    sampler.reset("1.2")
    sampler.maybe_sample(NOW, 1_000, st, stats, heard)
    sampler.maybe_sample(NOW + 1, 2_000, st, stats, heard)
    ops = [
        Operator(1, OperatorKind.TRANSFER_LEADER, 1, (TransferLeader(2),), NOW - 8, 60.0, step_index=1, state=OperatorState.SUCCESS, note="ctl"),
        Operator(2, OperatorKind.MOVE, 2, move_steps(4, 3), NOW - 3, 60.0, step_index=1),
    ]
    doc = document(
        served_by=1, leader_id=1, is_leader=True, placement_servers={1: "p1:1", 2: "p2:1"}, state=st, table=stats,
        heard=heard, suspects=[3], operators=ops, sampler=sampler, now=NOW + 1, wall_ms=2_000, since=2,
    )
    json.dumps(doc)  # JSON-able
    assert (doc["cluster_id"], doc["map_version"], doc["slot_count"], doc["from_leader"]) == ("abc", 9, 64, True)
    assert doc["placement_servers"] == [{"id": 1, "address": "p1:1", "leader": True}, {"id": 2, "address": "p2:1", "leader": False}]
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert (nodes[1]["zone"], nodes[1]["state"], nodes[1]["replicas"], nodes[1]["leaders"]) == ("z1", "up", 2, 1)
    assert (nodes[3]["state"], nodes[3]["suspect"], nodes[3]["heard_s_ago"]) == ("up", True, None)
    assert (nodes[4]["state"], nodes[4]["replicas"], nodes[4]["learners"]) == ("draining", 1, 1)
    assert nodes[9]["kind"] == "router"
    assert nodes[2]["heard_s_ago"] == 2.0 and nodes[2]["writes_per_s"] == 6.0
    s1, s2 = doc["shards"]
    assert (s1["id"], s1["slots"], s1["leader"], s1["keys"], s1["bytes"], s1["reads_per_s"], s1["writes_per_s"]) == (1, [[0, 32]], 1, 10, 100, 8.0, 20.0)
    assert (s2["replicas"][2], s2["leader"], s2["operator"]) == ({"node": 4, "learner": True}, 2, 2)
    assert s1["operator"] is None  # its transfer ended
    o1, o2 = doc["operators"]
    assert (o1["id"], o1["state"], o1["progress"], o1["steps"]) == (1, "success", "1/1", ["transfer-leader(2)"])
    assert (o2["state"], o2["step"], o2["progress"], o2["steps"]) == ("running", 1, "1/3", ["add-learner(3)", "promote(3)", "remove-replica(4)"])
    heat = doc["heat"]
    assert (heat["ring"], heat["rows"], heat["first_seq"], heat["next_seq"]) == ("1.2", [[0, 16], [16, 32], [32, 48], [48, 64]], 1, 3)
    assert [s["seq"] for s in heat["samples"]] == [2]  # the reader has sample 1
    assert heat["samples"][0]["writes"] == [0.625, 0.625, 0.188, 0.188]  # 20/s and 6/s over 32 slots each, three digits


def test_a_followers_document_is_its_map_only() -> None:
    st = _state()
    doc = document(
        served_by=2, leader_id=1, is_leader=False, placement_servers={1: "p1:1", 2: "p2:1"}, state=st, table=ShardTable(),
        heard={}, suspects=[], operators=[], sampler=HeatSampler(), now=NOW, wall_ms=0,
    )
    assert [s["id"] for s in doc["shards"]] == [1, 2] and doc["shards"][0]["reads_per_s"] is None
    assert doc["operators"] == [] and doc["heat"]["samples"] == [] and doc["from_leader"] is False


def test_step_text_is_ctls() -> None:
    assert step_text(Split(5, 640)) == "split(5@640)"
    assert step_text(TransferLeader(3)) == "transfer-leader(3)"
