"""router/forward.py against an in-process fake store (real gRPC on
loopback): retries follow NotLeader hints, a write keeps its seq across
retries, concurrent writes share one router id with distinct seqs and a
seq_floor no higher than any seq in flight, and a write with no answer
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
from router.forward import Channels, Forwarder, WriteSeqs
from router.health import NodeHealth


class FakeStore(store_pb2_grpc.StoreServicer):
    def __init__(self, node_id: int, leader: int) -> None:
        self.node_id = node_id
        self.leader = leader
        self.puts: list[tuple[int, int]] = []  # (router_id, seq)
        self.floors: list[int] = []  # seq_floor of each put
        self.hang = False
        self.drop_after_receive = False  # fail the call with UNAVAILABLE once the request arrived
        self.no_leader_next = 0  # as leader, answer "not leader, no known leader" this many times (a transfer pending)
        self.busy: spb.ServerBusy | None = None  # as leader, answer this ServerBusy to every put

    async def Put(self, request: spb.ShardPutRequest, context: grpc.aio.ServicerContext) -> spb.ShardPutResponse:  # noqa: N802
        h = spb.ShardResponseHeader(node_id=self.node_id)
        self.puts.append((request.header.router_id, request.header.seq))
        self.floors.append(request.header.seq_floor)
        if self.drop_after_receive:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after the request arrived")
        if self.hang:
            await asyncio.sleep(30)  # sleep-ok: a fake store that never answers (the caller's deadline ends it)
        if self.node_id != self.leader:
            h.error.routing.not_leader.CopyFrom(spb.NotLeader(shard_id=1, leader_node_id=self.leader))
            return spb.ShardPutResponse(header=h)
        if self.no_leader_next:
            self.no_leader_next -= 1
            h.error.routing.not_leader.CopyFrom(spb.NotLeader(shard_id=1))
            return spb.ShardPutResponse(header=h)
        if self.busy is not None:
            h.error.routing.server_busy.CopyFrom(self.busy)
            return spb.ShardPutResponse(header=h)
        await asyncio.sleep(0.01)  # sleep-ok: a fake store's service time, so writes overlap
        return spb.ShardPutResponse(header=h, response=epb.PutResponse(header=epb.ResponseHeader(revision=7)))

    async def Forward(  # noqa: N802
        self, request_iterator: AsyncIterator[spb.ForwardRequestBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.ForwardResponseBatch]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no Forward here")
        yield spb.ForwardResponseBatch()


async def _cluster(leader: int, *, two_shards: bool = False) -> tuple[list[grpc.aio.Server], list[FakeStore], RoutingCache]:
    """Three fake stores (nodes 1, 2, 3) holding shard 1 (with two_shards,
    shard 1 owns slots 0-7 and shard 2 slots 8-15, both led by `leader`)."""
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
    if two_shards:
        cache.update(ShardRoute(1, (1, 1), ((0, 8),), (1, 2, 3), leader=leader))
        cache.update(ShardRoute(2, (1, 1), ((8, 16),), (1, 2, 3), leader=leader))
    else:
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


async def test_concurrent_writes_share_one_router_id_with_a_seq_floor() -> None:
    servers, stores, cache = await _cluster(leader=1)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False, max_writes_in_flight=8)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
                for _ in range(20)
            )
        )
        puts, floors = stores[0].puts, stores[0].floors
        assert len(puts) == 20
        assert {r for r, _ in puts} == {5}  # one router id, no lanes
        assert sorted(s for _, s in puts) == list(range(1, 21))
        for (_, seq), floor in zip(puts, floors):
            assert 1 <= floor <= seq  # the write's own seq is in flight
        assert fwd.write_seqs.in_flight == 0 and fwd.write_seqs.floor() == 21
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


async def test_write_seqs_floor_is_the_lowest_in_flight() -> None:
    seqs = WriteSeqs(limit=3)
    assert seqs.floor() == 1  # none in flight: the next seq
    a, b, c = await seqs.acquire(), await seqs.acquire(), await seqs.acquire()
    assert (a, b, c) == (1, 2, 3) and seqs.floor() == 1
    seqs.release(b)  # out of order: 1 is still in flight
    assert seqs.floor() == 1
    seqs.release(a)
    assert seqs.floor() == 3
    seqs.release(a)  # releasing twice changes nothing
    assert seqs.floor() == 3 and seqs.in_flight == 1
    seqs.release(c)
    assert seqs.floor() == 4 and seqs.in_flight == 0
    assert await seqs.acquire() == 4 and seqs.floor() == 4


async def test_write_seqs_bound_the_writes_in_flight() -> None:
    seqs = WriteSeqs(limit=2)
    await seqs.acquire()
    second = await seqs.acquire()
    third = asyncio.create_task(seqs.acquire())
    await asyncio.sleep(0.01)  # sleep-ok: give the blocked acquire a chance to (wrongly) finish
    assert not third.done()  # backpressure: a third waits for a place
    seqs.release(second)
    assert await asyncio.wait_for(third, 1) == 3
    assert seqs.floor() == 1  # seq 1 still in flight
    with pytest.raises(ValueError):
        WriteSeqs(0)


async def test_retries_keep_seq_and_never_carry_a_floor_above_it() -> None:
    servers, stores, cache = await _cluster(leader=3)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False)
    try:
        loop = asyncio.get_running_loop()
        slow = asyncio.create_task(
            fwd.call("put", epb.PutRequest(key=b"a"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
        )
        await asyncio.sleep(0)  # sleep-ok: one loop turn, so the slow write is sent first
        await fwd.call("put", epb.PutRequest(key=b"b"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
        await slow
        sent = [(r, s, f) for st in stores for (r, s), f in zip(st.puts, st.floors)]
        assert {s for _, s, _ in sent} == {1, 2}
        assert all(f <= s for _, s, f in sent)
        assert all(f == 1 for _, s, f in sent if s == 1)  # seq 1 is in flight for all its attempts
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


async def test_a_write_failing_unavailable_after_it_arrived_is_outcome_unknown() -> None:
    """UNAVAILABLE does not prove the request was not received: a write whose
    calls all failed that way may have been applied, so the client must hear
    "unknown", not "timed out"."""
    servers, stores, cache = await _cluster(leader=1)
    for s in stores:
        s.drop_after_receive = True
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False)
    try:
        loop = asyncio.get_running_loop()
        with pytest.raises(EtcdError) as info:
            await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 0.5)
        assert any(st.puts for st in stores), "the fake stores never received the write"
        assert info.value.code == grpc.StatusCode.UNAVAILABLE and "outcome is unknown" in info.value.message
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


@pytest.mark.parametrize(
    "busy,expected",
    [
        # The typed field decides, never the reason's text (store.proto ServerBusy).
        (spb.ServerBusy(reason="the write was not applied in time", backoff_ms=10, outcome_unknown=True), "outcome_unknown"),
        (spb.ServerBusy(reason="its outcome is unknown (text is for logs only)", backoff_ms=10), "timeout"),
    ],
    ids=["outcome-unknown-field", "reason-text-ignored"],
)
async def test_a_busy_write_is_outcome_unknown_only_when_the_store_says_so(busy: spb.ServerBusy, expected: str) -> None:
    servers, stores, cache = await _cluster(leader=1)
    for s in stores:
        s.busy = busy
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False)
    try:
        loop = asyncio.get_running_loop()
        with pytest.raises(EtcdError) as info:
            await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 0.5)
        assert info.value.name == expected
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


async def test_a_shard_without_a_leader_until_the_deadline_is_no_leader() -> None:
    servers, stores, cache = await _cluster(leader=1)
    for s in stores:
        s.no_leader_next = 1 << 30
        s.leader = s.node_id  # every replica answers "not leader, no known leader"
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False)
    try:
        loop = asyncio.get_running_loop()
        with pytest.raises(EtcdError) as info:
            await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=loop.time() + 0.5)
        assert info.value.name == "no_leader"
    finally:
        await fwd.channels.close()
        for s in servers:
            await s.stop(0)


def _move_leader(stores: list[FakeStore], leader: int) -> None:
    for st in stores:
        st.leader = leader


async def _stop(fwd: Forwarder, servers: list[grpc.aio.Server]) -> None:
    await fwd.close()
    await fwd.channels.close()
    for s in servers:
        await s.stop(0)


@pytest.mark.parametrize("stream", [True, False])
async def test_one_attempt_never_takes_the_whole_deadline(stream: bool) -> None:
    """The cached leader hangs (paused, cut off); a new one was elected. The
    write gives up on the silent node after one attempt timeout and reaches
    the new leader with the same seq, well within its deadline."""
    servers, stores, cache = await _cluster(leader=1)
    stores[0].hang = True
    _move_leader(stores, 2)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=stream, attempt_timeout_s=0.3)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        a = await fwd.call("put", epb.PutRequest(key=b"k", value=b"v"), route=lambda: cache.shards()[0], deadline=start + 30)
        assert a.node_id == 2
        assert loop.time() - start < 15  # one attempt timeout (0.3 s) and room for a loaded machine, not the 30 s deadline
        assert stores[0].puts == stores[1].puts == [(5, 1)]  # the same write, the same seq
        assert fwd.health.suspect(1)
        assert cache.shard(1).leader == 2  # type: ignore[union-attr]
    finally:
        await _stop(fwd, servers)


async def test_a_node_that_did_not_answer_is_skipped_for_every_shard() -> None:
    """Once node 1 failed to answer for shard 1, a write to shard 2 (whose
    cached leader is also node 1) goes straight to the other replicas: no
    second attempt timeout spent on node 1."""
    servers, stores, cache = await _cluster(leader=1, two_shards=True)
    stores[0].hang = True
    _move_leader(stores, 2)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False, attempt_timeout_s=5)
    try:
        loop = asyncio.get_running_loop()
        await fwd.call("put", epb.PutRequest(key=b"a"), route=lambda: cache.shard(1), deadline=loop.time() + 30)  # type: ignore[arg-type, return-value]
        assert len(stores[0].puts) == 1
        start = loop.time()
        a = await fwd.call("put", epb.PutRequest(key=b"b"), route=lambda: cache.shard(2), deadline=start + 30)  # type: ignore[arg-type, return-value]
        assert a.node_id == 2
        assert len(stores[0].puts) == 1, "the suspect node was asked again"
        assert loop.time() - start < 5  # no attempt timeout (5 s) spent on node 1
    finally:
        await _stop(fwd, servers)


async def test_a_suspect_node_is_probed_again_and_cleared_when_it_answers() -> None:
    servers, stores, cache = await _cluster(leader=1)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False, health=NodeHealth(probe_after_s=0.05))
    try:
        loop = asyncio.get_running_loop()
        fwd.health.failed(1, loop.time())  # as if node 1 had been silent a moment ago
        a = await fwd.call("put", epb.PutRequest(key=b"k"), route=lambda: cache.shards()[0], deadline=loop.time() + 5)
        assert a.node_id == 1  # followers name node 1; after its probe delay it is asked, and answers
        assert not fwd.health.suspect(1)
    finally:
        await _stop(fwd, servers)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_set_aside_leader_is_asked_again_when_a_follower_names_it(stream: bool) -> None:
    """A leader with a transfer pending drops proposals and answers "no
    leader"; the router sets it aside, and a follower points back at it: the
    router must ask it again (not circle among the followers until the
    deadline)."""
    servers, stores, cache = await _cluster(leader=1)
    stores[0].no_leader_next = 1
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=stream)
    try:
        loop = asyncio.get_running_loop()
        a = await fwd.call("put", epb.PutRequest(key=b"k"), route=lambda: cache.shards()[0], deadline=loop.time() + 3)
        assert a.node_id == 1
        assert [p for p in stores[0].puts] == [(5, 1), (5, 1)]
    finally:
        await _stop(fwd, servers)


async def test_a_stopped_leader_is_routed_around() -> None:
    """Node 1 is gone (its server stopped: connections refused) and its old
    followers first still name it, then elect node 3."""
    servers, stores, cache = await _cluster(leader=1)
    await servers[0].stop(0)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=True, attempt_timeout_s=0.5)
    try:
        loop = asyncio.get_running_loop()

        async def elect_later() -> None:
            while sum(len(s.puts) for s in stores[1:]) < 4:  # the followers named the dead leader a few times
                await asyncio.sleep(0.01)  # sleep-ok: polls the fakes' counters, bounded by the test's timeout
            _move_leader(stores, 3)

        election = asyncio.create_task(elect_later())
        start = loop.time()
        a = await fwd.call("put", epb.PutRequest(key=b"k"), route=lambda: cache.shards()[0], deadline=start + 30)
        await election
        assert a.node_id == 3 and stores[2].puts[-1] == (5, 1)
        assert loop.time() - start < 15  # not the 30 s deadline
        assert fwd.health.suspect(1)
    finally:
        await _stop(fwd, servers)


async def test_a_suspect_node_named_as_the_new_leader_is_asked_at_once() -> None:
    """Node 2 was down (suspect, next probe far off) and came back; it is
    now the shard's leader and node 1 says so. The router asks node 2 at
    once rather than waiting for its probe (whether or not its cache named
    node 2 the leader already: placement's map may have said so first)."""
    servers, stores, cache = await _cluster(leader=1)
    _move_leader(stores, 2)
    fwd = Forwarder(cache, Channels(), router_id=5, use_forward_stream=False, health=NodeHealth(probe_after_s=10, max_probe_after_s=10))
    try:
        loop = asyncio.get_running_loop()
        fwd.health.failed(2, loop.time() - 10)  # it failed a while ago (a probe_after_s ago at least)
        a = await fwd.call("put", epb.PutRequest(key=b"k"), route=lambda: cache.shards()[0], deadline=loop.time() + 3)
        assert a.node_id == 2 and not fwd.health.suspect(2)
    finally:
        await _stop(fwd, servers)
