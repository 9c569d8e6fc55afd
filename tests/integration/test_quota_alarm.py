"""The space quota and the NOSPACE alarm with real processes: 3 store nodes
started with a tiny --quota-backend-bytes, a router process, etcd's stubs
(grpcio). The stores fill up; a Put gets etcd's exact RESOURCE_EXHAUSTED
"etcdserver: mvcc: database space exceeded" through the router while
reads, deletes and compaction still work; the alarm list and Status show
NOSPACE per store node; after deleting, compacting and defragmenting, disarming
lets writes through again."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from flotilla.router_main import RouterProcess
from flotilla.storecluster import StoreCluster, wait_until
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg

pytestmark = pytest.mark.integration

SHARDS = 2
QUOTA = 4 * 1024 * 1024
VALUE_BYTES = 128 * 1024  # random, so RocksDB cannot compress it away
NOSPACE_TEXT = "etcdserver: mvcc: database space exceeded"


class Env:
    def __init__(self, stores: StoreCluster, router: RouterProcess) -> None:
        self.stores = stores
        self.channel = grpc.insecure_channel(router.address)
        self.kv = eg.KVStub(self.channel)
        self.maint = eg.MaintenanceStub(self.channel)

    def alarms(self) -> list[tuple[int, int]]:
        r = self.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.GET), timeout=10)
        return sorted((a.memberID, a.alarm) for a in r.alarms)

    def used(self) -> dict[int, int]:
        out = {}
        for nid, n in self.stores.nodes.items():
            assert n.admin is not None
            out[nid] = n.admin.Alarm(spb.StoreAlarmRequest(action=epb.AlarmRequest.GET), timeout=10).used_bytes
        return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("quota")
    stores = StoreCluster(
        tmp,
        shards=SHARDS,
        extra_args=[
            "--quota-backend-bytes", str(QUOTA),
            "--space-check-ms", "50",
            # Short Raft logs, so deleted values leave the log soon too.
            "--snapshot-entries", "20",
            "--compaction-margin", "5",
        ],
    )
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
        for nid in stores.nodes:
            print(f"--- store {nid} ---\n{stores.log_tail(nid, 15)}")
        stores.stop()


def _ok(fn: object) -> bool:
    try:
        fn()  # type: ignore[operator]
        return True
    except grpc.RpcError:
        return False


def _refused(env: Env, key: bytes) -> grpc.RpcError | None:
    """The error of a 1-byte put of key if it was RESOURCE_EXHAUSTED, else None."""
    err = _put(env, key, b"x")
    return err if err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None


def _put(env: Env, key: bytes, value: bytes) -> grpc.RpcError | None:
    try:
        env.kv.Put(epb.PutRequest(key=key, value=value), timeout=15)
        return None
    except grpc.RpcError as exc:
        return exc


def test_fill_refuse_recover(env: Env) -> None:
    assert env.alarms() == []
    baseline = env.used()
    assert all(0 < u < QUOTA for u in baseline.values()), baseline

    # Fill until the stores refuse (bounded: 3x the quota's worth of values).
    refused: grpc.RpcError | None = None
    written: list[bytes] = []
    for i in range(3 * QUOTA // VALUE_BYTES):
        key = b"big/%03d" % i
        refused = _put(env, key, os.urandom(VALUE_BYTES))
        if refused is not None:
            break
        written.append(key)
    assert refused is not None, f"never refused after {len(written)} puts; used {env.used()}"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    assert refused.details() == NOSPACE_TEXT
    assert written, "the first put was refused: the quota is below the baseline"
    print(f"baseline used {baseline}; {len(written)} puts of {VALUE_BYTES} bytes before NOSPACE; used {env.used()}")

    # The node that refused raised NOSPACE (the others hold the same replicas
    # and follow at their next measurement, or at their own refusal).
    alarms = env.alarms()
    members = {n for n, _ in alarms}
    assert alarms and members <= set(env.stores.nodes) and {a for _, a in alarms} == {epb.NOSPACE}, alarms
    status = env.maint.Status(epb.StatusRequest(), timeout=10)
    assert set(status.errors) >= {f"memberID:{n} alarm:NOSPACE " for n in members}
    assert status.dbSize >= QUOTA

    # A small put, and a txn with a put, are refused; reads, txns without puts,
    # deletes and compaction go through.
    # The leader of "small"'s shard may be another node, which learns the
    # NOSPACE from the side channel's next acknowledgement (static cluster: no
    # placement relays it).
    small = wait_until(lambda: _refused(env, b"small"), timeout=15, what="a small put refused once NOSPACE is raised")
    assert small.details() == NOSPACE_TEXT
    with pytest.raises(grpc.RpcError) as info:
        env.kv.Txn(epb.TxnRequest(success=[epb.RequestOp(request_put=epb.PutRequest(key=b"big/000", value=b"y"))]), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.details() == NOSPACE_TEXT
    got = env.kv.Range(epb.RangeRequest(key=b"big/", range_end=b"big0", count_only=True), timeout=10)
    assert got.count == len(written)
    t = env.kv.Txn(epb.TxnRequest(success=[epb.RequestOp(request_range=epb.RangeRequest(key=written[0]))]), timeout=10)
    assert t.succeeded and t.responses[0].response_range.kvs[0].key == written[0]
    d = env.kv.DeleteRange(epb.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=15)
    assert d.deleted == len(written)
    env.kv.Compact(epb.CompactionRequest(revision=d.header.revision, physical=True), timeout=15)

    # The alarm stays until disarmed, even with the data gone.
    assert {n for n, _ in env.alarms()} >= members
    assert _put(env, b"small", b"x") is not None

    # Defragment (flush + compact), disarm, and writes go through again. The
    # Raft logs still hold the deleted values until their next snapshot, so a
    # node may raise NOSPACE again at first: repeat until it stays disarmed.
    def recovered() -> bool:
        env.maint.Defragment(epb.DefragmentRequest(), timeout=60)
        listed = env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.GET), timeout=10).alarms
        for a in listed:
            r = env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=a.memberID, alarm=a.alarm), timeout=10)
            assert [(m.memberID, m.alarm) for m in r.alarms] in ([(a.memberID, a.alarm)], [])
        return _put(env, b"small", b"after") is None

    wait_until(recovered, timeout=90, what=f"writes accepted again after defragment + disarm (used {env.used()})")
    print(f"after defragment and disarm: used {env.used()}")
    assert all(u < QUOTA for u in env.used().values())
    assert env.kv.Range(epb.RangeRequest(key=b"small"), timeout=10).kvs[0].value == b"after"
    wait_until(lambda: env.alarms() == [], timeout=20, what="no alarm left")


def test_activate_and_disarm_by_hand(env: Env) -> None:
    """ACTIVATE arms NOSPACE on the member named (as etcd's Alarm does);
    DEACTIVATE with member 0 disarms it everywhere."""
    nid = min(env.stores.nodes)
    r = env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=nid, alarm=epb.NOSPACE), timeout=10)
    assert [(a.memberID, a.alarm) for a in r.alarms] == [(nid, epb.NOSPACE)]
    assert env.alarms() == [(nid, epb.NOSPACE)]
    with pytest.raises(grpc.RpcError) as info:
        env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=999, alarm=epb.NOSPACE), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.details() == "etcdserver: member not found"
    r = env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=0, alarm=epb.NOSPACE), timeout=10)
    assert [(a.memberID, a.alarm) for a in r.alarms] == [(nid, epb.NOSPACE)]
    assert env.alarms() == []


def test_nospace_on_a_follower_refuses_writes_its_leader_takes(env: Env) -> None:
    """etcd refuses growing writes everywhere while any member has NOSPACE. A
    shard led elsewhere with a replica on the full node refuses them too: with
    no placement to relay the alarm (this cluster is static), the full node's
    side-channel acknowledgements carry it to the leader; once disarmed, the
    leader takes writes again."""
    leaders = wait_until(env.stores.all_shards_led, timeout=30, what="a leader for every shard")
    sid, leader = min(leaders.items())
    nid = min(n for n in env.stores.nodes if n != leader)
    key = env.stores.key_in(sid, "nospace/")
    assert _put(env, key, b"before") is None
    env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.ACTIVATE, memberID=nid, alarm=epb.NOSPACE), timeout=10)
    try:
        err = wait_until(lambda: _refused(env, key), timeout=15, what=f"shard {sid} (led by {leader}) refusing a put while node {nid} has NOSPACE")
        assert err.details() == NOSPACE_TEXT
        assert env.stores.leaders().get(sid) == leader, "the shard's leader moved to the full node: the test proves nothing"
    finally:
        env.maint.Alarm(epb.AlarmRequest(action=epb.AlarmRequest.DEACTIVATE, memberID=0, alarm=epb.NOSPACE), timeout=10)
    wait_until(lambda: _put(env, key, b"after") is None, timeout=15, what=f"shard {sid} taking writes again once NOSPACE is disarmed")
