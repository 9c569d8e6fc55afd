"""One real cluster: 3 placement servers and 3 store nodes, each a
`flotilla server` process on 127.0.0.1 (flotilla/cluster.py).

Placement bootstraps the shard map once the three stores registered; the
stores host the shards the map assigns them and report their leaders;
leases end with their keys deleted on every shard that held one; a killed
store is marked down; killing the placement leader loses nothing and the
stores carry on with the new one; a store that missed a split (caught up by
a snapshot of the shard taken after it) creates the new shard's replica
from the map.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import grpc
import pytest

from flotilla.cluster import Cluster, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import placement_pb2_grpc
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb

pytestmark = pytest.mark.integration

DOWN_AFTER_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Small snapshot intervals: a store that was down is caught up by snapshot.
    c = Cluster(
        tmp_path_factory.mktemp("cluster"),
        down_after_s=DOWN_AFTER_S,
        store_args=["--snapshot-entries", "20", "--compaction-margin", "5"],
    )
    try:
        c.start()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


class MapWatch:
    """A WatchMap stream read on a thread: the latest map it describes."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stream = placement_pb2_grpc.PlacementStub(self._channel).WatchMap(ppb.WatchMapRequest())
        self.nodes: dict[int, ppb.NodeInfo] = {}
        self.shards: dict[int, ppb.ShardInfo] = {}
        self.versions: list[int] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self._stream:
                with self._lock:
                    if resp.HasField("full"):
                        self.nodes = {n.node_id: n for n in resp.full.nodes}
                        self.shards = {s.descriptor.shard_id: s for s in resp.full.shards}
                    for n in resp.nodes:
                        self.nodes[n.node_id] = n
                    for s in resp.shards:
                        self.shards[s.descriptor.shard_id] = s
                    self.versions.append(resp.map_version)
        except grpc.RpcError:
            pass

    def leaders(self) -> dict[int, int]:
        with self._lock:
            return {sid: s.descriptor.leader_node_id for sid, s in self.shards.items()}

    def state(self, node_id: int) -> int:
        with self._lock:
            n = self.nodes.get(node_id)
            return n.state if n is not None else 0

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()
        self._thread.join(timeout=10)


def put(c: Cluster, key: bytes, value: bytes, lease: int = 0) -> spb.ShardPutResponse:
    """A put through the shard's leader, retried on routing errors; KV errors are answered."""
    stores = c.stores
    sid = stores.shard_of(key)
    req = spb.ShardPutRequest(header=stores.header(sid, write=True), request=epb.PutRequest(key=key, value=value, lease=lease))

    def attempt() -> spb.ShardPutResponse | None:
        nid = stores.leaders().get(sid)
        if nid is None:
            return None
        r = stores.store(nid).Put(req, timeout=10)
        return None if r.header.error.HasField("routing") else r

    return wait_until(attempt, timeout=30, what=f"put {key!r} to shard {sid}")


def read(c: Cluster, key: bytes) -> list[epb.KeyValue]:
    """A linearizable read on the shard's leader."""
    stores = c.stores

    def attempt() -> tuple[list[epb.KeyValue]] | None:
        nid = stores.leaders().get(stores.shard_of(key))
        if nid is None:
            return None
        r = stores.get(nid, key, consistency=spb.READ_LINEARIZABLE)
        return None if r.header.HasField("error") else (list(r.response.kvs),)

    return wait_until(attempt, timeout=30, what=f"read {key!r}")[0]


def test_placement_bootstraps_the_map_and_the_stores_host_it(cluster: Cluster) -> None:
    m = cluster.wait_bootstrapped()
    assert m.slot_count == 1024 and len(m.shards) == 4
    assert {n.node_id for n in m.nodes if n.kind == ppb.STORE} == {11, 12, 13}
    for s in m.shards:
        assert sorted(r.node_id for r in s.descriptor.replicas) == [11, 12, 13]
    # Every store hosts every shard it was assigned, and each shard has one leader.
    for nid in cluster.store_ids:
        assert sorted(s.descriptor.shard_id for s in cluster.stores.status(nid).shards) == [1, 2, 3, 4]
    leaders = wait_until(cluster.stores.all_shards_led, timeout=30, what="every shard led")
    # The map watch sees the leaders the shards reported.
    watch = MapWatch(cluster.placement.nodes[cluster.placement_ids[0]].address)
    try:
        wait_until(lambda: watch.leaders() == cluster.stores.all_shards_led(), timeout=30, what="the watched map to show the shard leaders")
        assert set(leaders) == {1, 2, 3, 4}
    finally:
        watch.close()


