"""Merging two shards with real processes (issue #7): 3 placement servers, 3
stores, 2 shards on the same 3 stores, and a router (`flotilla server
--router --join`), all on 127.0.0.1.

Keys are written to both shards through the router; a watch over the
prefix is opened through the router; then `flotilla ctl merge 1 2` runs
while a writer keeps putting keys through the router. Then:

- the operator succeeds and the map holds one shard fewer, whose slots are
  both shards' slots;
- every acknowledged put (before, during and after the merge) reads back
  through the router, linearizably;
- the watch opened before the merge delivered every put made after it was
  created, exactly once, in revision order (the source shard's feed
  handed over to the target's);
- the source's replica is destroyed on every store, and after a restart of
  every store all the acknowledged keys are still there.

A second cluster (4 stores) has the two shards on different nodes: the
merge operator first moves the source's replica onto the target's nodes.
Another (4 stores) merges a shard whose replica was repaired away while its
store was down; back up, that store destroys the stray replica (the map
lists the merged shard as retired). A third has a store exit (FLOTILLA_CRASH_AT=merge_apply) between applying the
merge and destroying the source's replica; restarted, it destroys it and
keeps the data. A fourth runs placement with `--merge-keys`: the scheduler
merges the two small shards by itself.

Every wait has a deadline (wait_until); the harness kills only the
processes it started.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.cluster import Cluster, running, wait_until
from flotilla.raftcluster import REPO
from flotillapb import placement_pb2 as ppb
from flotillapb import store_pb2 as spb
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc
from shard import slots
from tests.integration.routerproc import Router
from tests.integration.storedata import hosted, keys_in_slots

pytestmark = pytest.mark.integration

SLOT_COUNT = 256
PREFIX = b"m/"


class Watcher:
    """An etcd watch through the router (PREFIX, or one key), read by a thread."""

    def __init__(self, channel: grpc.Channel, key: bytes = b"") -> None:
        self.events: list[object] = []
        self.created = threading.Event()
        self.lock = threading.Lock()
        self._requests: queue.Queue[epb.WatchRequest | None] = queue.Queue()
        end = b"" if key else PREFIX[:-1] + bytes([PREFIX[-1] + 1])
        self._requests.put(epb.WatchRequest(create_request=epb.WatchCreateRequest(key=key or PREFIX, range_end=end)))
        self._stream = rpc_pb2_grpc.WatchStub(channel).Watch(self._iter_requests())
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _iter_requests(self) -> Iterator[epb.WatchRequest]:
        while (r := self._requests.get()) is not None:
            yield r

    def _pump(self) -> None:
        try:
            for resp in self._stream:
                if resp.created:
                    self.created.set()
                assert not resp.canceled, f"the watch was cancelled: {resp.cancel_reason}"
                with self.lock:
                    self.events.extend(resp.events)
        except grpc.RpcError:
            pass  # closed by stop()

    def keys_seen(self) -> list[tuple[bytes, int]]:
        with self.lock:
            return [(e.kv.key, e.kv.mod_revision) for e in self.events]  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._requests.put(None)
        self._stream.cancel()
        self._thread.join(timeout=10)


class BackgroundWriter:
    """Puts PREFIX/bg-<i> through the router until stopped; remembers which were acknowledged."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.acked: list[bytes] = []
        self.spans: list[tuple[float, float]] = []
        """(start, end) of each acknowledged put, time.monotonic()."""
        self.failed: list[tuple[bytes, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i in range(100_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            key = PREFIX + f"bg-{i:05d}".encode()
            t0 = time.monotonic()
            try:
                self.router.put(key, b"bg")
                self.spans.append((t0, time.monotonic()))
                self.acked.append(key)
            except grpc.RpcError as exc:
                self.failed.append((key, f"{exc.code().name} {exc.details()}"))

    def count(self) -> int:
        return len(self.acked)

    def overlapping(self, start: float, end: float) -> int:
        """Acknowledged puts that were in flight at some moment of [start, end]."""
        return sum(1 for a, b in list(self.spans) if a <= end and b >= start)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()


def ctl(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(c.placement.nodes[n].address for n in c.placement_ids)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "flotilla.ctl", "--endpoints", endpoints, *args], capture_output=True, text=True, timeout=60, env=env)


def ctl_merge(c: Cluster) -> subprocess.CompletedProcess[str]:
    """`flotilla ctl merge 1 2`, again while either shard has an operator
    running: right after the bootstrap the scheduler may still be moving a
    leader, and placement refuses a second operator on a shard
    (FAILED_PRECONDITION "... has operator N running")."""

    def attempt() -> subprocess.CompletedProcess[str] | None:
        out = ctl(c, "merge", "1", "2")
        return None if out.returncode != 0 and re.search(r"has operator \d+ running", out.stderr) else out

    return wait_until(attempt, timeout=90, what="ctl merge 1 2 accepted (no operator running on either shard)")


def operator(c: Cluster, op_id: int) -> ppb.OperatorInfo | None:
    return next((o for o in c.call("ListOperators", ppb.ListOperatorsRequest()).operators if o.id == op_id), None)


def wait_merged(c: Cluster, op_id: int, *, timeout: float) -> ppb.OperatorInfo:
    """Wait for merge operator op_id to succeed (one that ended otherwise is
    what the timeout reports)."""

    def done() -> ppb.OperatorInfo | None:
        op = operator(c, op_id)
        assert op is not None and op.state in ("running", "success"), op
        return op if op.state == "success" else None

    return wait_until(done, timeout=timeout, what=f"merge operator {op_id} succeeds")


def keys_of_shard(c: Cluster, ranges: list[tuple[int, int]], n: int, tag: str) -> list[bytes]:
    out: list[bytes] = []
    for i in range(10_000):
        k = PREFIX + f"{tag}-{i}".encode()
        if any(lo <= slots.slot_of(k, SLOT_COUNT) < hi for lo, hi in ranges):
            out.append(k)
            if len(out) == n:
                return out
    raise AssertionError(f"no {n} keys in slots {ranges}")


@contextlib.contextmanager
def with_router(c: Cluster, tmp: Path) -> Iterator[Router]:
    """c running (flotilla.cluster.running: started, bootstrapped, its logs
    printed on failure, stopped) with a router; the router's log tail is
    printed on failure too."""
    with running(c):
        router = Router(c, tmp / "router")
        try:
            yield router
        except BaseException:
            print(router.proc.log_tail(80))
            raise
        finally:
            router.stop()


def put_in_both_shards(c: Cluster, router: Router, ranges: dict[int, list[tuple[int, int]]], n: int, tag: str) -> dict[bytes, bytes]:
    """n keys in each of shards 1 and 2 (value b"v-" + key), through the
    router (it retries until it knows the map): key -> acknowledged value."""
    acked: dict[bytes, bytes] = {}
    for sid in (1, 2):
        for k in keys_of_shard(c, ranges[sid], n, f"{tag}{sid}"):
            wait_until(lambda k=k: router.put(k, b"v-" + k) or True, timeout=60, what=f"put {k!r}")
            acked[k] = b"v-" + k
    return acked


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Router]]:
    tmp = tmp_path_factory.mktemp("merge")
    c = Cluster(tmp, initial_shards=2, slot_count=SLOT_COUNT)
    with with_router(c, tmp) as router:
        yield c, router


