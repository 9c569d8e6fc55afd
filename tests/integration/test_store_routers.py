"""Stores that serve etcd clients (a router in each store's process, as in
the playground) on a real cluster: 3 placement servers and 3 store nodes,
each a `flotilla server` process on 127.0.0.1 (flotilla/cluster.py).

A store's router heartbeats placement itself only every 10 s
(router/membership.py), longer than --down-after here (2 s): it stays up
because each of its store's heartbeats names it
(StoreHeartbeatRequest.routers). A router nobody names, registered later,
is marked down meanwhile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb import placement_pb2 as ppb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(Cluster(tmp_path_factory.mktemp("store-routers"), initial_shards=2, down_after_s=2.0, store_args=["--listen-client-urls", "http://127.0.0.1:0"])) as c:
        yield c


def test_the_routers_in_the_stores_are_heard_with_their_stores(cluster: Cluster) -> None:
    def routers() -> dict[int, int]:
        return {n.node_id: n.state for n in cluster.get_map().nodes if n.kind == ppb.ROUTER}

    wait_until(lambda: len(routers()) == 3, timeout=30, what="the stores' three routers registered")
    alone = cluster.call("RegisterNode", ppb.RegisterNodeRequest(kind=ppb.ROUTER, address="127.0.0.1:30009")).node_id
    wait_until(lambda: routers().get(alone) == ppb.DOWN, timeout=30, what="the unnamed router marked down")
    states = routers()
    del states[alone]
    assert set(states.values()) == {ppb.UP}, states
