"""router/cache.py: epochs only move forward, leaders follow hints, slots map
to the newest owner, and the placement source applies full maps and deltas."""

from __future__ import annotations

from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from router import slots
from router.cache import PlacementSource, RoutingCache, ShardRoute


def _cache() -> RoutingCache:
    c = RoutingCache(16)
    c.update(ShardRoute(1, (1, 1), ((0, 8),), (1, 2, 3)))
    c.update(ShardRoute(2, (1, 1), ((8, 16),), (1, 2, 3)))
    return c


def test_keys_route_by_slot() -> None:
    c = _cache()
    for n in range(50):
        key = f"k{n}".encode()
        want = 1 if slots.slot_of(key, 16) < 8 else 2
        assert c.shard_for_key(key).shard_id == want
    assert [s.shard_id for s in c.shards_for_range(b"a", b"b")] == [1, 2]
    assert len(c.shards_for_range(b"{t}/", b"{t}0")) == 1


def test_an_older_epoch_never_replaces_a_newer_one() -> None:
    c = _cache()
    assert c.update(ShardRoute(1, (1, 2), ((0, 4),), (1, 2, 3)))
    assert c.update(ShardRoute(3, (1, 2), ((4, 8),), (1, 2, 3)))
    assert not c.update(ShardRoute(1, (5, 1), ((0, 8),), (1, 2, 3)))  # slot_version decides first
    assert c.shard_of_slot(5).shard_id == 3 and c.shard_of_slot(2).shard_id == 1


def test_split_seen_from_the_new_half_first_still_routes_its_slots_to_it() -> None:
    c = _cache()
    c.update(ShardRoute(3, (1, 2), ((4, 8),), (1, 2, 3)))  # shard 1 still cached at (1, 1) over 0..8
    assert c.shard_of_slot(5).shard_id == 3 and c.shard_of_slot(1).shard_id == 1


def test_leader_hints() -> None:
    c = _cache()
    c.set_leader(1, 2, "127.0.0.1:9", term=3)
    assert c.shard(1).leader == 2 and c.address(2) == "127.0.0.1:9"  # type: ignore[union-attr]
    c.set_leader(1, 3, term=2)  # an older term's claim
    assert c.shard(1).leader == 2  # type: ignore[union-attr]
    c.update(ShardRoute(1, (1, 1), ((0, 8),), (1, 2, 3)))  # a descriptor without a leader keeps the known one
    assert c.shard(1).leader == 2  # type: ignore[union-attr]


def _desc(sid: int, lo: int, hi: int, leader: int, slot_version: int = 1) -> spb.ShardDescriptor:
    return spb.ShardDescriptor(
        shard_id=sid,
        epoch=spb.ShardEpoch(conf_version=1, slot_version=slot_version),
        slots=[spb.SlotRange(start=lo, end=hi)],
        replicas=[spb.Replica(node_id=n, address=f"h:{n}") for n in (1, 2, 3)],
        leader_node_id=leader,
    )


def test_placement_source_takes_the_full_map_then_changes() -> None:
    c = RoutingCache(16)
    src = PlacementSource(c, "placement:1", channel_for=lambda a: None)
    full = ppb.ClusterMap(
        slot_count=16,
        map_version=3,
        nodes=[ppb.NodeInfo(node_id=n, kind=ppb.STORE, address=f"h:{n}") for n in (1, 2, 3)],
        shards=[ppb.ShardInfo(descriptor=_desc(1, 0, 16, 2), leader_term=1)],
    )
    src._take(ppb.WatchMapResponse(map_version=3, full=full))
    assert c.map_version == 3 and c.shard_of_slot(9).shard_id == 1 and c.shard(1).leader == 2  # type: ignore[union-attr]
    assert c.address(3) == "h:3"
    src._take(
        ppb.WatchMapResponse(
            map_version=4,
            shards=[
                ppb.ShardInfo(descriptor=_desc(1, 0, 8, 2, 2), leader_term=1),
                ppb.ShardInfo(descriptor=_desc(5, 8, 16, 3, 2), leader_term=1),
            ],
        )
    )
    assert c.map_version == 4 and c.shard_of_slot(9).shard_id == 5 and c.shard_of_slot(3).shard_id == 1
    src._take(ppb.WatchMapResponse(map_version=5, removed_shards=[5]))
    assert c.shard(5) is None


def test_placement_source_keeps_routers_apart_and_takes_several_addresses() -> None:
    c = RoutingCache(16)
    src = PlacementSource(c, "1=p:1, p:2,p:3", channel_for=lambda a: None)
    assert src.addresses == ["p:1", "p:2", "p:3"]
    full = ppb.ClusterMap(
        slot_count=16,
        map_version=3,
        nodes=[
            ppb.NodeInfo(node_id=1, kind=ppb.STORE, address="h:1", state=ppb.UP),
            ppb.NodeInfo(node_id=1001, kind=ppb.ROUTER, address="r:1", state=ppb.UP),
        ],
        shards=[ppb.ShardInfo(descriptor=_desc(1, 0, 16, 1), leader_term=1)],
    )
    src._take(ppb.WatchMapResponse(map_version=3, full=full))
    assert c.address(1) == "h:1" and c.address(1001) == "" and set(src.routers) == {1001}
    src._take(ppb.WatchMapResponse(map_version=4, nodes=[ppb.NodeInfo(node_id=1002, kind=ppb.ROUTER, address="r:2", state=ppb.UP)]))
    assert set(src.routers) == {1001, 1002}


def test_router_members_are_itself_then_the_other_routers_up() -> None:
    from router.server import RouterConfig, RouterServer

    r = RouterServer(RouterConfig(placement="p:1,p:2", node_id=1001, name="r1", advertise="h:2379"))
    assert r.placement_source is not None and r.identity.member_id == 1001
    r.placement_source.routers = {
        1001: ppb.NodeInfo(node_id=1001, kind=ppb.ROUTER, address="h:2379", state=ppb.UP),
        1002: ppb.NodeInfo(node_id=1002, kind=ppb.ROUTER, address="h:2380", state=ppb.UP, labels=[ppb.Label(key="name", value="r2")]),
        1003: ppb.NodeInfo(node_id=1003, kind=ppb.ROUTER, address="h:2381", state=ppb.DOWN),
    }
    assert [(m.member_id, m.name, m.client_urls) for m in r.members()] == [
        (1001, "r1", ("http://h:2379",)),
        (1002, "r2", ("http://h:2380",)),
    ]
