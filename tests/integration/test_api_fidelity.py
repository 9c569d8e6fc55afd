"""etcd API fidelity found by third-party clients (issue #17), with real
processes: 3 placement servers, 3 store nodes, 4 shards, two routers
following placement (flotilla/cluster.py), etcd's stubs (grpcio).

- A read on a never-written shard shows the cluster's revision (etcd's
  header revision, never 0 after the first write), and a watch from it + 1
  sees the next write.
- After a cluster-wide compaction, new watches with no start revision (one
  key on every shard, a prefix) start and wait, and see later writes.
- Maintenance.Hash: one hash of the whole key space, equal through both
  routers; Maintenance.Alarm ACTIVATE with memberID 0 and with the router's
  own member id (MemberList's)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster
from flotilla.router_main import RouterProcess
from flotilla.storecluster import wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

pytestmark = pytest.mark.integration

SHARDS = 4


class Client:
    def __init__(self, router: RouterProcess) -> None:
        self.channel = grpc.insecure_channel(router.address)
        self.kv = eg.KVStub(self.channel)
        self.watch = eg.WatchStub(self.channel)
        self.maint = eg.MaintenanceStub(self.channel)
        self.cluster = eg.ClusterStub(self.channel)


class Env:
    def __init__(self, cluster: Cluster, r1: RouterProcess, r2: RouterProcess) -> None:
        self.cluster = cluster
        self.a = Client(r1)
        self.b = Client(r2)

    def key(self, shard: int, prefix: str) -> bytes:
        return self.cluster.stores.key_in(shard, prefix)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("fidelity")
    cluster = Cluster(tmp, initial_shards=SHARDS, down_after_s=300)
    routers: list[RouterProcess] = []
    try:
        cluster.start()
        cluster.wait_bootstrapped()
        join = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)
        for i in (1, 2):
            r = RouterProcess(tmp, ["-v", "--placement", join, "--node-id", str(1000 + i), "--name", f"router{i}"], name=f"router{i}")
            r.start()
            routers.append(r)
        e = Env(cluster, *routers)
        for c in (e.a, e.b):
            wait_until(lambda c=c: _ok(lambda: c.kv.Range(epb.RangeRequest(key=b"warmup"), timeout=5)), timeout=30, what="router serving")
        yield e
        e.a.channel.close()
        e.b.channel.close()
    finally:
        for r in routers:
            r.stop()
            print(f"--- {r.name} log tail ---\n{r.log_tail(30)}")
        print(cluster.logs())
        cluster.stop()


def _ok(fn: object) -> bool:
    try:
        fn()  # type: ignore[operator]
        return True
    except grpc.RpcError:
        return False


class WatchStream:
    """One client Watch stream: requests sent from a queue, responses read with a deadline."""

    def __init__(self, c: Client) -> None:
        self._requests: queue.Queue[epb.WatchRequest | None] = queue.Queue()
        self.responses: queue.Queue[epb.WatchResponse | None] = queue.Queue()
        self._call = c.watch.Watch(iter(self._requests.get, None), timeout=120)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for r in self._call:
                self.responses.put(r)
        except grpc.RpcError:
            pass
        self.responses.put(None)

    def create(self, **kw: object) -> None:
        self._requests.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(**kw)))  # type: ignore[arg-type]

    def next(self, timeout: float = 20) -> epb.WatchResponse:
        r = self.responses.get(timeout=timeout)
        assert r is not None, "the watch stream ended"
        return r

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()


def test_a_read_on_a_never_written_shard_shows_the_clusters_revision(env: Env) -> None:
    # First in the module: shard 2 has never been written.
    written = env.key(1, "rev/written-")
    fresh = env.key(2, "rev/fresh-")
    w = env.a.kv.Put(epb.PutRequest(key=written, value=b"x"), timeout=10).header.revision
    assert w > 0
    first = env.a.kv.Range(epb.RangeRequest(key=fresh), timeout=10)
    assert not first.kvs and first.header.revision > 0  # etcd: never 0 after the first write (make-mirror panics on 0)
    # Once shard 2 has closed the write's revision, the read shows the cluster's current revision, as etcd's does.
    wait_until(
        lambda: env.a.kv.Range(epb.RangeRequest(key=fresh), timeout=10).header.revision >= w, timeout=10, what="the cluster's revision"
    )
    # The other router, which never saw the write, answers a nonzero revision too.
    assert env.b.kv.Range(epb.RangeRequest(key=fresh), timeout=10).header.revision > 0

    # What a client does with it: watch from header.revision + 1, and see the next write to what it read.
    h = env.a.kv.Range(epb.RangeRequest(key=fresh), timeout=10).header.revision
    ws = WatchStream(env.a)
    try:
        ws.create(key=fresh, start_revision=h + 1)
        assert ws.next().created
        put = env.b.kv.Put(epb.PutRequest(key=fresh, value=b"y"), timeout=10).header.revision
        got = ws.next()
        assert [(e.kv.key, e.kv.value, e.kv.mod_revision) for e in got.events] == [(fresh, b"y", put)]
        assert put > h
    finally:
        ws.close()
    # And a read at the header's revision is the state it read.
    assert not env.a.kv.Range(epb.RangeRequest(key=fresh, revision=h), timeout=10).kvs


def test_watches_from_now_start_and_wait_after_a_compaction(env: Env) -> None:
    one = env.key(3, "cw/one-")
    r = 0
    for i in range(3):
        r = env.a.kv.Put(epb.PutRequest(key=one, value=b"%d" % i), timeout=10).header.revision
    env.a.kv.Compact(epb.CompactionRequest(revision=r), timeout=20)  # every shard, most with no write above r
    keys = [env.key(s, "cw/k-") for s in range(1, SHARDS + 1)]
    ws = WatchStream(env.a)
    try:
        for k in keys:
            ws.create(key=k)
        ws.create(key=b"cw/", range_end=b"cw0")
        created = [ws.next() for _ in range(len(keys) + 1)]
        assert all(c.created and not c.canceled for c in created), created
        ids = {c.watch_id for c in created}
        for k in keys:
            env.a.kv.Put(epb.PutRequest(key=k, value=b"after"), timeout=10)
        seen: dict[int, list[bytes]] = {}
        while sum(len(v) for v in seen.values()) < 2 * len(keys):
            resp = ws.next()
            assert not resp.canceled, f"watch {resp.watch_id} canceled: compact_revision={resp.compact_revision} {resp.cancel_reason!r}"
            assert resp.watch_id in ids
            seen.setdefault(resp.watch_id, []).extend(e.kv.key for e in resp.events)
        for c, k in zip(created, keys):  # created in the order asked
            assert seen.get(c.watch_id) == [k], seen
        assert sorted(seen.get(created[-1].watch_id, [])) == sorted(keys), seen
    finally:
        ws.close()


def test_hash_is_one_keyspace_hash_equal_through_every_router(env: Env) -> None:
    env.a.kv.Put(epb.PutRequest(key=env.key(4, "h/"), value=b"1"), timeout=10)

    def both() -> tuple[int, int]:
        return env.a.maint.Hash(epb.HashRequest(), timeout=20).hash, env.b.maint.Hash(epb.HashRequest(), timeout=20).hash

    ha, hb = both()
    assert ha == hb != 0
    rev = env.a.kv.Range(epb.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True), timeout=10).header.revision
    kva = env.a.maint.HashKV(epb.HashKVRequest(revision=rev), timeout=20)
    kvb = env.b.maint.HashKV(epb.HashKVRequest(revision=rev), timeout=20)
    assert kva.hash == kvb.hash and kva.hash_revision == kvb.hash_revision == rev
    assert kva.hash == ha  # no write since: Hash is HashKV of the whole key space now
    env.b.kv.Put(epb.PutRequest(key=env.key(1, "h/"), value=b"2"), timeout=10)
    ha2, hb2 = both()
    assert ha2 == hb2 != ha


def test_alarm_accepts_member_zero_and_the_routers_own_member_id(env: Env) -> None:
    members = env.a.cluster.MemberList(epb.MemberListRequest(), timeout=10).members
    own = env.a.maint.Status(epb.StatusRequest(), timeout=10).header.member_id
    assert own in {m.ID for m in members}
    stores = sorted(env.cluster.stores.nodes)

    def listed() -> list[tuple[int, int]]:
        return sorted((a.memberID, a.alarm) for a in env.a.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.GET), timeout=10).alarms)

    assert listed() == []
    try:
        for member in (0, own):
            r = env.a.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=member, alarm=epb.NOSPACE), timeout=10)
            assert sorted(a.memberID for a in r.alarms) == stores and {a.alarm for a in r.alarms} == {epb.NOSPACE}
            assert listed() == [(n, epb.NOSPACE) for n in stores]
            r = env.a.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=member, alarm=epb.NOSPACE), timeout=10)
            assert sorted(a.memberID for a in r.alarms) == stores
            assert listed() == []
        with pytest.raises(grpc.RpcError) as info:
            env.a.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=own + 12345, alarm=epb.NOSPACE), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == "etcdserver: member not found"
    finally:
        env.a.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=0, alarm=epb.NOSPACE), timeout=10)
    assert env.a.kv.Put(epb.PutRequest(key=b"after-alarm", value=b"ok"), timeout=10).header.revision > 0
