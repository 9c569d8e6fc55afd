"""The bad-input catalogue (issue #8) against a real cluster (3 placement
servers, 3 store nodes) and a router following placement's map: each case is
answered with etcd's gRPC code and text (router/etcd_errors.py's table), or a
clear INVALID_ARGUMENT, and afterwards every process is still up and the
router still serves; a watcher that never reads leaves the router's memory
bounded."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from router.etcd_errors import ROWS

pytestmark = [pytest.mark.fault, pytest.mark.integration]

MiB = 1 << 20


class Env:
    def __init__(self, cluster: Cluster, router: RouterProcess) -> None:
        self.cluster = cluster
        self.router = router
        self.channel = grpc.insecure_channel(
            router.address, options=[("grpc.max_send_message_length", 16 * MiB), ("grpc.max_receive_message_length", 16 * MiB)]
        )
        self.kv = eg.KVStub(self.channel)
        self.lease = eg.LeaseStub(self.channel)
        self.watch = eg.WatchStub(self.channel)

    def all_up(self) -> list[str]:
        down = [f"router ({self.router.proc.returncode})"] if self.router.proc and self.router.proc.poll() is not None else []
        for nid, n in self.cluster.stores.nodes.items():
            if not n.alive:
                down.append(f"store {nid}")
        for nid, n in self.cluster.placement.nodes.items():
            if n.proc is None or n.proc.poll() is not None:
                down.append(f"placement {nid}")
        return down

    def rss_kib(self) -> int:
        assert self.router.proc is not None
        for line in Path(f"/proc/{self.router.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("badinput")
    c = Cluster(tmp / "cluster", store_args=["--watch-queue-events", "200"])
    router: RouterProcess | None = None
    try:
        c.start()
        c.wait_bootstrapped()
        (tmp / "router").mkdir()
        router = RouterProcess(tmp / "router", ["--placement", c.placement.nodes[1].address])
        router.start()
        e = Env(c, router)
        wait_until(lambda: e.kv.Put(epb.PutRequest(key=b"warmup", value=b"v"), timeout=5), timeout=60, what="router serving puts")
        yield e
        assert e.all_up() == [], f"processes down after the catalogue: {e.all_up()}"
        e.channel.close()
    except BaseException:
        if router is not None:
            print(f"--- router log ---\n{router.log_tail(60)}")
        print(c.logs())
        raise
    finally:
        if router is not None:
            router.stop()
        c.stop()


def _err(fn: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def _is(exc: grpc.RpcError, row: str) -> None:
    code, text = ROWS[row]
    assert (exc.code(), exc.details()) == (code, text)


def test_empty_key(env: Env) -> None:
    _is(_err(lambda: env.kv.Put(epb.PutRequest(key=b"", value=b"v"), timeout=10)), "empty_key")
    _is(_err(lambda: env.kv.Range(epb.RangeRequest(key=b""), timeout=10)), "empty_key")
    _is(_err(lambda: env.kv.DeleteRange(epb.DeleteRangeRequest(key=b""), timeout=10)), "empty_key")


def test_oversized_key_value_and_request(env: Env) -> None:
    # Over etcd's 1.5 MiB --max-request-bytes but under gRPC's limit (1.5 MiB + 512 KiB, as etcd sets it).
    big = b"x" * (MiB + MiB * 6 // 10)
    _is(_err(lambda: env.kv.Put(epb.PutRequest(key=b"big", value=big), timeout=10)), "request_too_large")
    _is(_err(lambda: env.kv.Put(epb.PutRequest(key=big, value=b"v"), timeout=10)), "request_too_large")
    ops = [epb.RequestOp(request_put=epb.PutRequest(key=f"{{t}}{i}".encode(), value=b"y" * (100 * 1024))) for i in range(20)]
    _is(_err(lambda: env.kv.Txn(epb.TxnRequest(success=ops), timeout=10)), "request_too_large")
    # Past the router's gRPC receive limit: gRPC's own RESOURCE_EXHAUSTED, the process stays up.
    huge = _err(lambda: env.kv.Put(epb.PutRequest(key=b"huge", value=b"z" * (8 * MiB)), timeout=10))
    assert huge.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under the limit is accepted, and read back.
    ok = b"w" * (MiB)
    env.kv.Put(epb.PutRequest(key=b"one-mib", value=ok), timeout=20)
    assert env.kv.Range(epb.RangeRequest(key=b"one-mib"), timeout=20).kvs[0].value == ok


def test_too_many_txn_ops(env: Env) -> None:
    ops = [epb.RequestOp(request_put=epb.PutRequest(key=f"{{t}}k{i}".encode(), value=b"v")) for i in range(129)]
    _is(_err(lambda: env.kv.Txn(epb.TxnRequest(success=ops), timeout=10)), "too_many_ops")
    env.kv.Txn(epb.TxnRequest(success=ops[:128]), timeout=20)  # 128 is etcd's limit, allowed


def test_duplicate_keys_in_a_txn(env: Env) -> None:
    put = epb.RequestOp(request_put=epb.PutRequest(key=b"{d}k", value=b"v"))
    _is(_err(lambda: env.kv.Txn(epb.TxnRequest(success=[put, put]), timeout=10)), "duplicate_key")
    dele = epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=b"{d}k"))
    _is(_err(lambda: env.kv.Txn(epb.TxnRequest(success=[put, dele]), timeout=10)), "duplicate_key")


def test_invalid_ranges_answer_empty_as_etcd_does(env: Env) -> None:
    env.kv.Put(epb.PutRequest(key=b"rng-b", value=b"v"), timeout=10)
    r = env.kv.Range(epb.RangeRequest(key=b"rng-z", range_end=b"rng-a"), timeout=10)  # end before start
    assert list(r.kvs) == [] and r.count == 0
    d = env.kv.DeleteRange(epb.DeleteRangeRequest(key=b"rng-z", range_end=b"rng-a"), timeout=10)
    assert d.deleted == 0
    # A negative limit means "no limit" to etcd.
    assert [kv.key for kv in env.kv.Range(epb.RangeRequest(key=b"rng-b", limit=-1), timeout=10).kvs] == [b"rng-b"]
    # An out-of-range sort enum: a clear INVALID_ARGUMENT (etcd: "etcdserver: invalid sort option").
    bad = _err(lambda: env.kv.Range(epb.RangeRequest(key=b"rng-b", sort_order=7), timeout=10))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad.code(), bad.details())


def test_compacted_and_future_revisions(env: Env) -> None:
    first = env.kv.Put(epb.PutRequest(key=b"rev-k", value=b"1"), timeout=10).header.revision
    last = env.kv.Put(epb.PutRequest(key=b"rev-k", value=b"2"), timeout=10).header.revision
    _is(_err(lambda: env.kv.Range(epb.RangeRequest(key=b"rev-k", revision=last + (1 << 40)), timeout=10)), "future_rev")
    env.kv.Compact(epb.CompactionRequest(revision=last, physical=True), timeout=20)
    _is(_err(lambda: env.kv.Range(epb.RangeRequest(key=b"rev-k", revision=first), timeout=10)), "compacted")
    _is(_err(lambda: env.kv.Compact(epb.CompactionRequest(revision=first), timeout=10)), "compacted")


def _raw_unary(env: Env, method: str, body: bytes) -> grpc.RpcError:
    call = env.channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return _err(lambda: call(body, timeout=10))


MALFORMED = (b"\x0a\xff\xff\xff\xff\xff", b"\x0a\x10ab", b"\xff" * 64)


def _nested_txn(depth: int) -> bytes:
    """TxnRequest nested `depth` deep (request_txn inside RequestOp inside TxnRequest ...)."""
    body = b""
    for _ in range(depth):
        op = b"\x22" + _varint(len(body)) + body  # RequestOp.request_txn = 4
        body = b"\x12" + _varint(len(op)) + op  # TxnRequest.success = 2
    return body


def test_malformed_and_deeply_nested_protobuf_leave_the_router_up(env: Env) -> None:
    for body in MALFORMED:
        e = _raw_unary(env, "/etcdserverpb.KV/Range", body)
        assert e.code() != grpc.StatusCode.OK
    e = _raw_unary(env, "/etcdserverpb.KV/Txn", _nested_txn(10_000))
    assert e.code() != grpc.StatusCode.OK
    assert env.all_up() == []
    env.kv.Put(epb.PutRequest(key=b"after-malformed", value=b"v"), timeout=10)


def test_malformed_protobuf_gets_etcds_code(env: Env) -> None:
    # grpc-go (etcd): status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
    for body in MALFORMED:
        e = _raw_unary(env, "/etcdserverpb.KV/Range", body)
        assert e.code() == grpc.StatusCode.INTERNAL, (e.code(), e.details())
        assert (e.details() or "").startswith("grpc: error unmarshalling request: "), e.details()
    e = _raw_unary(env, "/etcdserverpb.KV/Txn", _nested_txn(10_000))
    assert e.code() == grpc.StatusCode.INTERNAL, (e.code(), e.details())
    assert (e.details() or "").startswith("grpc: error unmarshalling request: "), e.details()
    assert env.all_up() == []
    env.kv.Put(epb.PutRequest(key=b"after-unmarshal-errors", value=b"v"), timeout=10)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_unknown_lease(env: Env) -> None:
    _is(_err(lambda: env.kv.Put(epb.PutRequest(key=b"lk", value=b"v", lease=0x7EADBEEF), timeout=10)), "lease_not_found")
    _is(_err(lambda: env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=0x7EADBEEF), timeout=10)), "lease_not_found")
    ttl = env.lease.LeaseTimeToLive(epb.LeaseTimeToLiveRequest(ID=0x7EADBEEF), timeout=10)
    assert ttl.TTL == -1  # etcd answers an unknown lease's TTL with -1


def test_negative_and_huge_ttl(env: Env) -> None:
    _is(_err(lambda: env.lease.LeaseGrant(epb.LeaseGrantRequest(TTL=9_000_000_001), timeout=10)), "lease_ttl_too_large")
    # etcd raises a TTL below its minimum (here: negative) to the minimum.
    g = env.lease.LeaseGrant(epb.LeaseGrantRequest(TTL=-5), timeout=10)
    assert g.ID and g.TTL > 0
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=g.ID), timeout=10)


def test_many_watchers_and_one_that_never_reads(env: Env) -> None:
    rss0 = env.rss_kib()
    # 2000 watchers on one stream: each created (or refused clearly), the router up.
    q: queue.Queue[epb.WatchRequest | None] = queue.Queue()
    n = 2000
    for i in range(n):
        q.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=f"w/{i}".encode())))

    def reqs() -> Iterator[epb.WatchRequest]:
        while (item := q.get()) is not None:
            yield item

    stream = env.watch.Watch(reqs(), timeout=60)
    created = 0
    for resp in stream:
        assert resp.created or resp.canceled, resp
        created += 1
        if created == n:
            break
    q.put(None)
    stream.cancel()
    # A watcher that never reads while 20 MiB flow through its prefix.
    q2: queue.Queue[epb.WatchRequest | None] = queue.Queue()
    q2.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=b"slow/", range_end=b"slow0")))

    def reqs2() -> Iterator[epb.WatchRequest]:
        while (item := q2.get()) is not None:
            yield item

    slow = env.watch.Watch(reqs2(), timeout=120)
    first = next(slow)
    assert first.created
    value = b"s" * (200 * 1024)
    for i in range(100):
        env.kv.Put(epb.PutRequest(key=f"slow/{i % 10}".encode(), value=value), timeout=20)
    rss1 = env.rss_kib()
    q2.put(None)
    slow.cancel()
    assert env.all_up() == []
    assert rss1 - rss0 < 200 * 1024, f"router RSS grew {(rss1 - rss0) // 1024} MiB"
    env.kv.Put(epb.PutRequest(key=b"after-watch", value=b"v"), timeout=10)
