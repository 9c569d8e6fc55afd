"""The placement state machine (pure): bootstrap placement, node registry,
epoch-gated shard reports, leases, and the command/record codecs."""

from __future__ import annotations

import pytest

from placement.codec import decode_command, encode_command
from placement.commands import (
    AttachKeys,
    Bootstrap,
    GrantLease,
    KeyChange,
    LeaseKeysDeleted,
    RegisterNode,
    RejectCode,
    Rejected,
    ReportOutcome,
    ReportResult,
    ReportShard,
    ReportShards,
    RevokeLease,
    SetNodeState,
)
from placement.errors import CodecError
from placement.model import MAX_LEASE_TTL_S, Epoch, Lease, NodeKind, NodeState, Replica, Shard
from placement.state import PlacementState, place_replicas
from shard.slots import count, intersect, normalize


def register(st: PlacementState, nid: int, zone: str = "", kind: NodeKind = NodeKind.STORE) -> None:
    labels = (("zone", zone),) if zone else ()
    out = st.apply(RegisterNode(nid, kind, f"127.0.0.1:{9000 + nid}", labels))
    assert out.result == nid


def cluster(nodes: int = 3, shards: int = 8, slots: int = 1024, zones: list[str] | None = None) -> PlacementState:
    st = PlacementState()
    for i in range(nodes):
        register(st, i + 1, zones[i] if zones else "")
    out = st.apply(Bootstrap(0xC1, slots, shards))
    assert out.result == 0xC1
    return st


def assert_covers_every_slot_once(st: PlacementState) -> None:
    shards = list(st.shards.values())
    assert sum(count(s.slots) for s in shards) == st.slot_count
    assert normalize(r for s in shards for r in s.slots) == ((0, st.slot_count),)
    for a in shards:
        for b in shards:
            if a.shard_id != b.shard_id:
                assert not intersect(a.slots, b.slots)


# ---------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("shards,slots", [(1, 1024), (8, 1024), (7, 1000), (16, 16), (3, 65536)])
def test_bootstrap_covers_every_slot_exactly_once(shards: int, slots: int) -> None:
    st = cluster(shards=shards, slots=slots)
    assert len(st.shards) == shards
    assert st.slot_count == slots
    assert_covers_every_slot_once(st)
    assert all(s.epoch == Epoch(1, 1) for s in st.shards.values())


def test_bootstrap_places_three_replicas_on_distinct_nodes_balanced() -> None:
    st = cluster(nodes=5, shards=10)
    load = {n: 0 for n in st.nodes}
    for s in st.shards.values():
        ids = [r.node_id for r in s.replicas]
        assert len(ids) == 3 and len(set(ids)) == 3
        for n in ids:
            load[n] += 1
    assert max(load.values()) - min(load.values()) <= 1


def test_bootstrap_spreads_zones_where_labels_allow() -> None:
    # Zones a, a, b, b, c: every shard should get one replica in each zone.
    st = cluster(nodes=5, shards=6, zones=["a", "a", "b", "b", "c"])
    for s in st.shards.values():
        zones = {st.nodes[r.node_id].zone for r in s.replicas}
        assert zones == {"a", "b", "c"}


def test_bootstrap_with_two_zones_uses_both() -> None:
    st = cluster(nodes=4, shards=4, zones=["a", "a", "a", "b"])
    for s in st.shards.values():
        assert {st.nodes[r.node_id].zone for r in s.replicas} == {"a", "b"}


def test_bootstrap_with_fewer_than_three_nodes_uses_all() -> None:
    st = cluster(nodes=2, shards=3)
    assert all(len(s.replicas) == 2 for s in st.shards.values())


def test_bootstrap_default_shard_count_is_one_per_store() -> None:
    st = PlacementState()
    for i in range(4):
        register(st, i + 1)
    register(st, 9, kind=NodeKind.ROUTER)
    st.apply(Bootstrap(7, 1024))
    assert len(st.shards) == 4
    assert all(9 not in {r.node_id for r in s.replicas} for s in st.shards.values())


