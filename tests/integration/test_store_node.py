"""The store node with real processes: 3 `flotilla server --store` nodes on
127.0.0.1, each hosting replicas of 4 shards (Raft groups), real gRPC and
RocksDB. One cluster serves the whole module; the kill -9 test runs last."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from flotilla.storecluster import StoreCluster, wait_until
from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from shard import hlc
from shard.slots import slot_of

pytestmark = pytest.mark.integration

SHARDS = 4
WATCH_QUEUE_EVENTS = 32


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    c = StoreCluster(
        tmp_path_factory.mktemp("store"),
        shards=SHARDS,
        extra_args=["--watch-queue-events", str(WATCH_QUEUE_EVENTS), "--watch-progress-ms", "300"],
    )
    try:
        c.start()
        wait_until(c.all_shards_led, timeout=30, what="a leader for every shard")
        yield c
    finally:
        c.stop()
        for nid in c.nodes:
            print(f"--- node {nid} log tail ---\n{c.log_tail(nid, 15)}")


def _routing(header: spb.ShardResponseHeader) -> str | None:
    if not header.HasField("error") or not header.error.HasField("routing"):
        return None
    return header.error.routing.WhichOneof("error")


def _follower(c: StoreCluster, shard_id: int) -> int:
    leader = c.leaders()[shard_id]
    return next(n for n in c.live() if n != leader)



def test_bounded_staleness_on_a_cut_off_leader_is_not_served_stale(cluster: StoreCluster) -> None:
    """The leader is where bounded-staleness reads fall back to; a leader
    that lost its followers (it may be deposed and not know it yet) must
    prove its state current (ReadIndex) rather than answer from it."""
    import signal
    import time

    c = cluster
    key = c.key_in(2)
    c.put(key, b"before")
    leader = c.leaders()[c.shard_of(key)]
    followers = [n for n in c.live() if n != leader]
    for n in followers:
        c.kill_signal(n, signal.SIGSTOP)
    try:
        header = c.header(c.shard_of(key))
        header.deadline_ms = int(time.time() * 1000) + 1500
        r = c.store(leader).Range(
            spb.ShardRangeRequest(
                header=header,
                consistency=spb.READ_BOUNDED_STALENESS,
                max_staleness_ms=0,
                request=epb.RangeRequest(key=key),
            ),
            timeout=10,
        )
        assert r.header.HasField("error"), f"served {list(r.response.kvs)} without proving it is still the leader"
    finally:
        for n in followers:
            c.kill_signal(n, signal.SIGCONT)
    wait_until(c.all_shards_led, timeout=30, what="leaders again after the pause")

def test_requests_name_a_hosted_shard_at_its_epoch_and_owned_keys(cluster: StoreCluster) -> None:
    c = cluster
    key = c.key_in(1)
    st = c.store(1)
    r = st.Range(spb.ShardRangeRequest(header=c.header(99), request=epb.RangeRequest(key=key)), timeout=10)
    assert _routing(r.header) == "shard_not_found"
    assert r.header.error.routing.shard_not_found.shard_id == 99

    r = st.Range(spb.ShardRangeRequest(header=c.header(1, epoch=(1, 2)), request=epb.RangeRequest(key=key)), timeout=10)
    assert _routing(r.header) == "epoch_not_match"
    enm = r.header.error.routing.epoch_not_match
    assert (enm.current_epoch.conf_version, enm.current_epoch.slot_version) == (1, 1)
    assert [(s.start, s.end) for s in enm.current_slots] == list(c.slot_ranges(1))

    other = c.key_in(2)
    w = st.Put(spb.ShardPutRequest(header=c.header(1, write=True), request=epb.PutRequest(key=other, value=b"x")), timeout=10)
    assert _routing(w.header) == "wrong_shard"
    assert w.header.error.routing.wrong_shard.slot == slot_of(other, c.slot_count)

    bad = st.Put(spb.ShardPutRequest(header=c.header(1, write=True), request=epb.PutRequest(key=b"", value=b"x")), timeout=10)
    assert bad.header.error.kv.code == spb.KvError.EMPTY_KEY


def test_writes_go_to_the_leader_and_a_retry_is_applied_once(cluster: StoreCluster) -> None:
    c = cluster
    sid = 2
    key = c.key_in(sid, "retry")
    follower = _follower(c, sid)
    req = spb.ShardPutRequest(header=c.header(sid, seq=1000), request=epb.PutRequest(key=key, value=b"v1"))
    req.header.router_id = 4242
    r = c.store(follower).Put(req, timeout=10)
    assert _routing(r.header) == "not_leader"
    nl = r.header.error.routing.not_leader
    leader = c.leaders()[sid]
    assert nl.leader_node_id == leader
    assert nl.leader_address == c.nodes[leader].address

    first = c.store(leader).Put(req, timeout=10)
    assert not first.header.HasField("error"), first.header
    assert first.response.header.revision > 0
    assert hlc.wall_ms_of(first.response.header.revision) > 1_600_000_000_000  # an HLC revision
    assert first.response.header.revision <= hlc.MAX_SAFE_REVISION  # exact as a double (#17)
    again = c.store(leader).Put(req, timeout=10)
    assert again.response.header.revision == first.response.header.revision
    got = c.get(leader, key, consistency=spb.READ_LINEARIZABLE)
    assert [(kv.value, kv.version, kv.mod_revision) for kv in got.response.kvs] == [(b"v1", 1, first.response.header.revision)]

    txn = c.store(leader).Txn(
        spb.ShardTxnRequest(
            header=c.header(sid, write=True),
            request=epb.TxnRequest(
                compare=[epb.Compare(key=key, target=epb.Compare.VERSION, result=epb.Compare.EQUAL, version=1)],
                success=[epb.RequestOp(request_put=epb.PutRequest(key=key, value=b"v2"))],
            ),
        ),
        timeout=10,
    )
    assert txn.response.succeeded and txn.response.header.revision > first.response.header.revision


def test_reads_at_each_consistency(cluster: StoreCluster) -> None:
    c = cluster
    sid = 3
    key = c.key_in(sid, "read")
    w1 = c.put(key, b"one").response.header.revision
    w2 = c.put(key, b"two").response.header.revision
    leader = c.leaders()[sid]
    follower = _follower(c, sid)

    # Linearizable on a follower: ReadIndex from the leader, so the write is there at once.
    r = c.get(follower, key, consistency=spb.READ_LINEARIZABLE)
    assert [kv.value for kv in r.response.kvs] == [b"two"]
    assert r.response.header.revision >= w2

    # Serializable: the replica's state as it is (it catches up).
    wait_until(lambda: [kv.value for kv in c.get(follower, key).response.kvs] == [b"two"], timeout=10, what="follower applied")

    # Bounded staleness: served once the follower's closed timestamp is recent enough.
    fresh = wait_until(
        lambda: (lambda r: r if not r.header.HasField("error") else None)(
            c.get(follower, key, consistency=spb.READ_BOUNDED_STALENESS, max_staleness_ms=5000)
        ),
        timeout=10,
        what="bounded-staleness read on a follower",
    )
    assert [kv.value for kv in fresh.response.kvs] == [b"two"]
    assert fresh.header.closed_ts >= w2 - 1  # at least what the write piggybacked
    stale = c.get(follower, key, consistency=spb.READ_BOUNDED_STALENESS, max_staleness_ms=0)
    assert _routing(stale.header) == "stale_read_not_ready"
    assert stale.header.error.routing.stale_read_not_ready.leader_node_id == leader

    # At a revision: the state then, on any replica whose closed timestamp passed it.
    at = c.get(follower, key, consistency=spb.READ_AT_REVISION, revision=w1)
    assert [kv.value for kv in at.response.kvs] == [b"one"]
    future = hlc.make(hlc.wall_ms_of(w2) + 3_600_000)
    nr = c.get(follower, key, consistency=spb.READ_AT_REVISION, revision=future)
    assert _routing(nr.header) == "stale_read_not_ready"
    assert nr.header.error.routing.stale_read_not_ready.needed_ts == future
    fr = c.get(leader, key, consistency=spb.READ_AT_REVISION, revision=future)
    assert fr.header.error.kv.code == spb.KvError.FUTURE_REVISION

    # Compaction: older revisions are gone, with etcd's error.
    cr = c.store(leader).Compact(
        spb.ShardCompactRequest(header=c.header(sid, write=True), request=epb.CompactionRequest(revision=w2)), timeout=10
    )
    assert not cr.header.HasField("error"), cr.header
    old = c.get(leader, key, consistency=spb.READ_AT_REVISION, revision=w1)
    assert old.header.error.kv.code == spb.KvError.COMPACTED
    assert old.header.error.kv.compact_revision == w2
    gone = list(_watch(c, leader, sid, key, b"", w1))
    assert [(m.compact_revision, len(m.events)) for m in gone] == [(w2, 0)]


def _watch(c: StoreCluster, nid: int, sid: int, key: bytes, range_end: bytes, start: int, channel: grpc.Channel | None = None):  # type: ignore[no-untyped-def]
    stub = store_pb2_grpc.StoreStub(channel) if channel is not None else c.store(nid)
    return stub.Watch(
        spb.ShardWatchRequest(
            header=c.header(sid),
            request=epb.WatchCreateRequest(key=key, range_end=range_end, start_revision=start, prev_kv=True),
            progress_interval_ms=200,
        ),
        timeout=30,
    )


def test_watch_history_then_live_with_progress(cluster: StoreCluster) -> None:
    c = cluster
    sid = 4
    k1, k2 = c.key_in(sid, "w/a"), c.key_in(sid, "w/b")
    r1 = c.put(k1, b"1").response.header.revision
    c.put(k2, b"2")
    follower = _follower(c, sid)
    stream = _watch(c, follower, sid, b"w/", b"w0", r1)
    try:
        got: list[tuple[int, bytes, bytes]] = []
        progress = 0
        wrote_live = False
        for msg in stream:
            assert not msg.header.HasField("error"), msg.header
            got.extend((ev.type, ev.kv.key, ev.kv.value) for ev in msg.events)
            if msg.progress_revision:
                progress = max(progress, msg.progress_revision)
            if len(got) == 2 and not wrote_live:
                assert got == [(mvccpb.Event.PUT, k1, b"1"), (mvccpb.Event.PUT, k2, b"2")]
                live = c.put(k1, b"3").response.header.revision
                wrote_live = True
            # The idle shard's leader closes timestamps past the write
            # (ClosedTs entries); progress notifications carry them.
            if wrote_live and len(got) >= 3 and progress > live and msg.header.closed_ts > live:
                break
        assert got[2] == (mvccpb.Event.PUT, k1, b"3")
        assert len(got) == 3
    finally:
        stream.cancel()


def test_a_watcher_that_falls_behind_is_cancelled(cluster: StoreCluster) -> None:
    c = cluster
    sid = 1
    key = c.key_in(sid, "slow")
    leader = c.leaders()[sid]
    # A client that reads nothing: gRPC flow control stops the node's sends,
    # so events pile up in the watcher's queue until it overflows.
    channel = grpc.insecure_channel(c.nodes[leader].address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        stream = _watch(c, leader, sid, key, b"", 0, channel)
        first = next(stream)  # the stream is live
        assert not first.header.HasField("error")
        value = b"x" * 32_768
        for _ in range(WATCH_QUEUE_EVENTS + 40):
            c.put(key, value)
        last = None
        for msg in stream:
            last = msg
            if msg.header.HasField("error"):
                break
        assert last is not None and _routing(last.header) == "server_busy", last
        assert "fell behind" in last.header.error.routing.server_busy.reason
    finally:
        channel.close()


def test_forward_stream_carries_batches_of_requests_for_many_shards(cluster: StoreCluster) -> None:
    c = cluster
    leaders = c.leaders()
    nid = leaders[1]
    mine = [sid for sid, n in leaders.items() if n == nid]
    other = next((sid for sid, n in leaders.items() if n != nid), None)
    reqs = []
    for i, sid in enumerate(mine):
        key = c.key_in(sid, "fwd")
        reqs.append(spb.ForwardRequest(id=10 + i, put=spb.ShardPutRequest(header=c.header(sid, write=True), request=epb.PutRequest(key=key, value=b"f"))))
        reqs.append(spb.ForwardRequest(id=100 + i, range=spb.ShardRangeRequest(header=c.header(sid), request=epb.RangeRequest(key=key))))
    if other is not None:
        reqs.append(spb.ForwardRequest(id=999, delete_range=spb.ShardDeleteRangeRequest(header=c.header(other, write=True), request=epb.DeleteRangeRequest(key=c.key_in(other)))))
    answers: dict[int, spb.ForwardResponse] = {}
    for batch in c.store(nid).Forward(iter([spb.ForwardRequestBatch(requests=reqs)]), timeout=30):
        for a in batch.responses:
            answers[a.id] = a
    assert set(answers) == {r.id for r in reqs}
    for i, _sid in enumerate(mine):
        put = answers[10 + i].put
        assert not put.header.HasField("error") and put.response.header.revision > 0
        assert not answers[100 + i].range.header.HasField("error")
    if other is not None:
        assert _routing(answers[999].delete_range.header) == "not_leader"


def test_kill9_of_a_shard_leader(cluster: StoreCluster) -> None:
    c = cluster
    sid = 2
    keys = [c.key_in(sid, f"durable{i}-") for i in range(5)]
    acked = {k: c.put(k, b"before").response.header.revision for k in keys}
    victim = c.leaders()[sid]
    c.kill(victim)
    leaders = wait_until(
        lambda: (lambda ls: ls if len(ls) == SHARDS and victim not in ls.values() else None)(c.leaders()),
        timeout=30,
        what="new leaders after kill -9",
    )
    new_leader = leaders[sid]
    for k in keys:
        r = c.get(new_leader, k, consistency=spb.READ_LINEARIZABLE)
        assert [(kv.value, kv.mod_revision) for kv in r.response.kvs] == [(b"before", acked[k])]
    after = c.put(keys[0], b"after").response.header.revision
    assert after > max(acked.values())
    c.restart(victim)
    wait_until(
        lambda: [kv.value for kv in c.get(victim, keys[0]).response.kvs] == [b"after"],
        timeout=30,
        what="restarted node caught up",
    )
    r = c.get(victim, keys[1], consistency=spb.READ_LINEARIZABLE)
    assert [kv.value for kv in r.response.kvs] == [b"before"]
