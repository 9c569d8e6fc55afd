"""A watch client that does not read cannot grow the router's memory without
bound: 3 real store processes, a router embedded in the test's event loop
(so its per-client queue, WatchSession.queued_bytes, can be measured), and a
raw grpcio client that opens a watch and stops reading while many writes
happen. The queue stays under its bound (the watch is paused as etcd pauses
a "victim"); once the client reads, it gets every event, in revision order,
with no gap and no duplicate. A paused watch whose resume revision was
compacted meanwhile is canceled with compact_revision, as etcd does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import pytest

from flotilla.storecluster import StoreCluster, wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from router.server import RouterConfig, RouterServer
from router.watch import WatchConfig, WatchSession

pytestmark = pytest.mark.integration

SHARDS = 2
BOUND = 128 * 1024
VALUE_BYTES = 4 * 1024
PUTS = 600  # ~2.4 MB of events: many times the bound and the client's HTTP/2 windows
IN_FLIGHT = 8


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    tmp = tmp_path_factory.mktemp("watchbound")
    cluster = StoreCluster(tmp, shards=SHARDS, extra_args=["--watch-progress-ms", "200"])
    try:
        cluster.start()
        wait_until(cluster.all_shards_led, timeout=30, what="a leader for every shard")
        yield cluster
    finally:
        for nid in cluster.nodes:
            print(f"--- store {nid} ---\n{cluster.log_tail(nid, 15)}")
        cluster.stop()


def _router(stores: StoreCluster) -> RouterServer:
    return RouterServer(
        RouterConfig(
            static_shards=SHARDS,
            store_peers={n: stores.nodes[n].address for n in stores.nodes},
            watch=WatchConfig(send_queue_bytes=BOUND),
        )
    )


class _Watcher:
    """A raw grpc.aio Watch call on its own connection: requests pushed by
    the test, responses read only when the test says so."""

    def __init__(self, address: str) -> None:
        # Its own connection (local subchannel pool): the unread stream must
        # not hold the writers' HTTP/2 connection window.
        self.channel = grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)])
        self.requests: asyncio.Queue[epb.WatchRequest] = asyncio.Queue()
        self.call = eg.WatchStub(self.channel).Watch(self._gen())

    async def _gen(self) -> AsyncIterator[epb.WatchRequest]:
        while True:
            yield await self.requests.get()

    async def create(self, **kw: object) -> epb.WatchResponse:
        await self.requests.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(**kw)))  # type: ignore[arg-type]
        created = await self.call.read()
        assert created.created, created
        return created

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def _session(server: RouterServer) -> WatchSession:
    sessions = list(server.watch_servicer.sessions)
    assert len(sessions) == 1, sessions
    return sessions[0]


async def _write(kv: eg.KVStub, prefix: bytes, n: int) -> list[tuple[bytes, int]]:
    """n puts of random values, IN_FLIGHT at a time: (key, revision) each."""
    out: list[tuple[bytes, int]] = []
    for i in range(0, n, IN_FLIGHT):
        keys = [prefix + b"%04d" % j for j in range(i, min(n, i + IN_FLIGHT))]
        puts = await asyncio.gather(*(kv.Put(epb.PutRequest(key=k, value=os.urandom(VALUE_BYTES)), timeout=15) for k in keys))
        out.extend((k, p.header.revision) for k, p in zip(keys, puts))
    return out


def test_unread_watch_stays_bounded_and_then_delivers_everything(stores: StoreCluster) -> None:
    async def body() -> None:
        server = _router(stores)
        await server.start()
        w = _Watcher(server.address)
        try:
            ch = grpc.aio.insecure_channel(server.address)
            kv = eg.KVStub(ch)
            await w.create(key=b"wb/", range_end=b"wb0")
            session = _session(server)
            written = await _write(kv, b"wb/", PUTS)
            # Nothing read yet: the router paused the watch rather than queue it all.
            total = PUTS * VALUE_BYTES
            print(f"written {total} bytes of values; router queue max {session.max_queued_bytes} bytes, "
                  f"now {session.queued_bytes}; pauses {session.pauses}")
            assert session.pauses >= 1
            assert session.max_queued_bytes <= max(BOUND, session.max_response_bytes)
            assert session.max_response_bytes < total // 4
            # Now read: every event, in order, no gap, no duplicate.
            got: list[tuple[bytes, int]] = []
            async with asyncio.timeout(120):
                while len(got) < len(written):
                    r = await w.call.read()
                    assert not r.canceled, r
                    got.extend((ev.kv.key, ev.kv.mod_revision) for ev in r.events)
            assert got == sorted(written, key=lambda kr: kr[1])
            assert session.resumes >= 1
            print(f"read back {len(got)} events; resumes {session.resumes}; max queued {session.max_queued_bytes}")
            assert session.max_queued_bytes <= BOUND + VALUE_BYTES * IN_FLIGHT * 2  # reading and resuming stay bounded too
            await ch.close()
        finally:
            await w.close()
            await server.stop()

    asyncio.run(asyncio.wait_for(body(), 300))


def test_paused_watch_behind_a_compaction_is_canceled_with_compact_revision(stores: StoreCluster) -> None:
    async def body() -> None:
        server = _router(stores)
        await server.start()
        w = _Watcher(server.address)
        try:
            ch = grpc.aio.insecure_channel(server.address)
            kv = eg.KVStub(ch)
            await w.create(key=b"wc/", range_end=b"wc0")
            session = _session(server)
            written = await _write(kv, b"wc/", PUTS // 2)
            assert session.pauses >= 1
            last = written[-1][1]
            await kv.Compact(epb.CompactionRequest(revision=last), timeout=15)
            seen: list[int] = []
            async with asyncio.timeout(120):
                while True:
                    r = await w.call.read()
                    if r.canceled:
                        break
                    seen.extend(ev.kv.mod_revision for ev in r.events)
            assert r.compact_revision == last, r
            assert seen == sorted(seen) and len(seen) == len(set(seen)) and len(seen) < len(written)
            await ch.close()
        finally:
            await w.close()
            await server.stop()

    asyncio.run(asyncio.wait_for(body(), 300))
