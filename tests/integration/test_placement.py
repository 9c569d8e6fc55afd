"""The placement group with real processes: 3 placement servers on 127.0.0.1
(port 0), real gRPC and RocksDB. Store nodes are played by the test: it
registers three fake ones and sends their heartbeats. One cluster serves the
whole module; the kill -9 of the leader runs last."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from flotilla.placementcluster import PlacementCluster, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb

pytestmark = pytest.mark.integration

DOWN_AFTER_S = 2.0
STORES = {101: "z1", 102: "z2", 103: "z3"}
MIN_TTL_S = 2  # etcd's rule for --tick-ms 100 --election-ticks 10: ceil((3*10//2) * 100 ms)


class Heartbeater:
    """Plays the store nodes' heartbeat loops: every 0.25 s, one heartbeat per
    node in `alive` to whichever server leads (errors ignored: it just
    tries again, as a store node would)."""

    def __init__(self, cluster: PlacementCluster) -> None:
        self.cluster = cluster
        self.alive: set[int] = set()
        self.routers: dict[int, tuple[int, ...]] = {}
        """The routers inside a node's process, named in its heartbeats."""
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.25):  # sleep-ok: the pace of a periodic sender, not synchronization
            for nid in list(self.alive):
                for pid in self.cluster.live():
                    try:
                        req = ppb.StoreHeartbeatRequest(node_id=nid, routers=self.routers.get(nid, ()))
                        self.cluster.stub(pid).StoreHeartbeat(req, timeout=2)
                        break
                    except grpc.RpcError:
                        continue

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


class MapWatcher:
    """Reads a WatchMap stream in a thread and rebuilds the map from it."""

    def __init__(self, stub: Any) -> None:
        self.call = stub.WatchMap(ppb.WatchMapRequest())
        self.responses: list[ppb.WatchMapResponse] = []
        self.version = 0
        self.cluster_id = 0
        self.nodes: dict[int, ppb.NodeInfo] = {}
        self.shards: dict[int, ppb.ShardInfo] = {}
        self.error: grpc.RpcError | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for resp in self.call:
                with self.lock:
                    self.responses.append(resp)
                    assert resp.map_version >= self.version, "map versions never go back"
                    self.version = resp.map_version
                    if resp.HasField("full"):
                        self.cluster_id = resp.full.cluster_id
                        self.nodes = {n.node_id: n for n in resp.full.nodes}
                        self.shards = {s.descriptor.shard_id: s for s in resp.full.shards}
                    for n in resp.nodes:
                        self.nodes[n.node_id] = n
                    for s in resp.shards:
                        self.shards[s.descriptor.shard_id] = s
                    for sid in resp.removed_shards:
                        self.shards.pop(sid, None)
        except grpc.RpcError as exc:
            self.error = exc

    def matches(self, m: ppb.ClusterMap) -> bool:
        with self.lock:
            return (
                self.version == m.map_version
                and self.cluster_id == m.cluster_id
                and self.nodes == {n.node_id: n for n in m.nodes}
                and self.shards == {s.descriptor.shard_id: s for s in m.shards}
            )

    def stop(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlacementCluster]:
    c = PlacementCluster(tmp_path_factory.mktemp("placement"), extra_args=["--down-after", str(DOWN_AFTER_S)])
    try:
        c.start()
        c.wait_leader()
        yield c
    except BaseException:
        print(c.all_logs())
        raise
    finally:
        c.stop()


@pytest.fixture(scope="module")
def heartbeats(cluster: PlacementCluster) -> Iterator[Heartbeater]:
    hb = Heartbeater(cluster)
    yield hb
    hb.stop()


def a_follower(cluster: PlacementCluster) -> int:
    leader = cluster.wait_leader()
    return next(nid for nid in cluster.live() if nid != leader)


def node_state(m: ppb.ClusterMap, nid: int) -> int:
    return next(n.state for n in m.nodes if n.node_id == nid)