def test_bootstrap_refusals() -> None:
    st = PlacementState()
    out = st.apply(Bootstrap(1, 1024))
    assert isinstance(out.result, Rejected) and out.result.code == RejectCode.NO_STORE_NODES
    register(st, 1)
    for bad in (Bootstrap(0, 1024), Bootstrap(1, 0), Bootstrap(1, 70000), Bootstrap(1, 4, initial_shards=5), Bootstrap(1, 4, replicas=0)):
        r = st.apply(bad).result
        assert isinstance(r, Rejected) and r.code == RejectCode.INVALID, bad
    assert st.apply(Bootstrap(1, 16)).result == 1
    version = st.map_version
    again = st.apply(Bootstrap(2, 16)).result
    assert isinstance(again, Rejected) and again.code == RejectCode.ALREADY_BOOTSTRAPPED
    assert st.cluster_id == 1 and st.map_version == version


def test_bootstrap_change_is_full_and_bumps_version() -> None:
    st = PlacementState()
    register(st, 1)
    v = st.map_version
    out = st.apply(Bootstrap(5, 64, 2))
    assert out.change is not None and out.change.full and out.change.map_version == v + 1 == st.map_version


def test_place_replicas_is_deterministic() -> None:
    st = PlacementState()
    for i in range(6):
        register(st, i + 1, "abc"[i % 3])
    stores = list(st.nodes.values())
    assert place_replicas(stores, 12, 3) == place_replicas(list(reversed(stores)), 12, 3)


# ------------------------------------------------------------------- nodes


def test_register_is_idempotent_and_assigns_ids() -> None:
    st = PlacementState()
    out = st.apply(RegisterNode(0, NodeKind.STORE, "a:1"))
    assert out.result == 1 and out.change is not None and out.change.map_version == 1
    again = st.apply(RegisterNode(1, NodeKind.STORE, "a:1"))
    assert again.result == 1 and again.change is None and st.map_version == 1
    moved = st.apply(RegisterNode(1, NodeKind.STORE, "a:2", (("zone", "z"),)))
    assert moved.change is not None and st.nodes[1].address == "a:2" and st.nodes[1].zone == "z"
    assert st.apply(RegisterNode(0, NodeKind.ROUTER, "r:1")).result == 2


def test_node_down_and_up_transitions_only_on_change() -> None:
    st = PlacementState()
    register(st, 1)
    v = st.map_version
    out = st.apply(SetNodeState(1, NodeState.DOWN))
    assert out.result == NodeState.DOWN and out.change is not None and st.map_version == v + 1
    assert st.apply(SetNodeState(1, NodeState.DOWN)).change is None
    assert st.apply(SetNodeState(1, NodeState.UP)).result == NodeState.UP
    missing = st.apply(SetNodeState(9, NodeState.DOWN)).result
    assert isinstance(missing, Rejected) and missing.code == RejectCode.NODE_NOT_FOUND


def test_nodes_to_mark_down() -> None:
    st = PlacementState()
    for i in (1, 2, 3):
        register(st, i)
    st.apply(SetNodeState(3, NodeState.DOWN))
    heard = {1: 100.0, 2: 70.0}
    assert st.nodes_to_mark_down(heard, now=101.0, down_after_s=30, default_heard=50.0) == [2]
    # a node never heard counts from when this leader took over
    register(st, 4)
    assert st.nodes_to_mark_down(heard, now=101.0, down_after_s=30, default_heard=80.0) == [2]
    assert st.nodes_to_mark_down(heard, now=111.0, down_after_s=30, default_heard=80.0) == [2, 4]


# ------------------------------------------------------------ shard reports


def report(st: PlacementState, shard: Shard) -> ReportResult:
    out = st.apply(ReportShard(shard)).result
    assert isinstance(out, ReportResult)
    return out


