"""NOSPACE on one node stops growing writes on every shard with a replica
there, not only on the shards that node leads (etcd refuses them
cluster-wide). Real processes: 3 placement servers, 3 stores, a router;
the alarm is armed by hand on one store (StoreAdmin Alarm ACTIVATE, as
`etcdctl alarm` can't target a store) and travels through placement's
heartbeat answers to the other stores' leaders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster, wait_until
from tests.integration.routerproc import cluster_with_router
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

pytestmark = pytest.mark.integration

NOSPACE_TEXT = "etcdserver: mvcc: database space exceeded"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, eg.KVStub]]:
    tmp: Path = tmp_path_factory.mktemp("quota-cluster")
    c = Cluster(tmp, initial_shards=2)
    with cluster_with_router(c, tmp) as router:
        channel = grpc.insecure_channel(router.address)
        yield c, eg.KVStub(channel)
        channel.close()

def _put(kv: eg.KVStub, key: bytes) -> str:
    """'' if the put was acknowledged, else its error's text."""
    try:
        kv.Put(epb.PutRequest(key=key, value=b"v"), timeout=15)
        return ""
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE), exc
        return exc.details() or ""


def _leaders(c: Cluster) -> set[int]:
    return {s.descriptor.leader_node_id for s in c.get_map().shards}


def test_nospace_on_a_follower_stops_writes_led_elsewhere(env: tuple[Cluster, eg.KVStub]) -> None:
    c, kv = env
    keys = [b"q/%d" % i for i in range(20)]  # over both shards
    wait_until(lambda: _put(kv, b"warmup") == "", timeout=60, what="the router serving writes")

    def settled() -> bool:
        # Leaders on two nodes and no operator running: no leader balancing to come.
        ops = c.call("ListOperators", ppb.ListOperatorsRequest()).operators
        leaders = [s.descriptor.leader_node_id for s in c.get_map().shards]
        return all(leaders) and len(set(leaders)) == len(leaders) and not any(o.state == "running" for o in ops)

    wait_until(settled, timeout=60, what="leaders balanced")
    # The node to fill leads no shard (2 shards, 3 stores: one leads none),
    # so a refusal must come from a leader on another node.
    idle = sorted(set(c.store_ids) - _leaders(c))
    assert idle, _leaders(c)
    full = idle[0]
    admin = c.stores.nodes[full].admin
    assert admin is not None
    admin.Alarm(spb.StoreAlarmRequest(action=epb.AlarmRequest.ACTIVATE, alarm=epb.NOSPACE), timeout=10)

    # Within a heartbeat or two, every shard (each has a replica on the full
    # node) refuses puts with etcd's text, whoever leads it.
    # (And, at that moment, some shard led elsewhere: its refusals are not the full node's own.)
    wait_until(
        lambda: all(_put(kv, k) == NOSPACE_TEXT for k in keys) and _leaders(c) - {full},
        timeout=30,
        what="every shard refusing puts, some led by another node",
    )
    # Deletes and reads still work.
    kv.DeleteRange(epb.DeleteRangeRequest(key=b"q/", range_end=b"q0"), timeout=15)
    kv.Range(epb.RangeRequest(key=b"q/", range_end=b"q0"), timeout=15)

    admin.Alarm(spb.StoreAlarmRequest(action=epb.AlarmRequest.DEACTIVATE, alarm=epb.NOSPACE), timeout=10)
    wait_until(lambda: all(_put(kv, k) == "" for k in keys), timeout=30, what="puts accepted after the disarm")
    r = kv.Range(epb.RangeRequest(key=b"q/", range_end=b"q0", count_only=True), timeout=15)
    assert r.count == len(keys)