def test_bootstrap_registration_and_map_watch(cluster: PlacementCluster, heartbeats: Heartbeater) -> None:
    follower = a_follower(cluster)
    watcher = MapWatcher(cluster.stub(follower))  # followers answer map reads and watches
    try:
        wait_until(lambda: watcher.responses, timeout=10, what="the first watch response")
        first = watcher.responses[0]
        assert first.HasField("full") and first.full.cluster_id == 0 and first.map_version == 0

        for nid, zone in STORES.items():
            r = cluster.call(
                "RegisterNode",
                ppb.RegisterNodeRequest(node_id=nid, kind=ppb.STORE, address=f"127.0.0.1:{20000 + nid}", labels=[ppb.Label(key="zone", value=zone)]),
            )
            assert r.node_id == nid
            heartbeats.alive.add(nid)
        router = cluster.call("RegisterNode", ppb.RegisterNodeRequest(kind=ppb.ROUTER, address="127.0.0.1:30000"))
        heartbeats.alive.add(router.node_id)

        boot = cluster.call("Bootstrap", ppb.BootstrapRequest(initial_shards=6))
        assert not boot.already_bootstrapped
        m = boot.map
        assert m.cluster_id != 0 and m.slot_count == 1024 and len(m.shards) == 6
        covered = sorted((r.start, r.end) for s in m.shards for r in s.descriptor.slots)
        assert covered[0][0] == 0 and covered[-1][1] == 1024
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:])), "every slot exactly once"
        for s in m.shards:
            ids = [r.node_id for r in s.descriptor.replicas]
            assert sorted(ids) == sorted(STORES), "3 replicas on distinct store nodes (one per zone)"
            assert all(r.address == f"127.0.0.1:{20000 + r.node_id}" for r in s.descriptor.replicas)
        again = cluster.call("Bootstrap", ppb.BootstrapRequest())
        assert again.already_bootstrapped and again.map.cluster_id == m.cluster_id

        # Epoch-gated shard reports: newer accepted, same refused.
        shard = m.shards[0].descriptor
        newer = spb.ShardDescriptor()
        newer.CopyFrom(shard)
        newer.epoch.conf_version += 1
        newer.leader_node_id = 102
        r = cluster.call("ReportShard", ppb.ReportShardRequest(descriptor=newer, term=4))
        assert r.outcome == ppb.ReportShardResponse.ACCEPTED and r.current.descriptor.leader_node_id == 102
        r = cluster.call("ReportShard", ppb.ReportShardRequest(descriptor=newer, term=4))
        assert r.outcome == ppb.ReportShardResponse.STALE
        r = cluster.call("ReportShard", ppb.ReportShardRequest(descriptor=shard, term=9))
        assert r.outcome == ppb.ReportShardResponse.STALE

        # The watcher on the follower saw the full map, then every change, and
        # ends with exactly the map the leader has.
        final = cluster.get_map(cluster.wait_leader(), linearizable=True)
        wait_until(lambda: watcher.matches(final), timeout=10, what="the watcher to reach the leader's map")
        versions = [resp.map_version for resp in watcher.responses]
        assert versions == list(range(versions[0], versions[-1] + 1)), "one response per map version, none missed"
        assert any(resp.HasField("full") and resp.full.cluster_id for resp in watcher.responses[1:]), "bootstrap sends the full map"
        assert watcher.error is None
        # a plain follower read returns the same map once applied there
        wait_until(lambda: cluster.get_map(follower) == final, timeout=10, what="the follower's map")
    finally:
        watcher.stop()


