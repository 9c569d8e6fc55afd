"""The router with real processes: 3 store nodes (4 shards) and one router
process on 127.0.0.1, driven by the generated etcd stubs as an etcd client
would (grpcio). One cluster serves the module."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import struct
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from flotilla.router_main import RouterProcess
from flotilla.storecluster import StoreCluster, wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from router import slots
from router.server import RouterConfig, RouterServer
from router.watch import WatchConfig

pytestmark = pytest.mark.integration

SHARDS = 4


class Env:
    def __init__(self, stores: StoreCluster, router: RouterProcess) -> None:
        self.stores = stores
        self.router = router
        self.channel = grpc.insecure_channel(router.address)
        self.kv = eg.KVStub(self.channel)
        self.watch = eg.WatchStub(self.channel)
        self.lease = eg.LeaseStub(self.channel)
        self.cluster = eg.ClusterStub(self.channel)
        self.maint = eg.MaintenanceStub(self.channel)

    def peers(self) -> str:
        return ",".join(f"{n}={self.stores.nodes[n].address}" for n in self.stores.nodes)

    def shard_of(self, key: bytes) -> int:
        slot = slots.slot_of(key, 1024)
        return next(i + 1 for i, r in enumerate(slots.equal_ranges(SHARDS, 1024)) if slots.contains(r, slot))

    def put(self, key: bytes, value: bytes) -> epb.PutResponse:
        return self.kv.Put(epb.PutRequest(key=key, value=value), timeout=10)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("router")
    stores = StoreCluster(tmp, shards=SHARDS, extra_args=["--watch-progress-ms", "200"])
    router: RouterProcess | None = None
    try:
        stores.start()
        wait_until(stores.all_shards_led, timeout=30, what="a leader for every shard")
        peers = ",".join(f"{n}={stores.nodes[n].address}" for n in stores.nodes)
        router = RouterProcess(tmp, ["-v", "--static-shards", str(SHARDS), "--store-peers", peers])
        router.start()
        e = Env(stores, router)
        wait_until(lambda: _ok(lambda: e.kv.Range(epb.RangeRequest(key=b"warmup"), timeout=5)), timeout=30, what="router serving")
        yield e
        e.channel.close()
    finally:
        if router is not None:
            router.stop()
            print(f"--- router log tail ---\n{router.log_tail(30)}")
        stores.stop()


def _ok(fn: object) -> bool:
    try:
        fn()  # type: ignore[operator]
        return True
    except grpc.RpcError:
        return False


def _keys_over_shards(e: Env, prefix: str, n: int) -> list[bytes]:
    keys = [f"{prefix}{i:03d}".encode() for i in range(n)]
    assert len({e.shard_of(k) for k in keys}) >= 3, "the test keys should span shards"
    return keys


def _error(fn: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()  # type: ignore[operator]
    return info.value


# --- KV ---------------------------------------------------------------------------------


def test_put_and_get_one_key(env: Env) -> None:
    r = env.put(b"single", b"v1")
    assert r.header.revision > 0 and r.header.cluster_id and r.header.member_id
    g = env.kv.Range(epb.RangeRequest(key=b"single"), timeout=10)
    assert [(kv.key, kv.value) for kv in g.kvs] == [(b"single", b"v1")]
    assert g.kvs[0].mod_revision == r.header.revision and g.count == 1
    p = env.kv.Put(epb.PutRequest(key=b"single", value=b"v2", prev_kv=True), timeout=10)
    assert p.prev_kv.value == b"v1"


def test_prefix_range_across_shards_with_every_option(env: Env) -> None:
    keys = _keys_over_shards(env, "rng/", 24)
    revs = {}
    for i, k in enumerate(keys):
        revs[k] = env.put(k, f"{(i * 7) % 24:02d}".encode()).header.revision
    base = dict(key=b"rng/", range_end=b"rng0")
    full = env.kv.Range(epb.RangeRequest(**base), timeout=10)
    assert [kv.key for kv in full.kvs] == keys and full.count == 24 and not full.more
    assert full.header.revision >= max(revs.values())

    lim = env.kv.Range(epb.RangeRequest(**base, limit=5), timeout=10)
    assert [kv.key for kv in lim.kvs] == keys[:5] and lim.more and lim.count == 24

    desc = env.kv.Range(epb.RangeRequest(**base, limit=4, sort_order=epb.RangeRequest.DESCEND), timeout=10)
    assert [kv.key for kv in desc.kvs] == keys[::-1][:4] and desc.more

    byval = env.kv.Range(
        epb.RangeRequest(**base, limit=3, sort_target=epb.RangeRequest.VALUE, sort_order=epb.RangeRequest.ASCEND, keys_only=True),
        timeout=10,
    )
    want = sorted(keys, key=lambda k: (f"{(keys.index(k) * 7) % 24:02d}", k))[:3]
    assert [kv.key for kv in byval.kvs] == want and all(kv.value == b"" for kv in byval.kvs)

    bymod = env.kv.Range(epb.RangeRequest(**base, sort_target=epb.RangeRequest.MOD, sort_order=epb.RangeRequest.DESCEND, limit=2), timeout=10)
    assert [kv.key for kv in bymod.kvs] == keys[::-1][:2]

    cnt = env.kv.Range(epb.RangeRequest(**base, count_only=True), timeout=10)
    assert cnt.count == 24 and not cnt.kvs

    ko = env.kv.Range(epb.RangeRequest(**base, keys_only=True, limit=2), timeout=10)
    assert [kv.value for kv in ko.kvs] == [b"", b""]

    old = env.kv.Range(epb.RangeRequest(**base, revision=revs[keys[9]]), timeout=10)
    assert [kv.key for kv in old.kvs] == keys[:10]

    fromkey = env.kv.Range(epb.RangeRequest(key=b"rng/020", range_end=b"\x00"), timeout=10)
    assert [kv.key for kv in fromkey.kvs][:4] == keys[20:24]


def test_serializable_and_bounded_staleness_reads(env: Env) -> None:
    keys = _keys_over_shards(env, "ser/", 12)
    for k in keys:
        env.put(k, b"x")
    r = env.kv.Range(epb.RangeRequest(key=b"ser/", range_end=b"ser0", serializable=True), timeout=10)
    assert r.count <= 12  # may be stale, never wrong
    got = wait_until(
        lambda: (x := env.kv.Range(epb.RangeRequest(key=b"ser/", range_end=b"ser0"), metadata=[("max-staleness-ms", "5000")], timeout=10)).count == 12 and x,
        timeout=10,
        what="a bounded-staleness read that sees every key",
    )
    assert [kv.key for kv in got.kvs] == keys
    bad = _error(lambda: env.kv.Range(epb.RangeRequest(key=b"a"), metadata=[("max-staleness-ms", "soon")], timeout=10))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_staleness_reads_spread_over_replicas_in_process(env: Env) -> None:
    """An embedded router (RouterServer in this event loop): bounded-staleness
    and serializable reads are served by more than one replica."""

    async def body() -> None:
        server = RouterServer(RouterConfig(static_shards=SHARDS, store_peers={n: env.stores.nodes[n].address for n in env.stores.nodes}))
        await server.start()
        try:
            await server.wait_for_map()
            ch = grpc.aio.insecure_channel(server.address)
            kv = eg.KVStub(ch)
            await kv.Put(epb.PutRequest(key=b"spread", value=b"1"), timeout=10)
            loop = asyncio.get_running_loop()
            end = loop.time() + 15
            sid = env.shard_of(b"spread")
            while loop.time() < end:
                await kv.Range(epb.RangeRequest(key=b"spread"), metadata=[("max-staleness-ms", "10000")], timeout=10)
                nodes = {n for (s, n), c in server.forwarder.replica_counts.items() if s == sid and c}
                if len(nodes) >= 2:
                    break
            assert len(nodes) >= 2, server.forwarder.replica_counts
            before = dict(server.forwarder.replica_counts)
            for _ in range(9):
                await kv.Range(epb.RangeRequest(key=b"spread", serializable=True), timeout=10)
            used = {n for (s, n), c in server.forwarder.replica_counts.items() if s == sid and c > before.get((s, n), 0)}
            assert len(used) >= 2
            await ch.close()
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_delete_prefix_across_shards(env: Env) -> None:
    keys = _keys_over_shards(env, "del/", 10)
    for k in keys:
        env.put(k, b"d")
    r = env.kv.DeleteRange(epb.DeleteRangeRequest(key=b"del/", range_end=b"del0", prev_kv=True), timeout=10)
    assert r.deleted == 10 and [kv.key for kv in r.prev_kvs] == keys
    assert env.kv.Range(epb.RangeRequest(key=b"del/", range_end=b"del0", count_only=True), timeout=10).count == 0
    one = env.kv.DeleteRange(epb.DeleteRangeRequest(key=b"del/none"), timeout=10)
    assert one.deleted == 0


def test_txn_in_one_shard_and_across_shards(env: Env) -> None:
    a, b = b"{acct7}/balance", b"{acct7}/log"
    env.put(a, b"10")
    txn = epb.TxnRequest(
        compare=[epb.Compare(key=a, target=epb.Compare.VALUE, result=epb.Compare.EQUAL, value=b"10")],
        success=[
            epb.RequestOp(request_put=epb.PutRequest(key=a, value=b"9")),
            epb.RequestOp(request_put=epb.PutRequest(key=b, value=b"-1")),
            epb.RequestOp(request_range=epb.RangeRequest(key=b"{acct7}/", range_end=b"{acct7}0")),
        ],
    )
    r = env.kv.Txn(txn, timeout=10)
    assert r.succeeded and r.responses[2].response_range.count == 2
    again = env.kv.Txn(txn, timeout=10)
    assert not again.succeeded

    x, y = next((k, m) for k in (b"tx/a", b"tx/b", b"tx/c") for m in (b"tx/d", b"tx/e", b"tx/f") if env.shard_of(k) != env.shard_of(m))
    r = env.kv.Txn(
        epb.TxnRequest(success=[epb.RequestOp(request_put=epb.PutRequest(key=x, value=b"1")), epb.RequestOp(request_put=epb.PutRequest(key=y, value=b"2"))]),
        timeout=10,
    )
    assert r.succeeded  # two-phase commit (router/txn2pc.py), at one revision
    got = [env.kv.Range(epb.RangeRequest(key=k), timeout=10).kvs[0] for k in (x, y)]
    assert [kv.value for kv in got] == [b"1", b"2"]
    assert {kv.mod_revision for kv in got} == {r.header.revision}


# --- watch --------------------------------------------------------------------------------


class WatchClient:
    """A client Watch stream on a thread-fed request queue."""

    def __init__(self, stub: eg.WatchStub) -> None:
        self._requests: queue.Queue[epb.WatchRequest | None] = queue.Queue()
        self._responses: queue.Queue[epb.WatchResponse | BaseException] = queue.Queue()
        self._call = stub.Watch(iter(self._requests.get, None), timeout=60)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for r in self._call:
                self._responses.put(r)
        except grpc.RpcError as exc:
            self._responses.put(exc)

    def send(self, req: epb.WatchRequest) -> None:
        self._requests.put(req)

    def next(self, timeout: float = 10) -> epb.WatchResponse:
        r = self._responses.get(timeout=timeout)
        if isinstance(r, BaseException):
            raise r
        return r

    def events(self, n: int, timeout: float = 15) -> list[mvccpb.Event]:
        out: list[mvccpb.Event] = []
        while len(out) < n:
            r = self.next(timeout)
            out.extend(r.events)
        return out

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


def test_watch_prefix_across_shards_with_history_and_prev_kv(env: Env) -> None:
    keys = _keys_over_shards(env, "w/", 9)
    first = env.put(keys[0], b"0").header.revision
    for k in keys[1:6]:
        env.put(k, b"0")
    w = WatchClient(env.watch)
    try:
        w.send(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"w/", range_end=b"w0", start_revision=first, prev_kv=True)))
        created = w.next()
        assert created.created and created.watch_id == 0
        history = w.events(6)
        assert [e.kv.key for e in history] == keys[:6]
        for k in keys[6:]:
            env.put(k, b"1")
        env.put(keys[0], b"2")
        env.kv.DeleteRange(epb.DeleteRangeRequest(key=keys[1]), timeout=10)
        live = w.events(5)
        assert [e.kv.key for e in live] == [*keys[6:], keys[0], keys[1]]
        assert live[3].prev_kv.value == b"0" and live[4].type == mvccpb.Event.DELETE and live[4].prev_kv.value == b"0"
        revs = [e.kv.mod_revision for e in history + live]
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
        w.send(epb.WatchRequest(progress_request=epb.WatchProgressRequest()))
        p = w.next()
        assert p.watch_id == -1 and p.header.revision >= revs[-1]
        w.send(epb.WatchRequest(cancel_request=epb.WatchCancelRequest(watch_id=0)))
        c = w.next()
        assert c.canceled and c.watch_id == 0
    finally:
        w.close()


def test_watch_filters(env: Env) -> None:
    key = b"wf/key"
    w = WatchClient(env.watch)
    try:
        w.send(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=key, filters=[epb.WatchCreateRequest.NOPUT])))
        assert w.next().created
        env.put(key, b"1")
        env.kv.DeleteRange(epb.DeleteRangeRequest(key=key), timeout=10)
        ev = w.events(1)
        assert [e.type for e in ev] == [mvccpb.Event.DELETE]
    finally:
        w.close()


# --- compaction and errors ---------------------------------------------------------------


def test_compaction_and_compacted_errors(env: Env) -> None:
    k = b"cmp/key"
    r1 = env.put(k, b"1").header.revision
    r2 = env.put(k, b"2").header.revision
    env.kv.Compact(epb.CompactionRequest(revision=r2), timeout=20)
    err = _error(lambda: env.kv.Range(epb.RangeRequest(key=k, revision=r1), timeout=10))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert err.details() == "etcdserver: mvcc: required revision has been compacted"
    again = _error(lambda: env.kv.Compact(epb.CompactionRequest(revision=r1), timeout=10))
    assert again.details() == "etcdserver: mvcc: required revision has been compacted"
    w = WatchClient(env.watch)
    try:
        w.send(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=k, start_revision=r1)))
        assert w.next().created
        c = w.next()
        assert c.canceled and c.compact_revision >= r2 - 1
    finally:
        w.close()


def test_error_texts(env: Env) -> None:
    e = _error(lambda: env.kv.Put(epb.PutRequest(key=b"", value=b"x"), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    e = _error(lambda: env.kv.Range(epb.RangeRequest(key=b""), timeout=10))
    assert e.details() == "etcdserver: key is not provided"
    e = _error(lambda: env.kv.Put(epb.PutRequest(key=b"big", value=b"x" * (2 << 20)), timeout=10))
    assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    e = _error(lambda: env.kv.Put(epb.PutRequest(key=b"big", value=b"x" * (1536 * 1024)), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
    e = _error(lambda: env.kv.Range(epb.RangeRequest(key=b"single", revision=1 << 62), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    e = _error(lambda: env.kv.Put(epb.PutRequest(key=b"leased", value=b"x", lease=42), timeout=10))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    e = _error(lambda: env.kv.Put(epb.PutRequest(key=b"nolease", ignore_value=True, value=b"x"), timeout=10))
    assert e.details() == "etcdserver: value is provided"
    e = _error(lambda: env.lease.LeaseGrant(epb.LeaseGrantRequest(TTL=10), timeout=10))
    assert e.code() == grpc.StatusCode.UNAVAILABLE and "placement" in e.details()


def test_member_list_and_status(env: Env) -> None:
    m = env.cluster.MemberList(epb.MemberListRequest(), timeout=10)
    assert len(m.members) == 1 and m.members[0].clientURLs == [f"http://{env.router.address}"]
    assert m.members[0].ID == m.header.member_id
    s = env.maint.Status(epb.StatusRequest(), timeout=10)
    assert tuple(map(int, s.version.split("."))) >= (3, 5, 13) and s.leader == s.header.member_id
    assert not env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.GET), timeout=10).alarms
    env.maint.Defragment(epb.DefragmentRequest(), timeout=10)
    blob = b"".join(r.blob for r in env.maint.Snapshot(epb.SnapshotRequest(), timeout=10))
    # etcd's snapshot: a bbolt database (meta page magic 0xED0CDAED) and its SHA-256 last
    assert struct.unpack_from("<I", blob, 16)[0] == 0xED0CDAED
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]


def test_embedded_router_progress_notify_unary_path_and_concurrent_writes(env: Env) -> None:
    """An embedded router with unary calls to the stores (no Forward stream)
    and a short progress_notify interval: concurrent writes to one shard all
    apply, and an idle watch gets progress notifications at a revision no
    lower than the writes it saw."""

    async def body() -> None:
        server = RouterServer(
            RouterConfig(
                static_shards=SHARDS,
                store_peers={n: env.stores.nodes[n].address for n in env.stores.nodes},
                use_forward_stream=False,
                watch=WatchConfig(progress_notify_interval_s=0.3),
            )
        )
        await server.start()
        try:
            ch = grpc.aio.insecure_channel(server.address)
            kv = eg.KVStub(ch)
            keys = [b"{conc}/" + str(i).encode() for i in range(30)]
            puts = await asyncio.gather(*(kv.Put(epb.PutRequest(key=k, value=b"x"), timeout=15) for k in keys))
            last = max(p.header.revision for p in puts)
            r = await kv.Range(epb.RangeRequest(key=b"{conc}/", range_end=b"{conc}0", count_only=True), timeout=10)
            assert r.count == 30
            requests: asyncio.Queue[epb.WatchRequest] = asyncio.Queue()

            async def gen() -> AsyncIterator[epb.WatchRequest]:
                while True:
                    yield await requests.get()

            call = eg.WatchStub(ch).Watch(gen())
            await requests.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"{conc}/", range_end=b"{conc}0", progress_notify=True)))
            created = await call.read()
            assert created.created
            note = await call.read()
            assert not note.events and note.watch_id == created.watch_id and note.header.revision >= last
            call.cancel()
            await ch.close()
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(body(), 60))


def test_a_watch_keeps_serving_after_the_client_half_closes(env: Env) -> None:
    """etcd's watch server keeps a stream's watches after the client closes
    its sending side (only cancelling the call ends them): a put after the
    half-close is still delivered."""
    create = epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"halfclose/k"))
    stream = env.watch.Watch(iter([create]), timeout=30)  # the iterator ends: the client half-closes
    created = next(stream)
    assert created.created
    env.put(b"halfclose/k", b"v")
    got = next(stream)
    assert [ev.kv.key for ev in got.events] == [b"halfclose/k"]
    stream.cancel()
