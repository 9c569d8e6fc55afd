"""router/forward.py against an in-process fake store (real gRPC on
loopback): retries follow NotLeader hints, a write keeps its seq across
retries, concurrent writes use distinct lanes, and a write with no answer
before the deadline is UNAVAILABLE "outcome unknown"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from router.cache import RoutingCache, ShardRoute
from router.etcd_errors import EtcdError
from router.forward import Channels, Forwarder


class FakeStore(store_pb2_grpc.StoreServicer):
    def __init__(self, node_id: int, leader: int) -> None:
        self.node_id = node_id
        self.leader = leader
        self.puts: list[tuple[int, int]] = []  # (router_id, seq)
        self.hang = False

    async def Put(self, request: spb.ShardPutRequest, context: grpc.aio.ServicerContext) -> spb.ShardPutResponse:  # noqa: N802
        h = spb.ShardResponseHeader(node_id=self.node_id)
        self.puts.append((request.header.router_id, request.header.seq))
        if self.hang:
            await asyncio.sleep(30)
        if self.node_id != self.leader:
            h.error.routing.not_leader.CopyFrom(spb.NotLeader(shard_id=1, leader_node_id=self.leader))
            return spb.ShardPutResponse(header=h)
        await asyncio.sleep(0.01)
        return spb.ShardPutResponse(header=h, response=epb.PutResponse(header=epb.ResponseHeader(revision=7)))

    async def Forward(  # noqa: N802
        self, request_iterator: AsyncIterator[spb.ForwardRequestBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.ForwardResponseBatch]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no Forward here")
        yield spb.ForwardResponseBatch()


async def _cluster(leader: int) -> tuple[list[grpc.aio.Server], list[FakeStore], RoutingCache]:
    cache = RoutingCache(16)
    servers, stores = [], []
    for nid in (1, 2, 3):
        store = FakeStore(nid, leader)
        server = grpc.aio.server()
        store_pb2_grpc.add_StoreServicer_to_server(store, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        cache.set_address(nid, f"127.0.0.1:{port}")
        servers.append(server)
        stores.append(store)
    cache.update(ShardRoute(1, (1, 1), ((0, 16),), (1, 2, 3), leader=1))
    return servers, stores, cache


@pytest.mark.parametrize("stream", [True, False])
async def test_not_leader_hint_is_followed_with_the_same_seq(stream: bool) -> None:
    servers, stores, cache = await _cluster(leader=3)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=stream)
    try:
        loop = asyncio.get_running_loop()
        a = await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
        assert a.node_id == 3 and a.response.header.revision == 7
        assert cache.shard(1).leader == 3  # type: ignore[union-attr]
        assert stores[0].puts == stores[2].puts  # the retry reused (router_id, seq)
        assert stores[0].puts[0][1] == 1
    finally:
        await fwd.close()
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


async def test_concurrent_writes_use_distinct_lanes_in_seq_order() -> None:
    servers, stores, cache = await _cluster(leader=1)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False, max_write_lanes=4)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
                for _ in range(20)
            )
        )
        puts = stores[0].puts
        assert len(puts) == 20
        lanes = {r for r, _ in puts}
        assert 1 < len(lanes) <= 4 and all(r >> 8 == 5 for r in lanes)
        for lane in lanes:
            seqs = [s for r, s in puts if r == lane]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


async def test_a_write_without_answer_is_outcome_unknown() -> None:
    servers, stores, cache = await _cluster(leader=1)
    for s in stores:
        s.hang = True
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False)
    try:
        loop = asyncio.get_running_loop()
        with pytest.raises(EtcdError) as info:
            await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 0.5)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and "outcome is unknown" in info.value.message
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)