def test_ctl_merge_two_shards_under_writes_with_a_watch_and_a_restart(cluster: tuple[Cluster, Router]) -> None:
    c, router = cluster
    m = c.get_map()
    shards = {s.descriptor.shard_id: s.descriptor for s in m.shards}
    assert set(shards) == {1, 2}
    assert {r.node_id for r in shards[1].replicas} == {r.node_id for r in shards[2].replicas}
    ranges = {sid: [(r.start, r.end) for r in d.slots] for sid, d in shards.items()}

    # keys in both shards, through the router (it retries until it knows the map)
    acked = put_in_both_shards(c, router, ranges, 8, "before")

    watcher = Watcher(router.channel)
    # a watch of one key of the source shard: its only shard leaves the map
    single_key = keys_of_shard(c, ranges[2], 1, "single")[0]
    single = Watcher(router.channel, single_key)
    try:
        assert watcher.created.wait(30), "the watch was not created"
        assert single.created.wait(30), "the one-key watch was not created"
        router.put(single_key, b"s1")
        # A put after the watch exists, in each shard: seen by the watch
        after_watch: dict[bytes, bytes] = {}
        for sid in (1, 2):
            for k in keys_of_shard(c, ranges[sid], 3, f"watched{sid}"):
                router.put(k, b"w")
                after_watch[k] = b"w"
        wait_until(lambda: {k for k, _ in watcher.keys_seen()} >= set(after_watch), timeout=30, what="the watch sees the first puts")

        writer = BackgroundWriter(router)
        wait_until(lambda: writer.count() >= 5, timeout=60, what="background writes start")
        t_ctl = time.monotonic()
        out = ctl_merge(c)
        assert out.returncode == 0, out.stderr
        match = re.search(r"operator (\d+) \(merge\) started on shard 2", out.stdout)
        assert match, out.stdout
        op_id = int(match.group(1))

        wait_merged(c, op_id, timeout=120)
        t_done = time.monotonic()
        acked_then = writer.count()

        # the map: one shard, with both shards' slots; the router follows
        merged = wait_until(lambda: (mm := c.get_map()) and len(mm.shards) == 1 and mm, timeout=30, what="one shard in the map")
        d = merged.shards[0].descriptor
        assert d.shard_id == 1
        assert slots.normalize([(r.start, r.end) for r in d.slots]) == slots.normalize(ranges[1] + ranges[2])

        # writes after the merge, in both halves of the slots
        router.put(single_key, b"s2")
        after_watch[single_key] = b"s2"
        for sid in (1, 2):
            for k in keys_of_shard(c, ranges[sid], 3, f"after{sid}"):
                router.put(k, b"a")
                after_watch[k] = b"a"
        wait_until(lambda: writer.count() >= acked_then + 5, timeout=60, what="background writes go on after the merge")
        writer.stop()
        during = writer.overlapping(t_ctl, t_done)
        print(f"merge (ctl to success) took {t_done - t_ctl:.2f}s; {during} background puts in flight meanwhile were acknowledged, {len(writer.failed)} failed")
        assert during > 0, "no put in flight during the merge was acknowledged"
        # A put may fail only as etcd lets it (outcome unknown after the
        # router's 7 s deadline, e.g. an election on a loaded host), and
        # rarely: the merge itself makes the router retry, never fail.
        assert len(writer.failed) <= 2 and all(why.startswith("UNAVAILABLE") for _, why in writer.failed), writer.failed
        for k in writer.acked:
            after_watch[k] = b"bg"
        acked.update(after_watch)
        unknown = {k for k, _ in writer.failed}
        for k in unknown:  # applied or not, but nothing else
            assert router.get(k) in (None, b"bg"), k

        # every acknowledged put reads back, linearizably, through the router
        for k, v in sorted(acked.items()):
            assert router.get(k) == v, f"{k!r}: acknowledged {v!r}"

        # the watch: every put made after it was created, once, in revision order
        def watch_complete() -> bool:
            return {k for k, _ in watcher.keys_seen()} >= set(after_watch)

        wait_until(watch_complete, timeout=60, what="the watch delivers every put made after it was created")
        seen = watcher.keys_seen()
        assert len(seen) == len(set(seen)), "the watch delivered an event twice"
        revs = [r for _, r in seen]
        assert revs == sorted(revs), "the watch's events are out of revision order"
        assert {k for k, _ in seen} - unknown == set(after_watch), "the watch delivered a put it should not have"
        # the one-key watch: both puts, once each, the second from the merged shard
        wait_until(lambda: len(single.keys_seen()) >= 2, timeout=60, what="the one-key watch sees the put after the merge")
        got = single.keys_seen()
        assert [k for k, _ in got] == [single_key, single_key] and got[0][1] < got[1][1], got
    finally:
        watcher.stop()
        single.stop()

    # the source's replica is destroyed on every store; the slots' data stays (the target's)
    for nid in c.store_ids:
        wait_until(lambda nid=nid: 2 not in hosted(c, nid), timeout=60, what=f"store {nid} destroys shard 2")

    # restart every store: everything acknowledged is still there, shard 2 does not come back
    c.stores.stop()
    for nid in c.store_ids:
        c.stores._spawn(nid)
    for nid in c.store_ids:
        c.stores._await_ready(nid)
    for nid in c.store_ids:
        wait_until(lambda nid=nid: hosted(c, nid) == {1}, timeout=60, what=f"store {nid} hosts shard 1 only")
    for k, v in sorted(acked.items()):
        got = wait_until(lambda k=k: _get_retrying(router, k), timeout=60, what=f"read {k!r} after the restart")
        assert got == v, f"{k!r} after the restart: read {got!r}, acknowledged {v!r}"
    assert len(c.get_map().shards) == 1


