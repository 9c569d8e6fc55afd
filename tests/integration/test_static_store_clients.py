"""A static store cluster (`flotilla server --store --shards N`, no
placement) serving etcd clients itself with `--listen-client-urls`: each
store routes by the same static layout, so a put through one store is read
through every other, whichever store leads the key's shard (each shard has
one leader among 3 stores: two of them forward every request for it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.storecluster import StoreCluster, wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

pytestmark = pytest.mark.integration

SHARDS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StoreCluster, dict[int, eg.KVStub]]]:
    stores = StoreCluster(tmp_path_factory.mktemp("static-clients"), shards=SHARDS, extra_args=["--listen-client-urls", "http://127.0.0.1:0"])
    channels: list[grpc.Channel] = []
    try:
        stores.start()
        wait_until(stores.all_shards_led, timeout=30, what="a leader for every shard")
        kv = {}
        for nid, n in stores.nodes.items():
            info = n.read_ready()
            assert info is not None and info.get("router_port"), info
            ch = grpc.insecure_channel(f"127.0.0.1:{info['router_port']}")
            channels.append(ch)
            kv[nid] = eg.KVStub(ch)
        yield stores, kv
    finally:
        for ch in channels:
            ch.close()
        stores.stop()


def _served(kv: eg.KVStub, key: bytes) -> bool:
    try:
        kv.Put(epb.PutRequest(key=key, value=b"probe"), timeout=5)
        return True
    except grpc.RpcError:
        return False


def test_every_store_serves_every_shard(cluster: tuple[StoreCluster, dict[int, eg.KVStub]]) -> None:
    stores, kv = cluster
    keys = {sid: stores.key_in(sid, "static/") for sid in range(1, SHARDS + 1)}
    assert set(stores.leaders()) == set(keys)
    for nid, stub in kv.items():
        # A store learns the other stores' addresses once the harness has told
        # it its peers (SetPeers); until then a shard led elsewhere may refuse.
        wait_until(lambda stub=stub: all(_served(stub, k) for k in keys.values()), timeout=30, what=f"store {nid} serving every shard")
    for writer, wstub in kv.items():
        for sid, key in keys.items():
            value = b"from-%d-shard-%d" % (writer, sid)
            put = wstub.Put(epb.PutRequest(key=key, value=value), timeout=10)
            for reader, rstub in kv.items():
                got = rstub.Range(epb.RangeRequest(key=key), timeout=10)
                assert [(kv_.key, kv_.value) for kv_ in got.kvs] == [(key, value)], (writer, reader, sid)
                assert got.header.revision >= put.header.revision