def test_silent_node_is_marked_down_then_up_again(cluster: PlacementCluster, heartbeats: Heartbeater) -> None:
    leader = cluster.wait_leader()
    heartbeats.alive.discard(103)
    t0 = time.monotonic()
    wait_until(lambda: node_state(cluster.get_map(leader), 103) == ppb.DOWN, timeout=15, what="node 103 marked down")
    assert time.monotonic() - t0 >= DOWN_AFTER_S * 0.5
    m = cluster.get_map(leader)
    assert node_state(m, 101) == ppb.UP and node_state(m, 102) == ppb.UP, "nodes that heartbeat stay up"
    heartbeats.alive.add(103)
    wait_until(lambda: node_state(cluster.get_map(leader), 103) == ppb.UP, timeout=15, what="node 103 up again")
    r = cluster.call("StoreHeartbeat", ppb.StoreHeartbeatRequest(node_id=103))
    assert r.state == ppb.UP
    with pytest.raises(grpc.RpcError) as err:
        cluster.call("StoreHeartbeat", ppb.StoreHeartbeatRequest(node_id=999))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_router_in_a_store_process_is_heard_with_the_store(cluster: PlacementCluster, heartbeats: Heartbeater) -> None:
    """A router named in a node's heartbeats (StoreHeartbeatRequest.routers)
    stays up without heartbeats of its own; a router nobody names, registered
    at the same time, is marked down; the named one too once it is no longer
    named, and up again when it is."""
    leader = cluster.wait_leader()
    inside = cluster.call("RegisterNode", ppb.RegisterNodeRequest(kind=ppb.ROUTER, address="127.0.0.1:30001")).node_id
    alone = cluster.call("RegisterNode", ppb.RegisterNodeRequest(kind=ppb.ROUTER, address="127.0.0.1:30002")).node_id
    heartbeats.routers[101] = (inside,)
    wait_until(lambda: node_state(cluster.get_map(leader), alone) == ppb.DOWN, timeout=15, what="the unnamed router marked down")
    assert node_state(cluster.get_map(leader), inside) == ppb.UP, "named in node 101's heartbeats, it is heard with them"
    del heartbeats.routers[101]
    wait_until(lambda: node_state(cluster.get_map(leader), inside) == ppb.DOWN, timeout=15, what="the router no longer named marked down")
    heartbeats.routers[101] = (inside,)
    heartbeats.alive.add(alone)  # the later tests want every node up (heard from then on)
    wait_until(lambda: node_state(cluster.get_map(leader), inside) == ppb.UP, timeout=15, what="the router named again up again")
    wait_until(lambda: node_state(cluster.get_map(leader), alone) == ppb.UP, timeout=15, what="the router heartbeating up again")


def leader_status(cluster: PlacementCluster) -> ppb.StatusResponse:
    return cluster.status(cluster.wait_leader())


def ttl_of(cluster: PlacementCluster, lease_id: int, keys: bool = False) -> epb.LeaseTimeToLiveResponse:
    return cluster.call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lease_id, keys=keys))