def _get_retrying(router: Router, key: bytes) -> bytes | None:
    try:
        return router.get(key) or b"<missing>"
    except grpc.RpcError:
        return None


def test_ctl_merge_moves_the_sources_replicas_onto_the_targets_nodes_first(tmp_path: Path) -> None:
    """4 stores: shard 1 on 11,12,13 and shard 2 on 11,12,14 (placement's
    bootstrap). The merge operator first moves shard 2's replica from 14 to
    13, then merges; every acknowledged key reads back through the router."""
    c = Cluster(tmp_path, store_ids=(11, 12, 13, 14), initial_shards=2, slot_count=SLOT_COUNT)
    with with_router(c, tmp_path) as router:
        shards = {s.descriptor.shard_id: s.descriptor for s in c.get_map().shards}
        nodes = {sid: {r.node_id for r in d.replicas} for sid, d in shards.items()}
        assert nodes[1] != nodes[2] and len(nodes[1]) == len(nodes[2]) == 3, nodes
        ranges = {sid: [(r.start, r.end) for r in d.slots] for sid, d in shards.items()}
        acked = put_in_both_shards(c, router, ranges, 6, "mv")
        out = ctl_merge(c)
        assert out.returncode == 0, out.stderr
        match = re.search(r"operator (\d+) \(merge\) started on shard 2: \*add-learner\((\d+)\)", out.stdout)
        assert match, out.stdout
        assert {int(match.group(2))} == nodes[1] - nodes[2]
        op_id = int(match.group(1))

        wait_merged(c, op_id, timeout=180)
        m = wait_until(lambda: (mm := c.get_map()) and len(mm.shards) == 1 and mm, timeout=30, what="one shard in the map")
        d = m.shards[0].descriptor
        assert d.shard_id == 1 and {r.node_id for r in d.replicas} == nodes[1]
        assert slots.normalize([(r.start, r.end) for r in d.slots]) == slots.normalize(ranges[1] + ranges[2])
        for k, v in sorted(acked.items()):
            assert router.get(k) == v, f"{k!r}: acknowledged {v!r}"
        for k in keys_of_shard(c, ranges[2], 3, "mv-after"):
            router.put(k, b"a")
            assert router.get(k) == b"a"
        for nid in c.store_ids:
            wait_until(lambda nid=nid: 2 not in hosted(c, nid), timeout=60, what=f"store {nid} no longer hosts shard 2")


