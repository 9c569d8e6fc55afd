"""Idle shards cost no Raft entries (issue #20): their closed timestamps
travel on the per-node-pair side channel (shard/node/closedts.py), yet a
follower serves bounded-staleness and at-revision reads and watch progress
moves on; and after the leader is killed, the new leader's write lands
above every revision a follower served a read at."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from flotilla.storecluster import StoreCluster, wait_until
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from shard import hlc

pytestmark = pytest.mark.integration

SHARDS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    c = StoreCluster(tmp_path_factory.mktemp("idle"), shards=SHARDS, extra_args=["--listen-metrics-urls", "http://127.0.0.1:0"])
    try:
        c.start()
        wait_until(c.all_shards_led, timeout=30, what="a leader for every shard")
        yield c
    finally:
        c.stop()
        for nid in c.nodes:
            print(f"--- node {nid} log tail ---\n{c.log_tail(nid, 15)}")


def _counters(c: StoreCluster, nid: int) -> dict[str, float]:
    """The Raft counters on a node's metrics page."""
    info = c.nodes[nid].read_ready()
    assert info is not None
    url = info["metrics_urls"][0]
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("flotilla_raft_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _applied(c: StoreCluster, sid: int) -> dict[int, int]:
    return {n: c.shard_status(n, sid).applied_index for n in c.live()}


def _idle(c: StoreCluster, sid: int, follower: int) -> tuple[dict[int, int], int]:
    """Wait until the shard applies nothing while its closed timestamp on
    follower moves on by 1 s; return (applied indexes, that closed timestamp)."""
    found: list[tuple[dict[int, int], int]] = []

    def settled() -> bool:
        before = _applied(c, sid)
        c0 = c.shard_status(follower, sid).closed_ts
        wait_until(lambda: c.shard_status(follower, sid).closed_ts >= c0 + hlc.span(1000), timeout=20, what="the follower's closed timestamp to move on")
        after = _applied(c, sid)
        if before == after:
            found.append((after, c.shard_status(follower, sid).closed_ts))
            return True
        return False

    wait_until(settled, timeout=60, what="the shard to apply nothing while its closed timestamp moves on")
    return found[0]


def test_an_idle_shard_closes_timestamps_with_no_raft_entries(cluster: StoreCluster) -> None:
    c = cluster
    sid = 1
    key = c.key_in(sid, "idle")
    rev = c.put(key, b"v").response.header.revision
    leader = c.leaders()[sid]
    follower = next(n for n in c.live() if n != leader)
    applied, closed = _idle(c, sid, follower)
    assert closed > rev
    # Two more seconds of closed timestamps, still no entry applied anywhere.
    wait_until(lambda: c.shard_status(follower, sid).closed_ts >= closed + hlc.span(2000), timeout=20, what="2 s more closed on the follower")
    assert _applied(c, sid) == applied
    # The follower serves a bounded-staleness read (1 s) and a read at its
    # closed timestamp. Until someone reads, the side channel runs a round a
    # second (closedts.SLOW_ROUNDS) and the first read may find the follower
    # 1-2 s behind (StaleReadNotReady: the router would ask the leader); the
    # read speeds the rounds up, and the follower serves within a round or two.
    served: list[object] = []

    def bounded() -> bool:
        r = c.get(follower, key, consistency=spb.READ_BOUNDED_STALENESS, max_staleness_ms=1000)
        if r.header.HasField("error"):
            return False
        served.append(r)
        return True

    wait_until(bounded, timeout=10, what="the follower to serve a bounded-staleness read")
    r = served[0]
    assert [kv.value for kv in r.response.kvs] == [b"v"]
    at = c.shard_status(follower, sid).closed_ts
    r = c.get(follower, key, consistency=spb.READ_AT_REVISION, revision=at)
    assert not r.header.HasField("error"), r.header
    assert [kv.value for kv in r.response.kvs] == [b"v"]
    # Watch progress on the follower keeps moving.
    stream = c.store(follower).Watch(
        spb.ShardWatchRequest(header=c.header(sid), request=epb.WatchCreateRequest(key=key, start_revision=rev + 1), progress_interval_ms=200),
        timeout=30,
    )
    try:
        progress: list[int] = []
        for msg in stream:
            assert not msg.header.HasField("error"), msg.header
            assert not msg.events
            if msg.progress_revision:
                progress.append(msg.progress_revision)
            if len(progress) >= 2 and progress[-1] >= progress[0] + hlc.span(500):
                break
        assert progress[-1] > at
    finally:
        stream.cancel()
    assert _applied(c, sid) == applied


def test_a_new_leader_writes_above_what_a_follower_served(cluster: StoreCluster) -> None:
    c = cluster
    sid = 2
    key = c.key_in(sid, "safe")
    c.put(key, b"old")
    leader = c.leaders()[sid]
    follower = next(n for n in c.live() if n != leader)
    _idle(c, sid, follower)
    served = c.shard_status(follower, sid).closed_ts
    r = c.get(follower, key, consistency=spb.READ_AT_REVISION, revision=served)
    assert not r.header.HasField("error"), r.header
    assert [kv.value for kv in r.response.kvs] == [b"old"]
    c.kill(leader)
    try:
        wait_until(lambda: sid in c.leaders() and c.leaders()[sid] != leader, timeout=30, what="a new leader")
        rev = c.put(key, b"new").response.header.revision
        assert rev > served, f"a write at {rev}, at or below the revision {served} a follower served a read at"
        r = c.get(follower, key, consistency=spb.READ_AT_REVISION, revision=served)
        assert not r.header.HasField("error"), r.header
        assert [kv.value for kv in r.response.kvs] == [b"old"]
    finally:
        c.restart(leader)
        wait_until(c.all_shards_led, timeout=30, what="leaders again")


def test_quiet_shards_get_no_ticks_and_send_no_raft_messages(cluster: StoreCluster) -> None:
    """Idle shards' groups are quiet: over 2 s of closed timestamps moving on,
    no node ticks a group or sends a Raft message, its ticker wakes only for
    liveness (a few times a second), and a follower serves a bounded-staleness
    read without waking its group."""
    c = cluster
    sid = 1
    key = c.key_in(sid, "quiet")
    c.put(key, b"q")
    leader = c.leaders()[sid]
    follower = next(n for n in c.live() if n != leader)
    found: list[tuple[dict[int, dict[str, float]], dict[int, dict[str, float]]]] = []

    def quiet_for_2s() -> bool:
        before = {n: _counters(c, n) for n in c.live()}
        c0 = c.shard_status(follower, sid).closed_ts
        wait_until(lambda: c.shard_status(follower, sid).closed_ts >= c0 + hlc.span(2000), timeout=20, what="2 s more closed on the follower")
        after = {n: _counters(c, n) for n in c.live()}
        moved = any(
            after[n][k] != before[n][k] for n in after for k in ("flotilla_raft_group_ticks_total", "flotilla_raft_messages_sent_total")
        )
        if not moved:
            found.append((before, after))
        return not moved

    wait_until(quiet_for_2s, timeout=60, what="2 s with no group ticked and no Raft message sent")
    before, after = found[0]
    for n in after:
        rounds = after[n]["flotilla_raft_ticker_rounds_total"] - before[n]["flotilla_raft_ticker_rounds_total"]
        # At most one liveness round every 3 ticks (0.3 s) over the 2-3 s the
        # interval took, instead of a tick every 0.1 s.
        assert rounds <= 15, f"node {n}: {rounds} ticker rounds while every group was quiet"
    # A bounded-staleness read on the follower is served from its replica (once
    # the side channel caught up) and wakes no group.
    ticks = _counters(c, follower)["flotilla_raft_group_ticks_total"]

    def bounded() -> bool:
        r = c.get(follower, key, consistency=spb.READ_BOUNDED_STALENESS, max_staleness_ms=1000)
        return not r.header.HasField("error") and [kv.value for kv in r.response.kvs] == [b"q"]

    wait_until(bounded, timeout=10, what="the follower to serve a bounded-staleness read")
    assert _counters(c, follower)["flotilla_raft_group_ticks_total"] == ticks, "the follower's read woke a group"