def test_leases_grant_keepalive_expire_revoke(cluster: PlacementCluster) -> None:
    # TTL clamping to etcd's minimum, and etcd's errors.
    short = cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=1))
    assert short.ID > 0 and short.TTL == MIN_TTL_S
    kept = cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=3, ID=0x1234))
    assert kept.ID == 0x1234 and kept.TTL == 3
    granted_at = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=3, ID=0x1234))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
    with pytest.raises(grpc.RpcError) as err:
        cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=9_000_000_001))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")

    # Shard leaders report the keys they attach.
    short_keys = [f"short/{i}".encode() for i in range(20)]
    kept_keys = [b"kept/a", b"kept/b"]
    r = cluster.call(
        "LeaseAttach",
        ppb.LeaseAttachRequest(
            changes=[ppb.LeaseKeyChange(lease_id=short.ID, key=k) for k in short_keys]
            + [ppb.LeaseKeyChange(lease_id=kept.ID, key=k) for k in kept_keys]
            + [ppb.LeaseKeyChange(lease_id=777, key=b"orphan")]
        ),
    )
    assert list(r.lease_not_found) == [len(short_keys) + len(kept_keys)]
    deleted_before = leader_status(cluster).keys_deleted

    # Keep `kept` alive through a keep-alive stream while `short` expires.
    requests: queue.Queue[epb.LeaseKeepAliveRequest | None] = queue.Queue()

    def request_iter() -> Iterator[epb.LeaseKeepAliveRequest]:
        while (item := requests.get()) is not None:
            yield item

    stream = cluster.stub(cluster.wait_leader()).LeaseKeepAlive(request_iter())
    ttls: list[int] = []
    stopped = threading.Event()

    def keep_alive() -> None:
        try:
            while not stopped.is_set():
                requests.put(epb.LeaseKeepAliveRequest(ID=kept.ID))
                ttls.append(next(stream).TTL)
                stopped.wait(0.5)  # sleep-ok: keep-alive pace, as a client's
        except (grpc.RpcError, StopIteration):
            pass

    t = threading.Thread(target=keep_alive, daemon=True)
    t.start()
    try:
        wait_until(lambda: ttl_of(cluster, short.ID).TTL == -1, timeout=15, what="the short lease to expire")
        wait_until(
            lambda: (s := leader_status(cluster)).leases_pending_delete == 0 and s.keys_deleted >= deleted_before + len(short_keys),
            timeout=15,
            what="the expired lease's keys deleted through the KeyDeleter",
        )
        # `kept` (TTL 3) outlives its TTL thanks to the keep-alives.
        wait_until(lambda: time.monotonic() - granted_at > kept.TTL + 0.5, timeout=10, what="more than a TTL to pass")
        alive = ttl_of(cluster, kept.ID, keys=True)
        assert alive.TTL > 0 and alive.grantedTTL == 3 and sorted(alive.keys) == kept_keys
        assert ttls and all(x == 3 for x in ttls)
    finally:
        stopped.set()
        requests.put(None)
        t.join(timeout=10)
        stream.cancel()

    leases = cluster.call("LeaseLeases", epb.LeaseLeasesRequest())
    assert kept.ID in [x.ID for x in leases.leases] and short.ID not in [x.ID for x in leases.leases]
    deleted = leader_status(cluster).keys_deleted
    cluster.call("LeaseRevoke", epb.LeaseRevokeRequest(ID=kept.ID))
    assert ttl_of(cluster, kept.ID).TTL == -1
    assert leader_status(cluster).keys_deleted == deleted + len(kept_keys), "revoke returns once the keys are deleted"
    with pytest.raises(grpc.RpcError) as err:
        cluster.call("LeaseRevoke", epb.LeaseRevokeRequest(ID=kept.ID))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")


def test_killing_the_leader_loses_nothing(cluster: PlacementCluster, heartbeats: Heartbeater) -> None:
    old = cluster.wait_leader()
    lease = cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=30))
    cluster.call("LeaseAttach", ppb.LeaseAttachRequest(changes=[ppb.LeaseKeyChange(lease_id=lease.ID, key=b"survivor")]))
    before = cluster.get_map(old, linearizable=True)
    survivor = next(nid for nid in cluster.live() if nid != old)
    watcher = MapWatcher(cluster.stub(survivor))
    try:
        wait_until(lambda: watcher.matches(before), timeout=10, what="the watcher at the current map")

        cluster.kill(old)  # kill -9
        new = wait_until(lambda: (lid := cluster.leader()) not in (None, old) and lid, timeout=30, what="a new leader")
        after = cluster.get_map(new, linearizable=True)
        assert after == before, "map version and content survive the leader's death"

        # Writes carry on at the new leader.
        r = cluster.call("RegisterNode", ppb.RegisterNodeRequest(node_id=104, kind=ppb.STORE, address="127.0.0.1:20104"))
        heartbeats.alive.add(104)
        assert r.map_version == before.map_version + 1
        # The lease survived, renewed to its full TTL by the new leader.
        ttl = ttl_of(cluster, lease.ID, keys=True)
        assert 25 <= ttl.TTL <= 30 and list(ttl.keys) == [b"survivor"]
        assert cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=5)).TTL == 5
        # The surviving follower's watch stream carried on, too.
        final = cluster.get_map(new, linearizable=True)
        wait_until(lambda: watcher.matches(final), timeout=10, what="the watcher to see the new leader's change")
        assert watcher.error is None
        # No node went down because of the failover (heartbeats reached the new leader).
        assert all(n.state == ppb.UP for n in final.nodes), final.nodes

        # The killed server comes back from its disk and catches up.
        cluster.restart(old)
        wait_until(lambda: cluster.get_map(old) == cluster.get_map(new), timeout=30, what="the restarted server to catch up")
        assert cluster.status(old).map_version == final.map_version
    finally:
        watcher.stop()