def test_a_replica_left_behind_before_a_merge_is_destroyed_when_its_store_returns(tmp_path: Path) -> None:
    """4 stores, shard 2 on 11,12,14. Store 14 stops; placement repairs shard
    2 onto 13 (14 never hears of its removal: its replica's configuration
    still has it); shard 2 is merged into shard 1. Restarted, store 14 finds
    shard 2 gone from the map, neither assigned nor left behind at a newer
    conf_version: only the map's retired list says it is a stray. It destroys
    the replica and its slots' data, and does not bring it back after a
    restart."""
    c = Cluster(tmp_path, store_ids=(11, 12, 13, 14), initial_shards=2, slot_count=SLOT_COUNT)
    with with_router(c, tmp_path) as router:
        shards = {s.descriptor.shard_id: s.descriptor for s in c.get_map().shards}
        nodes = {sid: {r.node_id for r in d.replicas} for sid, d in shards.items()}
        assert 14 in nodes[2] and 14 not in nodes[1], nodes
        ranges = {sid: [(r.start, r.end) for r in d.slots] for sid, d in shards.items()}
        acked = put_in_both_shards(c, router, ranges, 6, "lb")
        revs = lambda: {n: c.stores.shard_status(n, 2).revision for n in sorted(nodes[2])}  # noqa: E731
        wait_until(lambda: len(set(revs().values())) == 1, timeout=60, what="every replica of shard 2 applied every put")
        c.stores.nodes[14].stop()

        def repaired() -> bool:
            d = next(s.descriptor for s in c.get_map().shards if s.descriptor.shard_id == 2)
            return {r.node_id for r in d.replicas if not r.learner} == nodes[1] and not [o for o in c.call("ListOperators", ppb.ListOperatorsRequest()).operators if o.state == "running"]

        wait_until(repaired, timeout=120, what="shard 2 repaired onto shard 1's nodes while store 14 is down")
        out = ctl_merge(c)
        assert out.returncode == 0, out.stderr
        match = re.search(r"operator (\d+) \(merge\) started", out.stdout)
        assert match, out.stdout
        op_id = int(match.group(1))

        wait_merged(c, op_id, timeout=180)
        m = wait_until(lambda: (mm := c.get_map()) and len(mm.shards) == 1 and mm, timeout=30, what="one shard in the map")
        assert list(m.retired_shards) == [2]
        assert keys_in_slots(c, 14, ranges[2]) > 0, "store 14 held none of shard 2's keys before it came back"
        c.stores._spawn(14)  # noqa: SLF001 - restart in place
        c.stores._await_ready(14)  # noqa: SLF001
        wait_until(lambda: 2 not in hosted(c, 14), timeout=60, what="store 14 destroys its stray replica of shard 2")
        c.stores.nodes[14].stop()
        assert keys_in_slots(c, 14, ranges[2]) == 0, "store 14 still stores keys of the merged shard's slots"
        c.stores._spawn(14)  # noqa: SLF001
        c.stores._await_ready(14)  # noqa: SLF001
        assert 2 not in hosted(c, 14), "the merged shard came back on store 14 after a restart"
        for k, v in sorted(acked.items()):
            assert router.get(k) == v, f"{k!r}: acknowledged {v!r}"


