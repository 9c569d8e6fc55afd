"""The Lock and Election services (issue #15) on a real cluster (3
placement servers, 3 stores, 4 shards) through a router process, driven by
the generated v3lockpb/v3electionpb stubs as etcd's client libraries call
them: holders queue by create revision and hand over on unlock, resign or
the end of a lease; Observe streams each leader's proclamations in order;
the errors carry etcd's texts."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from flotillapb.etcd.v3electionpb import v3election_pb2 as elpb
from flotillapb.etcd.v3electionpb import v3election_pb2_grpc as elg
from flotillapb.etcd.v3lockpb import v3lock_pb2 as lkpb
from flotillapb.etcd.v3lockpb import v3lock_pb2_grpc as lkg
from tests.integration.routerproc import Router

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, router: Router) -> None:
        self.router = router
        ch = router.channel
        self.kv = router.kv
        self.lease = eg.LeaseStub(ch)
        self.lock = lkg.LockStub(ch)
        self.election = elg.ElectionStub(ch)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def grant(self, ttl: int = 30) -> int:
        return int(self.lease.LeaseGrant(epb.LeaseGrantRequest(TTL=ttl), timeout=10).ID)

    def keys(self, prefix: bytes) -> list[bytes]:
        r = self.kv.Range(epb.RangeRequest(key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1])), timeout=10)
        return [kv.key for kv in r.kvs]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("lockelection")
    with running(Cluster(tmp)) as c:
        router = Router(c, tmp / "router")
        try:
            wait_until(lambda: router.put(b"warm", b"1") or True, timeout=60, what="the router writes")
            e = Env(router)
            yield e
            e.pool.shutdown(wait=False, cancel_futures=True)
        except BaseException:
            print(router.proc.log_tail(80))
            raise
        finally:
            router.stop()


def test_lock_queues_holders_and_hands_over_on_unlock(env: Env) -> None:
    la, lb = env.grant(), env.grant()
    first = env.lock.Lock(lkpb.LockRequest(name=b"locks/a", lease=la), timeout=30)
    assert first.key == b"locks/a/%x" % la and first.header.revision > 0
    second = env.pool.submit(env.lock.Lock, lkpb.LockRequest(name=b"locks/a", lease=lb), timeout=30)
    # The second waits: its key exists (queued) but the lock is not given.
    wait_until(lambda: b"locks/a/%x" % lb in env.keys(b"locks/a/"), timeout=20, what="the second holder queued")
    assert not second.done()
    env.lock.Unlock(lkpb.UnlockRequest(key=first.key), timeout=10)
    got = second.result(timeout=20)
    assert got.key == b"locks/a/%x" % lb
    assert env.keys(b"locks/a/") == [got.key]
    env.lock.Unlock(lkpb.UnlockRequest(key=got.key), timeout=10)
    assert env.keys(b"locks/a/") == []


def test_lock_is_handed_over_when_the_holders_lease_ends(env: Env) -> None:
    la, lb = env.grant(), env.grant()
    env.lock.Lock(lkpb.LockRequest(name=b"locks/b", lease=la), timeout=30)
    second = env.pool.submit(env.lock.Lock, lkpb.LockRequest(name=b"locks/b", lease=lb), timeout=30)
    wait_until(lambda: len(env.keys(b"locks/b/")) == 2, timeout=20, what="the second holder queued")
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=la), timeout=10)
    assert second.result(timeout=30).key == b"locks/b/%x" % lb


def test_lock_with_a_lease_that_does_not_exist_is_refused(env: Env) -> None:
    with pytest.raises(grpc.RpcError) as info:
        env.lock.Lock(lkpb.LockRequest(name=b"locks/c", lease=0x7EADBEEF), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert info.value.details() == "etcdserver: requested lease not found"  # type: ignore[attr-defined]


def test_election_campaign_observe_proclaim_resign(env: Env) -> None:
    with pytest.raises(grpc.RpcError) as info:
        env.election.Leader(elpb.LeaderRequest(name=b"el/x"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNKNOWN and info.value.details() == "election: no leader"  # type: ignore[attr-defined]

    la, lb = env.grant(), env.grant()
    a = env.election.Campaign(elpb.CampaignRequest(name=b"el/x", lease=la, value=b"a1"), timeout=30).leader
    assert (a.name, a.key, a.lease) == (b"el/x", b"el/x/%x" % la, la) and a.rev > 0
    assert env.election.Leader(elpb.LeaderRequest(name=b"el/x"), timeout=10).kv.value == b"a1"

    seen: queue.Queue[bytes] = queue.Queue()
    observe = env.election.Observe(elpb.LeaderRequest(name=b"el/x"), timeout=60)

    def read() -> None:
        try:
            for resp in observe:
                seen.put(resp.kv.value)
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()
    assert seen.get(timeout=20) == b"a1"

    b_campaign = env.pool.submit(env.election.Campaign, elpb.CampaignRequest(name=b"el/x", lease=lb, value=b"b1"), timeout=30)
    wait_until(lambda: len(env.keys(b"el/x/")) == 2, timeout=20, what="the second campaigner queued")
    assert not b_campaign.done()

    env.election.Proclaim(elpb.ProclaimRequest(leader=a, value=b"a2"), timeout=10)
    assert seen.get(timeout=20) == b"a2"

    env.election.Resign(elpb.ResignRequest(leader=a), timeout=10)
    b = b_campaign.result(timeout=20).leader
    assert b.key == b"el/x/%x" % lb
    assert seen.get(timeout=20) == b"b1"
    assert env.election.Leader(elpb.LeaderRequest(name=b"el/x"), timeout=10).kv.value == b"b1"

    # The old leadership is gone: proclaiming with it is refused.
    with pytest.raises(grpc.RpcError) as info:
        env.election.Proclaim(elpb.ProclaimRequest(leader=a, value=b"late"), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNKNOWN and info.value.details() == "election: not leader"  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        env.election.Proclaim(elpb.ProclaimRequest(value=b"x"), timeout=10)
    assert info.value.details() == '"leader" field must be provided'  # type: ignore[attr-defined]
    observe.cancel()


def test_a_campaign_with_the_leaders_lease_proclaims_its_new_value(env: Env) -> None:
    """Campaigning again with the lease that leads (etcd's resume) keeps the
    leadership and proclaims the new value."""
    la = env.grant()
    first = env.election.Campaign(elpb.CampaignRequest(name=b"el/y", lease=la, value=b"v1"), timeout=30).leader
    again = env.election.Campaign(elpb.CampaignRequest(name=b"el/y", lease=la, value=b"v2"), timeout=30).leader
    assert again.rev == first.rev
    assert env.election.Leader(elpb.LeaderRequest(name=b"el/y"), timeout=10).kv.value == b"v2"


def _txn_put_and_read_prefix(key: bytes, prefix: bytes) -> epb.TxnRequest:
    """etcd Mutex's shape: create key if absent and read the prefix's first holder."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    first = epb.RangeRequest(key=prefix, range_end=end, sort_target=epb.RangeRequest.CREATE, sort_order=epb.RangeRequest.ASCEND, limit=1)
    count = epb.RangeRequest(key=prefix, range_end=end, count_only=True)
    return epb.TxnRequest(
        compare=[epb.Compare(key=key, target=epb.Compare.CREATE, result=epb.Compare.EQUAL, create_revision=0)],
        success=[epb.RequestOp(request_put=epb.PutRequest(key=key, value=b"n")), epb.RequestOp(request_range=first), epb.RequestOp(request_range=count)],
        failure=[epb.RequestOp(request_range=epb.RangeRequest(key=prefix, range_end=end))],
    )


def test_a_txn_whose_ranges_reach_other_shards_reads_them_at_its_revision(env: Env) -> None:
    """Writes stay on the home shard; the ranges are completed from every
    shard at the txn's revision: the first-created key and the count cover
    keys on all shards, and a later write is not seen."""
    for i in range(20):
        env.kv.Put(epb.PutRequest(key=b"tx/k%02d" % i, value=b"v"), timeout=10)
    resp = env.kv.Txn(_txn_put_and_read_prefix(b"tx/new", b"tx/"), timeout=10)
    assert resp.succeeded
    assert [kv.key for kv in resp.responses[1].response_range.kvs] == [b"tx/k00"]
    assert resp.responses[1].response_range.more and resp.responses[2].response_range.count == 21
    assert resp.header.revision == env.kv.Range(epb.RangeRequest(key=b"tx/new"), timeout=10).kvs[0].mod_revision

    # The failure branch only reads: it must still see every write that was
    # acknowledged before it began, on every shard (not the home shard's old revision).
    # (Eight late keys: some land on another shard than tx/new's.)
    late = [b"tx/late%d" % i for i in range(8)]
    for k in late:
        env.kv.Put(epb.PutRequest(key=k, value=b"v"), timeout=10)
    again = env.kv.Txn(_txn_put_and_read_prefix(b"tx/new", b"tx/"), timeout=10)
    assert not again.succeeded
    keys = [kv.key for kv in again.responses[0].response_range.kvs]
    assert keys == sorted([b"tx/k%02d" % i for i in range(20)] + late + [b"tx/new"])
    newest = max(env.kv.Range(epb.RangeRequest(key=k), timeout=10).kvs[0].mod_revision for k in late)
    assert again.header.revision >= newest


def test_a_txn_whose_writes_span_shards_applies_them_at_one_revision(env: Env) -> None:
    keys = [b"span/%d" % i for i in range(16)]
    txn = epb.TxnRequest(success=[epb.RequestOp(request_put=epb.PutRequest(key=k, value=b"v")) for k in keys])
    resp = env.kv.Txn(txn, timeout=10)
    assert resp.succeeded
    revs = {env.kv.Range(epb.RangeRequest(key=k), timeout=10).kvs[0].mod_revision for k in keys}
    assert revs == {resp.header.revision}


async def test_a_keep_alive_sent_before_a_revoke_is_answered_first(env: Env) -> None:
    """etcd's leader answers a lease's keep-alive and revoke in the order it
    received them: a keep-alive written on the stream (the write completed)
    before LeaseRevoke is sent on the same connection is answered with the
    lease's full TTL, 10 times out of 10 (the router used to let the revoke
    overtake it about half the time: TTL 0)."""
    async with grpc.aio.insecure_channel(env.router.proc.address) as channel:
        lease_stub = eg.LeaseStub(channel)
        for _ in range(10):
            lease = (await lease_stub.LeaseGrant(epb.LeaseGrantRequest(TTL=60), timeout=10)).ID
            call = lease_stub.LeaseKeepAlive(timeout=30)
            await call.write(epb.LeaseKeepAliveRequest(ID=lease))
            await lease_stub.LeaseRevoke(epb.LeaseRevokeRequest(ID=lease), timeout=10)
            first = await call.read()
            call.cancel()
            assert first.ID == lease and first.TTL == 60, first


def _ttl_keys(env: Env, lease: int) -> list[bytes]:
    return list(env.lease.LeaseTimeToLive(epb.LeaseTimeToLiveRequest(ID=lease, keys=True), timeout=10).keys)


def _exists(env: Env, key: bytes) -> bool:
    return bool(env.kv.Range(epb.RangeRequest(key=key), timeout=10).kvs)


def test_a_txn_branch_that_did_not_run_leaves_the_key_on_its_lease(env: Env) -> None:
    """k is held under L1; If(create(k) = 0) Then(put k lease L2) fails its
    compare. k stays listed under L1 (and leaves L2's list), and revoking L1
    deletes it, as etcd does (the key used to move to L2 before the txn ran
    and was never deleted)."""
    l1, l2 = env.grant(), env.grant()
    env.kv.Put(epb.PutRequest(key=b"lz/k", value=b"v", lease=l1), timeout=10)
    txn = epb.TxnRequest(
        compare=[epb.Compare(key=b"lz/k", target=epb.Compare.CREATE, result=epb.Compare.EQUAL, create_revision=0)],
        success=[epb.RequestOp(request_put=epb.PutRequest(key=b"lz/k", value=b"w", lease=l2))],
    )
    assert not env.kv.Txn(txn, timeout=10).succeeded
    assert _ttl_keys(env, l1) == [b"lz/k"]
    wait_until(lambda: _ttl_keys(env, l2) == [], timeout=20, what="lease 2 no longer lists the key its txn did not put")
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=l2), timeout=10)
    assert _exists(env, b"lz/k")
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=l1), timeout=10)
    wait_until(lambda: not _exists(env, b"lz/k"), timeout=20, what="the key of the revoked lease deleted")


def test_a_txn_branch_that_ran_moves_the_key_to_its_lease(env: Env) -> None:
    l1, l2 = env.grant(), env.grant()
    env.kv.Put(epb.PutRequest(key=b"lz/m", value=b"v", lease=l1), timeout=10)
    txn = epb.TxnRequest(
        compare=[epb.Compare(key=b"lz/m", target=epb.Compare.CREATE, result=epb.Compare.GREATER, create_revision=0)],
        success=[epb.RequestOp(request_put=epb.PutRequest(key=b"lz/m", value=b"w", lease=l2))],
    )
    assert env.kv.Txn(txn, timeout=10).succeeded
    assert _ttl_keys(env, l2) == [b"lz/m"]
    wait_until(lambda: _ttl_keys(env, l1) == [], timeout=20, what="lease 1 no longer lists the moved key")
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=l1), timeout=10)
    assert _exists(env, b"lz/m")
    env.lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=l2), timeout=10)
    wait_until(lambda: not _exists(env, b"lz/m"), timeout=20, what="the key of the revoked lease deleted")