def test_heartbeats_carry_each_shards_request_rates(cluster: Cluster) -> None:
    cluster.wait_bootstrapped()
    key = cluster.stores.key_in(3, "rated/")
    for i in range(20):
        r = put(cluster, key, b"v%d" % i)
        assert not r.header.HasField("error"), r.header

    def rates() -> ppb.ShardStats | None:
        resp = cluster.call("GetMap", ppb.GetMapRequest(linearizable=True))
        st = {x.shard_id: x for x in resp.shard_stats}.get(3)
        return st if st is not None and st.write_rate > 0 else None

    st = wait_until(rates, timeout=30, what="shard 3's write rate in the leader's heartbeat")
    assert st.is_leader and st.write_rate > 0

    # ... and its live key count and size: one key, rewritten 20 times, so its
    # last value counts (a heartbeat sent mid-way may carry an earlier one).
    def sized() -> ppb.ShardStats | None:
        resp = cluster.call("GetMap", ppb.GetMapRequest(linearizable=True))
        st = {x.shard_id: x for x in resp.shard_stats if x.is_leader}.get(3)
        return st if st is not None and st.size_bytes >= len(key) + len(b"v19") else None

    st = wait_until(sized, timeout=30, what="shard 3's size in the leader's heartbeat")
    assert st.is_leader and st.key_count >= 1 and st.size_bytes > 0


def test_lease_expiry_deletes_attached_keys_on_every_shard(cluster: Cluster) -> None:
    cluster.wait_bootstrapped()
    stores = cluster.stores
    # A put naming a lease placement does not have is refused as etcd refuses it.
    r = put(cluster, stores.key_in(1, "nolease/"), b"v", lease=0x7777)
    assert r.header.error.kv.code == spb.KvError.LEASE_NOT_FOUND

    lease = cluster.call("LeaseGrant", epb.LeaseGrantRequest(TTL=4))
    doomed = [stores.key_in(sid, "leased/") for sid in (1, 2, 3, 4)]
    for k in doomed:
        r = put(cluster, k, b"v", lease=lease.ID)
        assert not r.header.HasField("error"), r.header
    # A key put with the lease, then rewritten without it, survives the lease.
    kept = stores.key_in(2, "rewritten/")
    put(cluster, kept, b"v1", lease=lease.ID)
    put(cluster, kept, b"v2")
    for k in doomed:
        assert [kv.lease for kv in read(cluster, k)] == [lease.ID]
    ttl = cluster.call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lease.ID, keys=True))
    assert set(doomed) <= set(ttl.keys)

    wait_until(
        lambda: all(read(cluster, k) == [] for k in doomed),
        timeout=30,
        what="the expired lease's keys deleted on every shard",
    )
    assert cluster.call("LeaseTimeToLive", epb.LeaseTimeToLiveRequest(ID=lease.ID)).TTL == -1
    assert [kv.value for kv in read(cluster, kept)] == [b"v2"]