def test_a_store_that_crashes_between_the_merge_and_the_sources_destruction_recovers(tmp_path: Path) -> None:
    """Store 13 exits (as kill -9 would: FLOTILLA_CRASH_AT=merge_apply) right
    after its replica of shard 1 applied the CommitMerge, before it destroyed
    its replica of shard 2. Restarted, it destroys shard 2 (merged, by its
    meta) instead of serving it, keeps the slots' data (now shard 1's), and
    serves every acknowledged key from its own replica."""
    c = Cluster(tmp_path, initial_shards=2, slot_count=SLOT_COUNT)
    c.stores.node_env[13] = {"FLOTILLA_CRASH_AT": "merge_apply:1"}
    with with_router(c, tmp_path) as router:
        ranges = {s.descriptor.shard_id: [(r.start, r.end) for r in s.descriptor.slots] for s in c.get_map().shards}
        acked = put_in_both_shards(c, router, ranges, 6, "cr")
        out = ctl_merge(c)
        assert out.returncode == 0, out.stderr
        wait_until(lambda: not c.stores.nodes[13].alive and c.stores.nodes[13].returncode == 137, timeout=120, what="store 13 exits at the merge_apply crash point")
        wait_until(lambda: len(c.get_map().shards) == 1, timeout=120, what="one shard in the map")
        del c.stores.node_env[13]
        c.stores._spawn(13)
        c.stores._await_ready(13)
        wait_until(lambda: hosted(c, 13) == {1}, timeout=60, what="restarted store 13 hosts shard 1 only")

        def local_reads() -> bool:
            epoch = c.stores.shard_status(13, 1).descriptor.epoch
            for k, v in acked.items():
                req = spb.ShardRangeRequest(
                    header=spb.RequestHeader(shard_id=1, epoch=epoch), consistency=spb.READ_SERIALIZABLE, request=epb.RangeRequest(key=k)
                )
                r = c.stores.store(13).Range(req, timeout=10)
                assert not r.header.HasField("error"), r.header.error
                if [kv.value for kv in r.response.kvs] != [v]:
                    return False
            return True

        wait_until(local_reads, timeout=60, what="store 13 serves every acknowledged key from its replica of shard 1")
        for k, v in sorted(acked.items()):
            assert router.get(k) == v, f"{k!r}: acknowledged {v!r}"