def test_report_accepted_only_with_newer_epoch() -> None:
    st = cluster(nodes=4, shards=2)
    cur = st.shards[1]
    v = st.map_version
    # same epoch, no new leader: stale
    assert report(st, cur).outcome == ReportOutcome.STALE
    # newer conf version: accepted, replicas replaced
    new = Shard(1, cur.slots, (Replica(1), Replica(2), Replica(4, learner=True)), Epoch(2, 1), leader_node_id=2, leader_term=3)
    out = report(st, new)
    assert out.outcome == ReportOutcome.ACCEPTED and st.shards[1] == new and st.map_version == v + 1
    # older or mixed epochs: stale, nothing changes
    for e in (Epoch(1, 1), Epoch(1, 2), Epoch(2, 0)):
        assert report(st, Shard(1, cur.slots, (Replica(3),), e, 3, 9)).outcome == ReportOutcome.STALE
    assert st.shards[1] == new and st.map_version == v + 1


def test_report_same_epoch_newer_term_updates_leader_hint_only() -> None:
    st = cluster(nodes=3, shards=1)
    cur = st.shards[1]
    out = report(st, Shard(1, cur.slots, (Replica(7),), cur.epoch, leader_node_id=2, leader_term=5))
    assert out.outcome == ReportOutcome.ACCEPTED
    assert st.shards[1].replicas == cur.replicas and st.shards[1].leader_node_id == 2 and st.shards[1].leader_term == 5
    assert report(st, Shard(1, cur.slots, cur.replicas, cur.epoch, leader_node_id=3, leader_term=4)).outcome == ReportOutcome.STALE


def test_report_unknown_shard_conflict_and_not_bootstrapped() -> None:
    empty = PlacementState()
    assert report(empty, Shard(1, ((0, 1),), ())).outcome == ReportOutcome.NOT_BOOTSTRAPPED
    st = cluster(nodes=3, shards=2, slots=16)
    # a shard not in the map: a split's new shard, accepted once its slots are free
    assert report(st, Shard(9, ((0, 1),), (), Epoch(5, 5))).outcome == ReportOutcome.SLOT_CONFLICT
    assert report(st, Shard(0, ((0, 1),), (), Epoch(5, 5))).outcome == ReportOutcome.UNKNOWN_SHARD
    assert report(st, Shard(9, ((16, 17),), (), Epoch(5, 5))).outcome == ReportOutcome.UNKNOWN_SHARD
    # shard 1 owns [0, 8): claiming [0, 9) overlaps shard 2
    out = report(st, Shard(1, ((0, 9),), st.shards[1].replicas, Epoch(1, 2)))
    assert out.outcome == ReportOutcome.SLOT_CONFLICT and out.current == st.shards[1]
    # shrinking is accepted (a split's parent reports first) ...
    assert report(st, Shard(1, ((0, 4),), st.shards[1].replicas, Epoch(1, 2))).outcome == ReportOutcome.ACCEPTED
    # ... and then the new shard enters the map with the slots its parent gave up
    v = st.map_version
    out = report(st, Shard(9, ((4, 8),), st.shards[1].replicas, Epoch(1, 2), leader_node_id=2, leader_term=3))
    assert out.outcome == ReportOutcome.ACCEPTED and st.shards[9].slots == ((4, 8),) and st.map_version == v + 1