def test_a_killed_store_is_marked_down_and_its_shards_move_on(cluster: Cluster) -> None:
    cluster.wait_bootstrapped()
    watch = MapWatch(cluster.placement.nodes[cluster.placement_ids[1]].address)
    try:
        victim = 13
        cluster.stores.kill(victim, signal.SIGKILL)
        wait_until(lambda: watch.state(victim) == ppb.DOWN, timeout=DOWN_AFTER_S + 20, what=f"store {victim} marked down")
        # The two live stores lead every shard, and the map says so.
        wait_until(
            lambda: (ld := cluster.stores.all_shards_led()) is not None and victim not in ld.values(),
            timeout=30,
            what="every shard led by a live store",
        )
        wait_until(
            lambda: victim not in watch.leaders().values() and set(watch.leaders()) == {1, 2, 3, 4},
            timeout=30,
            what="the watched map to show the new leaders",
        )
        r = put(cluster, cluster.stores.key_in(3, "after-kill/"), b"v")
        assert not r.header.HasField("error")

        # Restarted, it reopens its shards from disk, catches up, and is up again.
        cluster.stores.restart(victim)
        wait_until(lambda: watch.state(victim) == ppb.UP, timeout=30, what=f"store {victim} up again")
        key = cluster.stores.key_in(3, "after-kill/")

        def caught_up() -> bool:
            st = cluster.stores.status(victim)
            return sorted(s.descriptor.shard_id for s in st.shards) == [1, 2, 3, 4] and [
                kv.value for kv in cluster.stores.get(victim, key).response.kvs
            ] == [b"v"]

        wait_until(caught_up, timeout=30, what=f"store {victim} to host its shards and catch up")
    finally:
        watch.close()


def _figures(cluster: Cluster, nid: int) -> dict[int, tuple[object, ...]]:
    """Placement server nid's shard figures (GetMap's shard_stats: its heartbeat table's leader figures)."""
    resp = cluster.placement.stub(nid).GetMap(ppb.GetMapRequest(), timeout=10)
    return {
        st.shard_id: (st.term, st.key_count, st.size_bytes, st.epoch.conf_version, st.epoch.slot_version, st.read_rate, st.write_rate)
        for st in resp.shard_stats
    }


def test_a_new_placement_leader_learns_every_shards_figures(cluster: Cluster) -> None:
    """Heartbeats carry only what changed (an idle store's carry no shard).
    A new placement leader has no table: each store's next delta is refused
    and a full heartbeat follows, so the new leader's figures of shards that
    did not change since are those the old leader had; deltas then apply on
    top of them."""
    cluster.wait_bootstrapped()
    p, stores = cluster.placement, cluster.stores
    keys = [stores.key_in(2, f"figures{i}/") for i in range(3)]
    for k in keys:
        r = put(cluster, k, b"v")
        assert not r.header.HasField("error"), r.header
    old = p.wait_leader()

    def settled() -> dict[int, tuple[object, ...]] | None:
        # Every shard's figures, the puts counted, every rate back to zero (the final delta of each went).
        f = _figures(cluster, old)
        ok = set(f) == set(stores.shard_ids()) and all(x[5] == 0 and x[6] == 0 for x in f.values()) and f[2][1] >= len(keys)
        return f if ok and scheduler_idle(f) and f == _figures(cluster, old) else None

    def scheduler_idle(f: dict[int, tuple[object, ...]]) -> bool:
        # And nothing left for the scheduler to do, its last move reported: the
        # previous test restarted a store that leads nothing, and a leader
        # transfer onto it (a new term) still to come, or not yet in a
        # heartbeat, would change the figures after the kill.
        ops = p.stub(old).ListOperators(ppb.ListOperatorsRequest(), timeout=10).operators
        terms: dict[int, tuple[int, int]] = {}  # shard -> (term, node) of its leader, the highest term's
        for nid in stores.live():
            for s in stores.status(nid).shards:
                if s.is_leader and (s.descriptor.shard_id not in terms or s.term > terms[s.descriptor.shard_id][0]):
                    terms[s.descriptor.shard_id] = (s.term, nid)
        if set(terms) != set(f) or any(o.state == "running" for o in ops) or any(f[sid][0] != t for sid, (t, _) in terms.items()):
            return False
        counts = [sum(1 for _, n in terms.values() if n == nid) for nid in stores.live()]
        return max(counts) - min(counts) < 2

    before = wait_until(settled, timeout=30, what="the placement leader's figures of every shard, settled")
    p.kill(old, signal.SIGKILL)
    try:
        new = wait_until(lambda: (ld := p.leader()) is not None and ld != old and ld, timeout=30, what="a new placement leader")
        # Nothing changed on the stores: only full heartbeats can give the new leader these.
        wait_until(lambda: _figures(cluster, new) == before, timeout=30, what=f"the new leader's figures to equal the old leader's ({before})")
        # Deltas apply on the new leader's table: one more key in shard 2.
        r = put(cluster, stores.key_in(2, "figures-after/"), b"v")
        assert not r.header.HasField("error"), r.header
        wait_until(
            lambda: (f := _figures(cluster, new))[2][1] == before[2][1] + 1 and f[2][2] > before[2][2] and {s: f[s] for s in f if s != 2} == {s: before[s] for s in before if s != 2},
            timeout=30,
            what="the new leader's figures to count the new key in shard 2, the others unchanged",
        )
    finally:
        p.restart(old)