def test_the_scheduler_merges_small_shards_when_given_a_merge_threshold(tmp_path: Path) -> None:
    """`--merge-keys 1000` on the placement servers: two near-empty shards on
    the same stores merge without a command; their keys stay readable."""
    c = Cluster(tmp_path, initial_shards=2, slot_count=SLOT_COUNT, placement_args=["--merge-keys", "1000"])
    with with_router(c, tmp_path) as router:
        keys = [PREFIX + f"auto-{i}".encode() for i in range(10)]
        for k in keys:
            wait_until(lambda k=k: router.put(k, b"v") or True, timeout=60, what=f"put {k!r}")
        wait_until(lambda: len(c.get_map().shards) == 1, timeout=120, what="the scheduler merges the two shards")

        def merged_op() -> ppb.OperatorInfo | None:
            ops = c.call("ListOperators", ppb.ListOperatorsRequest()).operators
            return next((o for o in ops if o.kind == "merge" and o.state == "success"), None)

        op = wait_until(merged_op, timeout=30, what="a merge operator of the scheduler succeeds")
        assert "below the merge thresholds" in op.note, op
        assert c.get_map().shards[0].descriptor.slots[0].start == 0
        for k in keys:
            assert router.get(k) == b"v", k


def test_a_frozen_source_whose_merge_operator_was_cancelled_is_merged_anyway(tmp_path: Path) -> None:
    """A freeze cannot be undone and a frozen shard serves nothing, so a merge
    whose operator ended after the freeze (cancelled here; timed out, or lost
    with a placement leader, elsewhere) must still finish: the scheduler
    starts it again from the replicas' freeze reports. A paused node holds
    the first operator before its CommitMerge (it cannot report its freeze)."""
    c = Cluster(tmp_path / "c", initial_shards=2, slot_count=SLOT_COUNT, down_after_s=120)
    with running(c):

        def settled() -> ppb.ClusterMap | None:
            ops = c.call("ListOperators", ppb.ListOperatorsRequest()).operators
            m = c.get_map()
            leaders = [s.descriptor.leader_node_id for s in m.shards]
            # Leaders on two nodes: the scheduler has no leader balancing left to do.
            return m if not any(o.state == "running" for o in ops) and all(leaders) and len(set(leaders)) == len(leaders) else None

        m = wait_until(settled, timeout=60, what="leaders balanced and no operator running")
        leaders = {s.descriptor.leader_node_id for s in m.shards}
        idle = [n for n in c.store_ids if n not in leaders]
        assert idle, leaders  # 2 shards, 3 stores
        paused = idle[0]
        live = [n for n in c.store_ids if n != paused]
        source_version = next(s.descriptor.epoch.slot_version for s in m.shards if s.descriptor.shard_id == 2)

        def frozen_on_live_replicas() -> bool:
            versions = [s.descriptor.epoch.slot_version for n in live for s in c.stores.status(n).shards if s.descriptor.shard_id == 2]
            return len(versions) == len(live) and all(v > source_version for v in versions)

        c.stores.nodes[paused].send_signal(signal.SIGSTOP)
        try:
            out = ctl_merge(c)
            assert out.returncode == 0, out.stderr
            match = re.search(r"operator (\d+) \(merge\) started on shard 2", out.stdout)
            assert match, out.stdout
            op_id = int(match.group(1))
            wait_until(frozen_on_live_replicas, timeout=60, what="shard 2 frozen on the live nodes")
            cancelled = ctl(c, "cancel", str(op_id))
            assert cancelled.returncode == 0, cancelled.stderr
            first = operator(c, op_id)
            assert first is not None and first.state == "cancelled", first
        finally:
            c.stores.nodes[paused].send_signal(signal.SIGCONT)
        merged = wait_until(lambda: (mm := c.get_map()) and len(mm.shards) == 1 and mm, timeout=90, what="shard 2 merged by a new operator")
        assert merged.shards[0].descriptor.shard_id == 1

        def finished_by_the_scheduler() -> bool:
            ops = c.call("ListOperators", ppb.ListOperatorsRequest()).operators
            return any(o.kind == "merge" and o.state == "success" and "no operator finishes" in o.note for o in ops)

        wait_until(finished_by_the_scheduler, timeout=30, what="the scheduler's merge operator succeeded")

