"""The crash points a campaign arms (FLOTILLA_CRASH_AT=<point>:<n>, issue #8)
are where they say, in a real store process: a node armed with one exits
137 when the cluster does what passes the point (a snapshot taken, a
snapshot received and installed, a split applied), and restarted without
it, loses nothing and converges."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotillapb import placement_pb2 as ppb

pytestmark = [pytest.mark.fault, pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Small snapshot intervals: a few writes snapshot and compact; a node down
    # for them catches up by snapshot.
    c = Cluster(tmp_path_factory.mktemp("crashpoints"), store_args=["--snapshot-entries", "20", "--compaction-margin", "5"])
    with running(c):
        yield c


def _restart(c: Cluster, nid: int, crash_at: str | None = None) -> None:
    env = c.stores.node_env.setdefault(nid, {})
    env.pop("FLOTILLA_CRASH_AT", None)
    if crash_at:
        env["FLOTILLA_CRASH_AT"] = crash_at
    try:
        c.stores._spawn(nid)
        if crash_at is None:
            c.stores._await_ready(nid)
            c.stores.connect_all()
    finally:
        env.pop("FLOTILLA_CRASH_AT", None)


def _kill(c: Cluster, nid: int) -> None:
    c.stores.nodes[nid].kill()


def _crashed(c: Cluster, nid: int) -> bool:
    p = c.stores.nodes[nid].proc
    assert p is not None
    return p.poll() == 137


def _writes(c: Cluster, shard: int, prefix: str, n: int) -> dict[bytes, bytes]:
    """n puts on the shard (the keys are drawn until n of them land there):
    n entries in its log, however few other entries idle shards log."""
    key = c.stores.key_in(shard, prefix=prefix)
    out = {}
    for i in range(100 * n):
        if len(out) == n:
            break
        k = key + f"/{i}".encode()
        if c.stores.shard_of(k) != shard:
            continue
        c.stores.put(k, b"v%d" % i)
        out[k] = b"v%d" % i
    assert len(out) == n, f"only {len(out)} of {n} keys landed on shard {shard}"
    return out


def _has_all(c: Cluster, nid: int, kvs: dict[bytes, bytes]) -> bool:
    for k, v in kvs.items():
        r = c.stores.get(nid, k)
        if r.header.HasField("error") or not r.response.kvs or r.response.kvs[0].value != v:
            return False
    return True


def test_snapshot_save_point(cluster: Cluster) -> None:
    c = cluster
    nid = c.store_ids[0]
    _kill(c, nid)
    _restart(c, nid, "snapshot_save:1")
    c.stores._await_ready(nid)
    c.stores.connect_all()
    kvs: dict[bytes, bytes] = {}
    for round_ in range(20):
        if _crashed(c, nid):
            break
        kvs.update(_writes(c, 1, f"snapsave{round_}", 10))
    wait_until(lambda: _crashed(c, nid), timeout=60, what="the armed node exits at snapshot_save")
    _restart(c, nid)
    wait_until(lambda: _has_all(c, nid, kvs), timeout=60, what="restarted node has every write")


@pytest.mark.parametrize("point", ["before_snapshot_apply", "after_snapshot_apply"])
def test_snapshot_apply_points(cluster: Cluster, point: str) -> None:
    c = cluster
    nid = c.store_ids[1]
    _kill(c, nid)
    kvs = _writes(c, 2, f"snapapply-{point}", 60)  # 60 entries: far past --snapshot-entries 20 and the compaction margin
    _restart(c, nid, f"{point}:1")
    wait_until(lambda: _crashed(c, nid), timeout=60, what=f"the armed node exits at {point}")
    _restart(c, nid)
    wait_until(lambda: _has_all(c, nid, kvs), timeout=60, what="restarted node caught up by snapshot")


def test_split_apply_point(cluster: Cluster) -> None:
    c = cluster
    nid = c.store_ids[2]
    _kill(c, nid)
    _restart(c, nid, "split_apply:1")
    c.stores._await_ready(nid)
    c.stores.connect_all()
    shards0 = {s.descriptor.shard_id for s in c.get_map().shards}

    def split() -> bool:
        try:
            c.call("Split", ppb.SplitRequest(shard_id=3, at_slot=0))
            return True
        except grpc.RpcError as exc:  # another operator on the shard (the scheduler's): wait it out
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
                raise
            return False

    wait_until(split, timeout=60, what="placement accepts the split")
    wait_until(lambda: _crashed(c, nid), timeout=60, what="the armed node exits at split_apply")
    _restart(c, nid)

    other = next(n for n in c.store_ids if n != nid)

    def new_shard_hosted() -> bool:
        """The split's new shard (as a replica that did not crash sees it) is
        hosted again on the restarted node: reopened from its own disk."""
        new = {s.descriptor.shard_id for s in c.stores.status(other).shards} - shards0
        hosted = {s.descriptor.shard_id for s in c.stores.status(nid).shards}
        return bool(new) and new <= hosted

    wait_until(new_shard_hosted, timeout=60, what="the restarted node hosts the split's new shard")
