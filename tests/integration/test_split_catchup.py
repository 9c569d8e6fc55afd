"""Regression (issue #7, multi-Raft bugs) with real processes: a snapshot
that overlaps a split. A store is killed; a shard splits (`flotilla ctl
split`) and both halves are written under load until the leaders compact
their logs past the dead store; it restarts and can only catch up from
snapshots. It must end with the same data as the leaders in every shard it
hosts (the split's new shard included, created when it applied the split or
from the map once its parent shrank), its replica of the parent must refuse
the new shard's keys, and the history recorded under load is linearizable.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard import slots
from tests.integration.history import Load
from tests.integration.test_rebalance import ctl, wait_operator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("splitcatchup"),
        initial_shards=2,
        store_args=["--snapshot-entries", "20", "--compaction-margin", "5"],
    )
    with running(c):
        yield c


def _owner(m: ppb.ClusterMap, key: bytes) -> ppb.ShardInfo:
    slot = slots.slot_of(key, m.slot_count)
    return next(s for s in m.shards if any(r.start <= slot < r.end for r in s.descriptor.slots))


def _read(c: Cluster, nid: int, shard_id: int, key: bytes, consistency: int) -> spb.ShardRangeResponse:
    epoch = next(s for s in c.stores.status(nid).shards if s.descriptor.shard_id == shard_id).descriptor.epoch
    req = spb.ShardRangeRequest(header=spb.RequestHeader(shard_id=shard_id, epoch=epoch), consistency=consistency, request=epb.RangeRequest(key=key))
    return c.stores.store(nid).Range(req, timeout=10)


def test_store_that_missed_a_split_catches_up_by_snapshot(cluster: Cluster) -> None:
    c = cluster
    m = c.get_map()
    parent = m.shards[0].descriptor
    victim = next(r.node_id for r in parent.replicas if r.node_id != parent.leader_node_id)
    keys = tuple(b"sc-%d" % i for i in range(24))
    before = {s.descriptor.shard_id for s in m.shards}
    load = Load(c, keys=keys, pause_s=0.005)
    with load:
        wait_until(lambda: load.acked_puts() >= 20, timeout=60, what="load before the kill")
        c.stores.kill(victim, signal.SIGKILL)
        def split() -> object:
            out = ctl(c, "-o", "json", "split", str(parent.shard_id))
            assert out.returncode == 0 or "running" in out.stderr, out.stderr
            return out if out.returncode == 0 else None  # a balance operator holds the shard: again

        out = wait_until(split, timeout=60, what=f"split of shard {parent.shard_id} accepted")
        wait_operator(c, int(json.loads(out.stdout)["id"]), "success", timeout=60)
        child = wait_until(
            lambda: next((s.descriptor for s in c.get_map().shards if s.descriptor.shard_id not in before), None),
            timeout=30,
            what="the split's new shard in the map",
        )
        # enough writes to both halves for their leaders to compact past the dead store
        acked = load.acked_puts()
        wait_until(lambda: load.acked_puts() >= acked + 150, timeout=120, what="load after the split")
        c.stores._spawn(victim)
        c.stores._await_ready(victim)
        wait_until(lambda: child.shard_id in {s.descriptor.shard_id for s in c.stores.status(victim).shards}, timeout=90, what=f"node {victim} hosts the split's shard {child.shard_id}")
        acked = load.acked_puts()
        wait_until(lambda: load.acked_puts() >= acked + 20, timeout=60, what="load after the restart")
    load.read_all()
    load.check(min_acked=100, min_reads=30)

    m = c.get_map()
    log_text = c.stores.nodes[victim].log_path.read_text(errors="replace")
    assert f"group={parent.shard_id} received snapshot" in log_text or f"group={child.shard_id} received snapshot" in log_text, "caught up without a snapshot"
    last_read = {k: [o for o in load.ops[k] if o.kind == "get"][-1].output for k in keys}
    for key in keys:
        owner = _owner(m, key).descriptor.shard_id

        def same() -> bool:
            r = _read(c, victim, owner, key, spb.READ_SERIALIZABLE)
            got = r.response.kvs[0].value if r.response.kvs else None
            return not r.header.HasField("error") and got == last_read[key]

        wait_until(same, timeout=60, what=f"node {victim} has {key!r} as the leaders do")
    # the victim's replica of the parent refuses the child's keys
    child_key = next(k for k in keys if _owner(m, k).descriptor.shard_id == child.shard_id)
    r = _read(c, victim, parent.shard_id, child_key, spb.READ_SERIALIZABLE)
    assert r.header.HasField("error") and r.header.error.routing.WhichOneof("error") in ("wrong_shard", "epoch_not_match"), r
