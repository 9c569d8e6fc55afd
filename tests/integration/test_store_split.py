"""Splitting a shard with real processes: 3 `flotilla server --store` nodes,
one shard split by slots into two Raft groups with the same replicas. No
data moves; every key stays readable (linearizably) through the shard that
owns its slot; both halves take writes; the old shard refuses moved slots
with routing errors that name the new shard; a linearizable read on a
replica that had not applied the split yet never answers from its old view;
kill -9 and restart after the split recovers both groups."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from flotilla.storecluster import StoreCluster, wait_until
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard.slots import slot_of

pytestmark = pytest.mark.integration

SLOTS = 256
NEW = 10
SPLIT_SLOT = 64  # shard 1 owns [0, 128) of 2 shards; [64, 128) moves to shard 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    c = StoreCluster(tmp_path_factory.mktemp("split"), shards=2, slot_count=SLOTS)
    try:
        c.start()
        wait_until(c.all_shards_led, timeout=30, what="a leader for every shard")
        yield c
    finally:
        c.stop()
        for nid in c.nodes:
            print(f"--- node {nid} log tail ---\n{c.log_tail(nid, 20)}")


def _routing(header: spb.ShardResponseHeader) -> str | None:
    if not header.HasField("error") or not header.error.HasField("routing"):
        return None
    return header.error.routing.WhichOneof("error")


def _values(r: spb.ShardRangeResponse) -> list[bytes]:
    assert not r.header.HasField("error"), r.header
    return [kv.value for kv in r.response.kvs]


def _moved_key(c: StoreCluster, prefix: str) -> bytes:
    return next(
        k for k in (f"{prefix}{i}".encode() for i in range(100_000)) if SPLIT_SLOT <= slot_of(k, SLOTS) < SLOTS // 2
    )


def _hosts_everywhere(c: StoreCluster, shard_id: int) -> bool:
    return all(any(s.descriptor.shard_id == shard_id for s in c.status(n).shards) for n in c.live())


def test_split_then_read_write_route_and_recover(cluster: StoreCluster) -> None:
    c = cluster
    keys = [f"key{i}".encode() for i in range(80)]
    revs = {k: c.put(k, b"v-" + k).response.header.revision for k in keys}
    moved = [k for k in keys if SPLIT_SLOT <= slot_of(k, SLOTS) < SLOTS // 2]
    assert moved and len(moved) < len([k for k in keys if slot_of(k, SLOTS) < SLOTS // 2])

    # A follower that misses the split entry while it is applied elsewhere.
    leader = c.leaders()[1]
    lagging = next(n for n in c.live() if n != leader)
    c.nodes[lagging].proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        r = c.split(1, NEW, SPLIT_SLOT, leader=leader)
    finally:
        c.nodes[lagging].proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    # The lagging replica still has the pre-split epoch: a linearizable read
    # with that epoch waits for ReadIndex, applies the split, and must then
    # refuse, never answer from the old shard's view.
    stale = c.store(lagging).Range(
        spb.ShardRangeRequest(
            header=c.header(1, epoch=(1, 1)), consistency=spb.READ_LINEARIZABLE, request=epb.RangeRequest(key=moved[0])
        ),
        timeout=15,
    )
    assert _routing(stale.header) in ("epoch_not_match", "wrong_shard", "not_leader"), stale
    assert not stale.response.kvs

    assert [(s.start, s.end) for s in r.left.slots] == [(0, SPLIT_SLOT)]
    assert [(s.start, s.end) for s in r.right.slots] == [(SPLIT_SLOT, SLOTS // 2)]
    assert (r.left.epoch.conf_version, r.left.epoch.slot_version) == (1, 2)
    assert (r.right.epoch.conf_version, r.right.epoch.slot_version) == (1, 2)
    assert sorted(x.node_id for x in r.right.replicas) == [1, 2, 3]

    wait_until(lambda: _hosts_everywhere(c, NEW), timeout=30, what="every node hosts the new shard")
    wait_until(c.all_shards_led, timeout=30, what="a leader for every shard, the new one too")

    # Every key, linearizably, through the shard that owns its slot, on every node.
    for k in keys:
        sid = c.shard_of(k)
        assert sid == (NEW if k in moved else (1 if slot_of(k, SLOTS) < SLOTS // 2 else 2))
        for n in c.live():
            got = wait_until(
                lambda: (lambda r: r if _routing(r.header) is None else None)(
                    c.get(n, k, consistency=spb.READ_LINEARIZABLE)
                ),
                timeout=15,
                what=f"linearizable read of {k!r} on node {n}",
            )
            assert [(kv.value, kv.mod_revision) for kv in got.response.kvs] == [(b"v-" + k, revs[k])]

    # Writes to both halves.
    kept_key = next(k for k in keys if c.shard_of(k) == 1)
    w_old = c.put(kept_key, b"after-old").response.header.revision
    w_new = c.put(moved[0], b"after-new").response.header.revision
    assert w_new > revs[moved[0]] and w_old > revs[kept_key]
    assert _values(c.get(c.leaders()[NEW], moved[0], consistency=spb.READ_LINEARIZABLE)) == [b"after-new"]
    fresh = _moved_key(c, "fresh")
    c.put(fresh, b"born-in-10")
    assert _values(c.get(c.leaders()[NEW], fresh, consistency=spb.READ_LINEARIZABLE)) == [b"born-in-10"]

    # The old shard refuses moved slots. Old epoch: EpochNotMatch naming the new shard.
    leader1 = c.leaders()[1]
    old = c.store(leader1).Range(
        spb.ShardRangeRequest(header=c.header(1, epoch=(1, 1)), request=epb.RangeRequest(key=moved[0])), timeout=10
    )
    assert _routing(old.header) == "epoch_not_match"
    enm = old.header.error.routing.epoch_not_match
    assert (enm.current_epoch.conf_version, enm.current_epoch.slot_version) == (1, 2)
    assert [(s.start, s.end) for s in enm.current_slots] == [(0, SPLIT_SLOT)]
    related = {d.shard_id: d for d in enm.related}
    assert NEW in related and [(s.start, s.end) for s in related[NEW].slots] == [(SPLIT_SLOT, SLOTS // 2)]
    assert all(x.address for x in related[NEW].replicas)
    # Current epoch but a moved key: WrongShard. A write with the old epoch: EpochNotMatch.
    ws = c.store(leader1).Range(spb.ShardRangeRequest(header=c.header(1), request=epb.RangeRequest(key=moved[0])), timeout=10)
    assert _routing(ws.header) == "wrong_shard" and ws.header.error.routing.wrong_shard.slot == slot_of(moved[0], SLOTS)
    wo = c.store(leader1).Put(
        spb.ShardPutRequest(header=c.header(1, write=True, epoch=(1, 1)), request=epb.PutRequest(key=kept_key, value=b"x")),
        timeout=10,
    )
    assert _routing(wo.header) == "epoch_not_match"
    # A key the old shard keeps still works at its new epoch (asserted by the put above).

    # kill -9 a node and restart it: both groups recover there.
    victim = c.leaders()[NEW]
    c.kill(victim)
    wait_until(c.all_shards_led, timeout=30, what="leaders without the killed node")
    c.put(moved[1], b"while-down")
    c.put(kept_key, b"while-down-old")
    c.restart(victim)
    wait_until(lambda: _hosts_everywhere(c, NEW), timeout=30, what="the restarted node hosts the new shard")
    for k, want in ((moved[1], b"while-down"), (kept_key, b"while-down-old"), (fresh, b"born-in-10")):
        wait_until(lambda: _values(c.get(victim, k)) == [want], timeout=30, what=f"{k!r} on the restarted node")
    st = {s.descriptor.shard_id: s for s in c.status(victim).shards}
    assert (st[1].descriptor.epoch.slot_version, st[NEW].descriptor.epoch.slot_version) == (2, 2)
    assert [(s.start, s.end) for s in st[NEW].descriptor.slots] == [(SPLIT_SLOT, SLOTS // 2)]
    got = c.get(victim, moved[0], consistency=spb.READ_LINEARIZABLE)
    assert _values(got) == [b"after-new"]