def test_reports_in_one_entry_apply_as_one_by_one_with_one_map_change() -> None:
    """ReportShards (the leader's batch of the reports that arrived together)
    gives the results, shards and retired shards that the same reports
    applied one by one give, in order (a split's new shard after its parent
    shrank; a merge; a stale report after a newer one), with one map version
    and one change naming each changed shard as it ends up."""
    one, many = cluster(nodes=3, shards=4, slots=16), cluster(nodes=3, shards=4, slots=16)
    s1, s2, s3, s4 = (one.shards[i] for i in (1, 2, 3, 4))
    batch = (
        Shard(1, s1.slots, s1.replicas, s1.epoch, leader_node_id=2, leader_term=5),  # a new leader
        Shard(1, s1.slots, s1.replicas, s1.epoch, leader_node_id=3, leader_term=4),  # an older one: stale
        Shard(2, ((4, 6),), s2.replicas, Epoch(1, 2), leader_node_id=1, leader_term=2),  # a split's parent shrinks
        Shard(9, ((6, 8),), s2.replicas, Epoch(1, 2), leader_node_id=2, leader_term=2),  # and its new shard enters
        Shard(3, ((8, 16),), s3.replicas, Epoch(1, 2), leader_node_id=3, leader_term=2),  # 3 merged 4
        Shard(4, s4.slots, s4.replicas, s4.epoch, leader_node_id=1, leader_term=9),  # 4's late leader: gone
    )
    expected = [report(one, s) for s in batch]
    assert [r.outcome for r in expected] == [
        ReportOutcome.ACCEPTED, ReportOutcome.STALE, ReportOutcome.ACCEPTED, ReportOutcome.ACCEPTED,
        ReportOutcome.ACCEPTED, ReportOutcome.SLOT_CONFLICT,
    ]
    v = many.map_version
    out = many.apply(decode_command(encode_command(ReportShards(batch))))
    assert out.result == tuple(expected)
    assert many.shards == one.shards and many.retired == one.retired == {4} and many.max_shard_id == one.max_shard_id
    assert many.map_version == v + 1
    assert out.change is not None and out.change.map_version == v + 1 and not out.change.full
    assert out.change.shards == tuple(many.shards[i] for i in (1, 2, 3, 9))
    assert out.change.removed_shards == (4,)
    assert_covers_every_slot_once(many)
    # Only stale reports: no change, no new map version.
    again = many.apply(ReportShards(batch[:2]))
    assert again.change is None and many.map_version == v + 1
    assert [r.outcome for r in again.result] == [ReportOutcome.STALE, ReportOutcome.STALE]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ leases


def test_lease_grant_refusals_and_exists() -> None:
    st = PlacementState()
    out = st.apply(GrantLease(5, 10))
    assert out.result == Lease(5, 10) and out.change is None and out.leases_touched == (5,)
    assert st.map_version == 0  # leases are not part of the map
    codes = [st.apply(c).result for c in (GrantLease(5, 10), GrantLease(0, 10), GrantLease(6, MAX_LEASE_TTL_S + 1), GrantLease(6, 0))]
    assert [r.code for r in codes if isinstance(r, Rejected)] == [
        RejectCode.LEASE_EXISTS, RejectCode.INVALID, RejectCode.LEASE_TTL_TOO_LARGE, RejectCode.INVALID,
    ]
    assert st.apply(GrantLease(-3, 1)).result == Lease(-3, 1)  # etcd allows any nonzero client id


def test_lease_attach_detach_move_and_revoke() -> None:
    st = PlacementState()
    st.apply(GrantLease(1, 10))
    st.apply(GrantLease(2, 10))
    out = st.apply(AttachKeys((KeyChange(1, b"a"), KeyChange(1, b"b"), KeyChange(3, b"c"), KeyChange(2, b"d"))))
    assert out.result == (2,)  # lease 3 does not exist
    assert st.leases[1].keys == {b"a", b"b"} and st.leases_of(b"a") == {1}
    # A put may give a key another lease: attaching adds it there and keeps
    # it where it is, until the store detaches what the apply did not give
    # it (a txn branch that did not run must not take the key off lease 1).
    st.apply(AttachKeys((KeyChange(2, b"a"),)))
    assert st.leases[1].keys == {b"a", b"b"} and st.leases[2].keys == {b"a", b"d"} and st.leases_of(b"a") == {1, 2}
    st.apply(AttachKeys((KeyChange(1, b"a", detach=True),)))  # the put applied: the key left lease 1
    assert st.leases[1].keys == {b"b"} and st.leases_of(b"a") == {2}
    st.apply(AttachKeys((KeyChange(1, b"d", detach=True), KeyChange(2, b"d", detach=True))))  # a detach takes one pair only
    assert st.leases[2].keys == {b"a"} and st.leases_of(b"d") == frozenset()
    revoked = st.apply(RevokeLease(2))
    assert revoked.result == (b"a",) and 2 not in st.leases and st.ending == {2: frozenset({b"a"})}
    assert st.leases_of(b"a") == frozenset()
    again = st.apply(RevokeLease(2)).result
    assert isinstance(again, Rejected) and again.code == RejectCode.LEASE_NOT_FOUND
    # an ending lease's id cannot be granted again until its keys are gone
    assert isinstance(st.apply(GrantLease(2, 5)).result, Rejected)
    assert st.apply(LeaseKeysDeleted(2, (b"a",))).result == 0 and 2 not in st.ending
    assert st.apply(LeaseKeysDeleted(2, (b"a",))).result == 0  # idempotent
    assert st.apply(GrantLease(2, 5)).result == Lease(2, 5)