def test_killing_the_placement_leader_loses_nothing(cluster: Cluster) -> None:
    cluster.wait_bootstrapped()
    p = cluster.placement
    old = p.wait_leader()
    before = cluster.get_map()
    p.kill(old, signal.SIGKILL)
    new = wait_until(lambda: (ld := p.leader()) is not None and ld != old and ld, timeout=30, what="a new placement leader")
    after = cluster.get_map()
    assert after.cluster_id == before.cluster_id and after.slot_count == before.slot_count
    assert after.map_version >= before.map_version
    assert {n.node_id: n.address for n in after.nodes} == {n.node_id: n.address for n in before.nodes}
    assert {s.descriptor.shard_id: (list(s.descriptor.slots), s.descriptor.epoch) for s in after.shards} == {
        s.descriptor.shard_id: (list(s.descriptor.slots), s.descriptor.epoch) for s in before.shards
    }
    # The stores heartbeat to the new leader (each live store every 300 ms).
    hb = p.status(new).heartbeats
    wait_until(lambda: p.status(new).heartbeats >= hb + 4, timeout=30, what="heartbeats reaching the new placement leader")
    # And the cluster still serves.
    r = put(cluster, cluster.stores.key_in(4, "after-failover/"), b"v")
    assert not r.header.HasField("error")
    assert [kv.value for kv in read(cluster, cluster.stores.key_in(4, "after-failover/"))] == [b"v"]


def test_a_store_that_missed_a_split_creates_the_new_shard_from_the_map(cluster: Cluster) -> None:
    cluster.wait_bootstrapped()
    stores = cluster.stores
    leaders = wait_until(stores.all_shards_led, timeout=30, what="every shard led")
    victim = next(n for n in cluster.store_ids if n != leaders[1])
    before = stores.key_in(1, "pre-split/")
    put(cluster, before, b"v")
    stores.kill(victim, signal.SIGKILL)

    # Split shard 1 while the victim is down; shard 5 gets its upper half.
    lo, hi = stores.slot_ranges(1)[0]
    stores.split(1, 5, (lo + hi) // 2)
    moved = stores.key_in(5, "post-split/")
    assert not put(cluster, moved, b"v").header.HasField("error")
    for i in range(40):  # enough entries for shard 1 to snapshot and compact past the split
        put(cluster, stores.key_in(1, f"fill{i}/"), b"x")
    def map_with_five() -> ppb.ClusterMap | None:
        mm = cluster.get_map()
        return mm if any(s.descriptor.shard_id == 5 for s in mm.shards) else None

    m = wait_until(map_with_five, timeout=30, what="the split's new shard in the map")
    five = next(s for s in m.shards if s.descriptor.shard_id == 5)
    assert victim in [r.node_id for r in five.descriptor.replicas]

    # Restarted, the victim catches up on shard 1 by snapshot (never applying
    # the split) and hosts shard 5 because the map (and its leader) says so.
    stores.restart(victim)

    def hosts_both() -> bool:
        st = stores.status(victim)
        by_id = {s.descriptor.shard_id: s for s in st.shards}
        if 5 not in by_id or 1 not in by_id:
            return False
        one = [(r.start, r.end) for r in by_id[1].descriptor.slots]
        return one == list(stores.slot_ranges(1)) and [kv.value for kv in stores.get(victim, moved).response.kvs] == [b"v"]

    wait_until(hosts_both, timeout=60, what=f"store {victim} to host shard 5 and shard 1's new slots")
    assert [kv.value for kv in stores.get(victim, before).response.kvs] == [b"v"]
