"""HashKV with real processes: 3 placement servers, 3 store nodes, a router
following placement (flotilla/cluster.py). The router's Maintenance.HashKV
answers one stable hash at a revision, with etcd's compact_revision and
hash_revision; `flotilla ctl hashkv` finds every shard's 3 replicas in
agreement after writes, overwrites, deletes and a compaction; and a replica
whose RocksDB was changed behind Raft's back (one value rewritten while its
process was stopped) is flagged, in its shard only."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from flotilla import ctl
from flotilla.cluster import Cluster
from flotilla.router_main import RouterProcess
from flotilla.storecluster import wait_until
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from raft.storage import open_db
from shard import keys, slots

pytestmark = pytest.mark.integration

SHARDS = 2


class Env:
    def __init__(self, cluster: Cluster, router: RouterProcess) -> None:
        self.cluster = cluster
        self.channel = grpc.insecure_channel(router.address)
        self.kv = eg.KVStub(self.channel)
        self.maint = eg.MaintenanceStub(self.channel)
        self.placement = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)

    def ctl_args(self, *argv: str) -> argparse.Namespace:
        p = argparse.ArgumentParser()
        ctl.add_arguments(p)
        return p.parse_args(["--endpoints", self.placement, "--timeout", "20", *argv])

    def ctl(self, *argv: str) -> tuple[int, Any]:
        """`flotilla ctl --endpoints <placement> -o json <argv>`, in process:
        (exit status, the JSON answer)."""
        data, _ = asyncio.run(ctl.run(self.ctl_args("-o", "json", *argv)))
        return (1 if data.get("mismatched_shards") else 0), data  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hashkv")
    # down_after: a store stopped by the test must not be repaired away meanwhile.
    cluster = Cluster(tmp, initial_shards=SHARDS, down_after_s=300)
    router: RouterProcess | None = None
    try:
        cluster.start()
        cluster.wait_bootstrapped()
        join = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)
        router = RouterProcess(tmp, ["-v", "--placement", join])
        router.start()
        e = Env(cluster, router)
        wait_until(lambda: _ok(lambda: e.kv.Range(epb.RangeRequest(key=b"warmup"), timeout=5)), timeout=30, what="router serving")
        yield e
        e.channel.close()
    finally:
        if router is not None:
            router.stop()
            print(f"--- router log tail ---\n{router.log_tail(30)}")
        print(cluster.logs())
        cluster.stop()


def _ok(fn: object) -> bool:
    try:
        fn()  # type: ignore[operator]
        return True
    except grpc.RpcError:
        return False


def test_replicas_agree_then_a_tampered_replica_is_found(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    stores = env.cluster.stores
    keyset = [stores.key_in(1 + i % SHARDS, f"hk/{i}-") for i in range(20)]
    revs = {}
    for round_ in range(3):
        for k in keyset:
            revs[k] = env.kv.Put(epb.PutRequest(key=k, value=b"v%d" % round_), timeout=10).header.revision
    env.kv.DeleteRange(epb.DeleteRangeRequest(key=keyset[0]), timeout=10)
    compact_at = max(revs.values())
    env.kv.Compact(epb.CompactionRequest(revision=compact_at), timeout=10)
    victim_shard = 1
    tamper_key = stores.key_in(victim_shard, "hk/tamper-")
    tamper_rev = env.kv.Put(epb.PutRequest(key=tamper_key, value=b"original"), timeout=10).header.revision

    # The router: one hash at a revision, the same when asked again.
    a = env.maint.HashKV(epb.HashKVRequest(revision=tamper_rev), timeout=20)
    b = env.maint.HashKV(epb.HashKVRequest(revision=tamper_rev), timeout=20)
    assert a.hash == b.hash and a.hash_revision == tamper_rev == a.header.revision
    assert a.compact_revision == compact_at
    newest = env.maint.HashKV(epb.HashKVRequest(), timeout=20)
    assert newest.hash_revision >= tamper_rev
    with pytest.raises(grpc.RpcError) as info:
        env.maint.HashKV(epb.HashKVRequest(revision=compact_at - 1), timeout=20)
    assert info.value.details() == "etcdserver: mvcc: required revision has been compacted"

    # Every shard's replicas agree.
    status, data = env.ctl("hashkv")
    rows = data["replicas"]
    assert status == 0 and data["mismatched_shards"] == [], rows
    assert sorted({r["shard"] for r in rows}) == list(range(1, SHARDS + 1))
    assert all(r.get("hash") is not None and not r["mismatch"] for r in rows), rows
    assert len(rows) == 3 * SHARDS

    # A follower of one shard gets one value rewritten behind Raft's back.
    m = env.cluster.get_map()
    d = next(s.descriptor for s in m.shards if s.descriptor.shard_id == victim_shard)
    follower = next(r.node_id for r in d.replicas if r.node_id != d.leader_node_id)
    stores.kill(follower, signal.SIGTERM)
    db = open_db(stores.nodes[follower].data_dir / "db")
    try:
        skey = keys.mvcc_key(slots.slot_of(tamper_key, env.cluster.slot_count), tamper_key, tamper_rev)
        raw = db.get(skey)
        assert raw is not None, "the put's version is not where shard/keys.py says"
        rec = keys.decode_mvcc(bytes(raw))
        assert rec.value == b"original"
        db[skey] = keys.encode_mvcc(dataclasses.replace(rec, value=b"tampered"))
    finally:
        db.close()
    stores.restart(follower)

    def flagged() -> Any:
        status, data = env.ctl("hashkv")
        return data if status == 1 and data["mismatched_shards"] == [victim_shard] else None

    data = wait_until(flagged, timeout=60, what="the tampered replica flagged")
    bad = [(r["shard"], r["node"]) for r in data["replicas"] if r.get("mismatch")]
    assert bad == [(victim_shard, follower)], data["replicas"]
    assert ctl.main(env.ctl_args("hashkv")) == 1  # the command's exit status says so too
    out = capsys.readouterr().out
    assert f"replicas differ in shard(s) {victim_shard}" in out and "MISMATCH" in out
    # The router's HashKV asks the shard leaders: unchanged while the tampered replica does not lead.
    now = next(s.descriptor for s in env.cluster.get_map().shards if s.descriptor.shard_id == victim_shard)
    if now.leader_node_id != follower:
        assert env.maint.HashKV(epb.HashKVRequest(revision=tamper_rev), timeout=20).hash == a.hash