def test_lease_revoke_without_keys_leaves_nothing_pending() -> None:
    st = PlacementState()
    st.apply(GrantLease(1, 10))
    assert st.apply(RevokeLease(1)).result == ()
    assert st.ending == {}


def test_keys_by_shard_groups_by_owning_shard() -> None:
    st = cluster(nodes=3, shards=4, slots=1024)
    keys = [f"k{i}".encode() for i in range(50)]
    groups = st.keys_by_shard(keys)
    assert sorted(k for ks in groups.values() for k in ks) == sorted(keys)
    from shard.slots import contains, slot_of

    for sid, ks in groups.items():
        for k in ks:
            assert contains(st.shards[sid].slots, slot_of(k, 1024))


# ------------------------------------------------------------------- codecs


COMMANDS = [
    Bootstrap(0xABC, 1024, 4, 3),
    RegisterNode(3, NodeKind.ROUTER, "h:1", (("rack", "r1"), ("zone", "z"))),
    SetNodeState(3, NodeState.DRAINING),
    ReportShard(Shard(4, ((0, 10), (20, 30)), (Replica(1), Replica(2, True)), Epoch(3, 4), 2, 7)),
    ReportShards((Shard(4, ((0, 10),), (Replica(1),), Epoch(3, 4), 2, 7), Shard(5, ((10, 20),), (Replica(2, True),), Epoch(1, 2), 0, 0))),
    GrantLease(-5, 60),
    RevokeLease(99),
    AttachKeys((KeyChange(1, b"\x00\xff"), KeyChange(2, b"k", True))),
    LeaseKeysDeleted(1, (b"a", b"\x01")),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_roundtrip(cmd: object) -> None:
    data = encode_command(cmd)  # type: ignore[arg-type]
    assert data[0] == 1
    assert decode_command(data) == cmd


@pytest.mark.parametrize("data", [b"", b"\x02{}", b"\x01not json", b"\x01[]", b'\x01{"op":"nope"}', b'\x01{"op":"grant_lease"}'])
def test_decode_refuses_unknown_or_malformed(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(data)


def test_same_commands_same_state() -> None:
    """Determinism: replaying the encoded log gives equal state and results."""
    log = [encode_command(c) for c in (
        RegisterNode(1, NodeKind.STORE, "a", (("zone", "x"),)),
        RegisterNode(2, NodeKind.STORE, "b", (("zone", "y"),)),
        RegisterNode(3, NodeKind.STORE, "c", (("zone", "x"),)),
        Bootstrap(77, 256, 5),
        GrantLease(1, 5),
        AttachKeys((KeyChange(1, b"x"),)),
        SetNodeState(2, NodeState.DOWN),
    )]
    a, b = PlacementState(), PlacementState()
    ra = [a.apply(decode_command(e)).result for e in log]
    rb = [b.apply(decode_command(e)).result for e in log]
    assert ra == rb and a.snapshot() == b.snapshot()


def test_snapshot_and_records_roundtrip() -> None:
    st = cluster(nodes=3, shards=3, zones=["a", "b", "c"])
    st.apply(GrantLease(1, 5))
    st.apply(GrantLease(2, 6))
    st.apply(AttachKeys((KeyChange(1, b"x"), KeyChange(2, b"y"), KeyChange(2, b"z"))))
    st.apply(RevokeLease(2))
    back = PlacementState.from_snapshot(st.snapshot())
    assert back.snapshot() == st.snapshot()
    assert back.leases == st.leases and back.ending == st.ending and back.shards == st.shards and back.nodes == st.nodes
    assert back.leases_of(b"x") == {1} and back.map_version == st.map_version
    records = [r for lid in (1, 2) if (r := st.encode_lease(lid)) is not None]
    loaded = PlacementState.load(st.encode_map(), records)
    assert loaded.snapshot() == st.snapshot()
    assert st.encode_lease(3) is None
