"""One fault campaign run: a real cluster on 127.0.0.1 (3 placement servers,
3 store nodes, a router following placement's map), concurrent etcd clients
through the router, a nemesis injecting faults, then the checkers.

Bounded in ops and time; the seed drives every choice the runner makes (the
processes' own timing is not deterministic, so a seed reproduces the
workload and fault schedule, not the interleaving). A failing run (or
--keep) leaves its directory: history.json, violations.txt and every
process's log.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import grpc.aio

from flotilla.campaign.checkers import Violation, check_all, check_convergence
from flotilla.campaign.history import History, Op, OpKind, Outcome, WatchEvent, WatchStream
from flotilla.campaign.nemesis import KINDS, PARTITION_KINDS, Nemesis
from flotilla.cluster import Cluster, wait_until
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb
from raft.transport.faults import REFRESH_S

__all__ = ["CampaignConfig", "RunResult", "run_campaign", "summarize", "format_summary", "VIOLATION_KINDS"]

VIOLATION_KINDS = (
    "linearizability",
    "lin_timeout",
    "acked_write_loss",
    "double_apply",
    "watch_order",
    "watch_duplicate",
    "watch_gap",
    "watch_prev_kv",
    "watch_stalled",
    "stale_read",
    "divergence",
    "lease",
    "process_died",
    "nemesis_error",
    "harness_error",
)


@dataclass
class CampaignConfig:
    seed: int = 1
    ops: int = 2000
    duration_s: float = 60.0
    nemeses: tuple[str, ...] = ("kill_leader", "pause")
    clients: int = 4
    keys: int = 6
    stores: int = 3
    """Store nodes; shards have 3 replicas, so with more, moves can succeed."""
    fault_interval_s: tuple[float, float] = (1.0, 3.0)
    op_timeout_s: float = 5.0
    keep: bool = False
    base_dir: Path | None = None
    lin_max_steps: int = 2_000_000
    log: Callable[[str], None] = print


@dataclass
class RunResult:
    seed: int
    ops: int
    ops_ok: int
    ops_unknown: int
    faults: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    crashpoints_not_fired: int = 0
    crashpoints_fired: dict[str, int] = field(default_factory=dict)
    """point -> times it fired (a crash point armed and passed)."""
    placement_ops: dict[str, int] = field(default_factory=dict)
    """"kind:ok|failed|skipped" -> count of the operations asked of placement under a fault."""
    clock_skew_ms: int = 0
    recovery_partition_s: list[float] = field(default_factory=list)
    recovery_all_s: list[float] = field(default_factory=list)
    """Per leader kill: until every client writing to the shard had a write acknowledged again."""
    recovery_partition_all_s: list[float] = field(default_factory=list)
    late_write_failures: int = 0
    """Writes to a shard whose leader was killed or isolated, invoked LATE_S after it, that failed."""
    kept_dir: str = ""
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "ops": self.ops,
            "ops_ok": self.ops_ok,
            "ops_unknown": self.ops_unknown,
            "faults": dict(self.faults),
            "violations": [str(v) for v in self.violations],
            "recovery_s": self.recovery_s,
            "crashpoints_not_fired": self.crashpoints_not_fired,
            "crashpoints_fired": self.crashpoints_fired,
            "placement_ops": self.placement_ops,
            "clock_skew_ms": self.clock_skew_ms,
            "recovery_partition_s": self.recovery_partition_s,
            "recovery_all_s": self.recovery_all_s,
            "recovery_partition_all_s": self.recovery_partition_all_s,
            "late_write_failures": self.late_write_failures,
            "kept_dir": self.kept_dir,
            "elapsed_s": round(self.elapsed_s, 1),
        }


class _Run:
    def __init__(self, cfg: CampaignConfig, cluster: Cluster, router: RouterProcess, prefix: bytes) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.router = router
        self.rng = random.Random(cfg.seed)
        self.history = History()
        self.prefix = prefix
        self.keys = self._pick_keys()
        self.lease_key = prefix + b"lease/{l}"
        self.extra: list[Violation] = []
        self.stop = asyncio.Event()
        self.ops_started = 0
        self.seq = 0
        self.last_seen: dict[tuple[int, bytes], bytes | None] = {}
        self.router_down: threading.Event | None = None  # the nemesis's: set while it has the router down

    def _pick_keys(self) -> list[bytes]:
        """cfg.keys register keys, spread over every shard."""
        stores = self.cluster.stores
        shards = stores.shard_ids()
        keys: list[bytes] = []
        i = 0
        while len(keys) < self.cfg.keys:
            want = shards[len(keys) % len(shards)]
            k = self.prefix + f"k{i}".encode()
            i += 1
            if stores.shard_of(k) == want:
                keys.append(k)
        return keys

    def now(self) -> float:
        return time.monotonic()

    def value(self, client: int) -> bytes:
        self.seq += 1
        return f"s{self.cfg.seed}-c{client}-{self.seq}".encode()

    # -- clients ------------------------------------------------------------------------------
    async def client(self, cid: int, kv: eg.KVStub, lease: eg.LeaseStub) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        h = self.history
        to = self.cfg.op_timeout_s
        while not self.stop.is_set() and len(self.history.ops) < self.cfg.ops:
            if self.router_down is not None and self.router_down.is_set():
                await asyncio.sleep(0.1)  # sleep-ok: polling interval while the nemesis has the router down
                continue
            self.ops_started += 1
            key = rng.choice(self.keys)
            r = rng.random()
            wall = int(time.time() * 1000)
            try:
                if r < 0.25:
                    v = self.value(cid)
                    op = h.invoke(cid, OpKind.PUT, key, self.now(), wall, value=v)
                    resp = await kv.Put(epb.PutRequest(key=key, value=v), timeout=to)
                    h.complete(op, self.now(), Outcome.OK, revision=resp.header.revision)
                elif r < 0.45:
                    op = h.invoke(cid, OpKind.GET, key, self.now(), wall)
                    resp = await kv.Range(epb.RangeRequest(key=key), timeout=to)
                    val, rev = (resp.kvs[0].value, resp.kvs[0].mod_revision) if resp.kvs else (None, 0)
                    h.complete(op, self.now(), Outcome.OK, output=val, revision=rev)
                    self.last_seen[(cid, key)] = val
                elif r < 0.6:
                    bound = rng.choice((200, 500, 1000))
                    op = h.invoke(cid, OpKind.STALE_GET, key, self.now(), wall, bound_ms=bound)
                    resp = await kv.Range(
                        epb.RangeRequest(key=key), timeout=to, metadata=(("max-staleness-ms", str(bound)),)
                    )
                    val, rev = (resp.kvs[0].value, resp.kvs[0].mod_revision) if resp.kvs else (None, 0)
                    h.complete(op, self.now(), Outcome.OK, output=val, revision=rev)
                elif r < 0.85:
                    v = self.value(cid)
                    exp = self.last_seen.get((cid, key))
                    op = h.invoke(cid, OpKind.CAS, key, self.now(), wall, value=v, expect=exp)
                    if exp is None:
                        cmp = epb.Compare(key=key, target=epb.Compare.VERSION, result=epb.Compare.EQUAL, version=0)
                    else:
                        cmp = epb.Compare(key=key, target=epb.Compare.VALUE, result=epb.Compare.EQUAL, value=exp)
                    resp = await kv.Txn(
                        epb.TxnRequest(
                            compare=[cmp],
                            success=[epb.RequestOp(request_put=epb.PutRequest(key=key, value=v))],
                            failure=[epb.RequestOp(request_range=epb.RangeRequest(key=key))],
                        ),
                        timeout=to,
                    )
                    h.complete(op, self.now(), Outcome.OK, output=resp.succeeded, revision=resp.header.revision)
                    if resp.succeeded:
                        self.last_seen[(cid, key)] = v
                    else:
                        rr = resp.responses[0].response_range
                        self.last_seen[(cid, key)] = rr.kvs[0].value if rr.kvs else None
                elif r < 0.93:
                    op = h.invoke(cid, OpKind.DELETE, key, self.now(), wall)
                    resp = await kv.DeleteRange(epb.DeleteRangeRequest(key=key), timeout=to)
                    h.complete(op, self.now(), Outcome.OK, output=resp.deleted, revision=resp.header.revision)
                else:
                    await self.lease_cycle(cid, kv, lease, rng)
            except grpc.aio.AioRpcError as exc:
                h.complete(op, self.now(), Outcome.UNKNOWN, error=f"{exc.code().name}: {exc.details()}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    # A router restarting or no leader: back off, or a tight loop
                    # fills the history with unknown outcomes (costly to check).
                    await asyncio.sleep(rng.uniform(0.1, 0.3))  # sleep-ok: retry backoff of a client

    async def lease_cycle(self, cid: int, kv: eg.KVStub, lease: eg.LeaseStub, rng: random.Random) -> None:
        """Grant, attach a key, revoke: after the revoke is acked the key is gone."""
        to = self.cfg.op_timeout_s
        h = self.history
        key = self.prefix + f"lease/{{l}}{cid}".encode()
        try:
            g = await lease.LeaseGrant(epb.LeaseGrantRequest(TTL=rng.choice((5, 10))), timeout=to)
        except grpc.aio.AioRpcError:
            return  # no op recorded yet: nothing to complete (a granted lease left behind just expires)
        v = self.value(cid)
        op = h.invoke(cid, OpKind.LEASE_PUT, key, self.now(), int(time.time() * 1000), value=v)
        try:
            resp = await kv.Put(epb.PutRequest(key=key, value=v, lease=g.ID), timeout=to)
            h.complete(op, self.now(), Outcome.OK, revision=resp.header.revision)
        except grpc.aio.AioRpcError as exc:
            h.complete(op, self.now(), Outcome.UNKNOWN, error=f"{exc.code().name}: {exc.details()}")
        op = h.invoke(cid, OpKind.LEASE_REVOKE, key, self.now(), int(time.time() * 1000))
        try:
            await lease.LeaseRevoke(epb.LeaseRevokeRequest(ID=g.ID), timeout=to)
        except grpc.aio.AioRpcError as exc:
            h.complete(op, self.now(), Outcome.UNKNOWN, error=f"{exc.code().name}: {exc.details()}")
            return  # revoked or not: the key goes with the lease's expiry at the latest
        h.complete(op, self.now(), Outcome.OK)
        # Deletion of attached keys is asynchronous in Flotilla (expiry/revoke deletes
        # shard by shard until done): poll, against a deadline, for the key to go.
        deadline = self.now() + 15
        while True:
            try:
                got = await kv.Range(epb.RangeRequest(key=key), timeout=to)
                if not got.kvs or got.kvs[0].lease != g.ID:
                    return
            except grpc.aio.AioRpcError:
                pass
            if self.now() > deadline:
                self.extra.append(Violation("lease", key, f"key still attached to revoked lease {g.ID:x} 15 s after the revoke"))
                return
            await asyncio.sleep(0.1)  # sleep-ok: polling interval of a deadline-bounded wait

    # -- watcher -----------------------------------------------------------------------------
    async def watcher(self, wid: int, watch: eg.WatchStub, start_rev: int) -> None:
        """Watch the prefix with prev_kv and progress notifications; resume
        from last revision + 1 after any stream end, and now and then on purpose."""
        rng = random.Random(self.rng.getrandbits(64))
        next_rev = start_rev
        stream_no = 0
        end = self.prefix[:-1] + bytes([self.prefix[-1] + 1])
        while True:
            stream_no += 1
            ws = WatchStream(wid, stream_no, next_rev)
            self.history.watch_streams.append(ws)
            q: asyncio.Queue[epb.WatchRequest | None] = asyncio.Queue()
            await q.put(
                epb.WatchRequest(
                    create_request=epb.WatchCreateRequest(
                        key=self.prefix, range_end=end, start_revision=next_rev, prev_kv=True, progress_notify=True
                    )
                )
            )

            async def reqs() -> Any:
                while (item := await q.get()) is not None:
                    yield item

            call = watch.Watch(reqs())
            restart_after = rng.randint(20, 200)
            got = 0
            try:
                async for resp in call:
                    if resp.canceled:
                        ws.canceled_reason = resp.cancel_reason
                        break
                    if not resp.events and not resp.created:
                        ws.high_water = max(ws.high_water, resp.header.revision)  # progress notify
                    for e in resp.events:
                        prev = e.prev_kv if e.HasField("prev_kv") else None
                        self.history.watch_events.append(
                            WatchEvent(
                                watcher=wid,
                                stream=stream_no,
                                kind="put" if e.type == mvccpb.Event.PUT else "delete",
                                key=e.kv.key,
                                value=e.kv.value,
                                mod_revision=e.kv.mod_revision,
                                prev_value=prev.value if prev is not None else None,
                                prev_mod_revision=prev.mod_revision if prev is not None else 0,
                            )
                        )
                        next_rev = max(next_rev, e.kv.mod_revision + 1)
                        got += 1
                    if got >= restart_after and not self.stop.is_set():
                        break  # resume on purpose: resumability
            except grpc.aio.AioRpcError as exc:
                ws.canceled_reason = f"{exc.code().name}: {exc.details()}"
            finally:
                await q.put(None)
                call.cancel()
            if self.stop.is_set() and self.watch_done():
                return
            if self.stop.is_set() and self.now() > self.watch_deadline:
                return
            await asyncio.sleep(0.05)  # sleep-ok: backoff before resuming a watch stream

    watch_deadline = float("inf")

    def watch_done(self) -> bool:
        acked = [o.revision for o in self.history.ops if o.is_write and o.outcome is Outcome.OK and o.revision]
        high = max((s.high_water for s in self.history.watch_streams), default=0)
        high = max(high, max((e.mod_revision for e in self.history.watch_events), default=0))
        return not acked or high >= max(acked)

    # -- nemesis -----------------------------------------------------------------------------
    async def nemesis(self, nem: Nemesis, schedule: list[str], t_end: float) -> None:
        rng = random.Random(self.rng.getrandbits(64))
        i = 0
        while not self.stop.is_set() and self.now() < t_end:
            lo, hi = self.cfg.fault_interval_s
            await asyncio.sleep(rng.uniform(lo, hi))  # sleep-ok: nemesis pause duration (time between faults)
            if self.stop.is_set() or self.now() >= t_end:
                break
            kind = schedule[i] if i < len(schedule) else rng.choice(self.cfg.nemeses)
            i += 1
            try:
                ev = await asyncio.to_thread(nem.run, kind)
            except Exception as exc:  # noqa: BLE001 - a node that died or never healed ends the run, reported
                died = [
                    f"store {nid} exited {n.proc.returncode}: {n.log_tail(8)}"
                    for nid, n in self.cluster.stores.nodes.items()
                    if n.proc is not None and n.proc.poll() is not None
                ]
                kind_ = "process_died" if died else "nemesis_error"
                self.extra.append(Violation(kind_, b"", f"during {kind}: {exc!r}; {' | '.join(died)}"))
                self.cfg.log(f"nemesis {kind} failed: {exc!r}")
                self.stop.set()
                return
            self.history.faults.append(ev)


def _replica_states(cluster: Cluster, keys: list[bytes]) -> dict[int, dict[bytes, tuple[bytes | None, int]]]:
    """Each live store's value of each key whose shard placement's map
    gives it a (voting) replica of (with more than 3 stores, not every store
    has every shard)."""
    voters = {
        s.descriptor.shard_id: {r.node_id for r in s.descriptor.replicas if not r.learner} for s in cluster.get_map().shards
    }
    out: dict[int, dict[bytes, tuple[bytes | None, int]]] = {}
    for nid in cluster.stores.live():
        st: dict[bytes, tuple[bytes | None, int]] = {}
        for k in keys:
            if nid not in voters.get(cluster.stores.shard_of(k), ()):
                continue
            r = cluster.stores.get(nid, k)
            if r.header.HasField("error"):
                raise RuntimeError(f"node {nid}: {r.header.error}")
            kvs = r.response.kvs
            st[k] = (kvs[0].value, kvs[0].mod_revision) if kvs else (None, 0)
        out[nid] = st
    return out


LATE_S = 3.0
"""A write to a shard whose leader was killed, invoked this long after the
kill, must not fail (issue #13: the new leader is elected well before)."""


def recovery(history: History, shard_of: Callable[[bytes], int], kind: str = "kill_leader") -> tuple[list[float], list[float], int]:
    """For each leader kill (or isolation) of a shard: the time to the
    first acknowledged write to that shard invoked after it, and the time
    until every client writing to that shard after it had a write
    acknowledged (inf for a client that never did); and how many writes to
    such shards invoked LATE_S after the fault failed. An isolation takes
    effect when the processes re-read their rule files (within 2 x
    REFRESH_S): writes invoked before that may still reach the old leader
    and do not count."""
    lag = 2 * REFRESH_S if kind in PARTITION_KINDS else 0.0
    first: list[float] = []
    every: list[float] = []
    late_failed = 0
    for f in history.faults:
        if f.kind != kind or not f.shard:
            continue
        writes = [
            o for o in history.ops
            if o.is_write and o.invoke >= f.start + lag and shard_of(o.key) == f.shard
        ]
        if not writes:
            continue
        by_client: dict[int, float] = {}
        for o in writes:
            t = o.complete - f.start if o.outcome is Outcome.OK else math.inf
            by_client[o.client] = min(by_client.get(o.client, math.inf), t)
            if o.outcome is not Outcome.OK and o.error and o.invoke >= f.start + lag + LATE_S:
                late_failed += 1
        done = [t for t in by_client.values() if t < math.inf]
        if done:
            first.append(min(done))
        every.append(max(by_client.values()))
    return first, every, late_failed


_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


async def _drive(cfg: CampaignConfig, cluster: Cluster, router: RouterProcess, prefix: bytes) -> tuple[_Run, Nemesis]:
    run = _Run(cfg, cluster, router, prefix)
    nem = Nemesis(cluster, random.Random(run.rng.getrandbits(64)), log=cfg.log, router=router)
    run.router_down = nem.router_down
    # Reconnect quickly to a router restarted on its port (gRPC's default backoff starts at 1 s, grows to 120 s).
    channel = grpc.aio.insecure_channel(router.address, options=_RECONNECT_OPTIONS)
    kv, watch, lease = eg.KVStub(channel), eg.WatchStub(channel), eg.LeaseStub(channel)
    start = await kv.Range(epb.RangeRequest(key=prefix, range_end=prefix + b"\xff"), timeout=10)
    t_end = run.now() + cfg.duration_s
    # Every run begins with one of each configured nemesis, then picks at random.
    schedule = list(cfg.nemeses)
    run.rng.shuffle(schedule)
    watchers = [asyncio.create_task(run.watcher(w, watch, start.header.revision + 1)) for w in range(2)]
    clients = [asyncio.create_task(run.client(c, kv, lease)) for c in range(cfg.clients)]
    nem_task = asyncio.create_task(run.nemesis(nem, schedule, t_end))

    async def clock() -> None:
        while run.now() < t_end and len(run.history.ops) < cfg.ops:
            await asyncio.sleep(0.2)  # sleep-ok: the campaign's own duration bound
        run.stop.set()

    await clock()
    cfg.log(f"workload done after {run.now() - t_end + cfg.duration_s:.1f}s: {len(run.history.ops)} ops")
    await nem_task  # a fault in progress heals first
    await asyncio.gather(*clients)
    run.watch_deadline = run.now() + 30
    _, pending = await asyncio.wait(watchers, timeout=35)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cfg.log(
        f"watchers: {len(run.history.watch_events)} events over {len(run.history.watch_streams)} streams, "
        f"done={run.watch_done()}"
    )
    if not run.watch_done():
        run.extra.append(Violation("watch_stalled", prefix, "watchers never reached the last acked write's revision within 30 s"))
    if nem.splits or nem.merges:
        await asyncio.to_thread(nem.sync_map)  # placement split shards: the harness's map follows
    # Final linearizable reads through the router, once every fault healed.
    for k in run.keys:
        for _ in range(50):
            try:
                r = await kv.Range(epb.RangeRequest(key=k), timeout=cfg.op_timeout_s)
                run.history.final_reads[k] = (r.kvs[0].value, r.kvs[0].mod_revision) if r.kvs else (None, 0)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # sleep-ok: retry interval of a bounded retry
    await channel.close()
    return run, nem


def run_campaign(cfg: CampaignConfig) -> RunResult:
    t0 = time.monotonic()
    base = Path(cfg.base_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"flotilla-campaign-s{cfg.seed}-", dir=base))
    cfg.log(f"campaign seed={cfg.seed} ops={cfg.ops} duration={cfg.duration_s}s nemeses={','.join(cfg.nemeses)} dir={tmp}")
    cluster = Cluster(
        tmp / "cluster",
        store_ids=tuple(range(11, 11 + cfg.stores)),
        store_args=["--snapshot-entries", "200", "--compaction-margin", "50"],
        faults=True,
    )
    router: RouterProcess | None = None
    violations: list[Violation] = []
    result = RunResult(seed=cfg.seed, ops=0, ops_ok=0, ops_unknown=0)
    crashed = False
    try:
        cluster.start()
        cluster.wait_bootstrapped()
        # Every placement server: the nemesis kills and partitions them too.
        paddr = ",".join(cluster.placement.nodes[n].address for n in cluster.placement_ids)
        (tmp / "router").mkdir()
        router = RouterProcess(tmp / "router", ["-v", "--placement", paddr, "--progress-notify-interval-ms", "300"])
        router.start()
        ch = grpc.insecure_channel(router.address)
        kvs = eg.KVStub(ch)
        wait_until(lambda: _ok(lambda: kvs.Range(epb.RangeRequest(key=b"warmup"), timeout=5)), timeout=60, what="router serving")
        ch.close()
        prefix = f"campaign/s{cfg.seed}/".encode()
        run, nem = asyncio.run(_bounded(_drive(cfg, cluster, router, prefix), cfg.duration_s + 240))
        h = run.history
        wait_until(cluster.stores.all_shards_led, timeout=60, what="every shard led at the end")
        # Convergence: replicas agree, against a deadline; then check the last snapshot.
        last: dict[int, dict[bytes, tuple[bytes | None, int]]] = {}

        def converged() -> bool:
            nonlocal last
            if nem.splits or nem.merges or cfg.stores > 3:
                nem.sync_map(timeout_s=5)
            last = _replica_states(cluster, run.keys)
            return not check_convergence(last)

        try:
            wait_until(converged, timeout=30, what="replicas converged")
        except AssertionError:
            pass  # check_convergence reports what differs
        # Skewed wall clocks widen what bounded staleness promises (checkers.check_staleness).
        skew_ms = 2 * nem.max_clock_offset_ms
        violations = [*check_all(h, last, lin_max_steps=cfg.lin_max_steps, clock_skew_ms=skew_ms), *run.extra]
        if router.proc is not None and router.proc.poll() is not None:
            violations.append(Violation("process_died", b"", f"router exited with {router.proc.returncode}"))
        for nid, n in cluster.placement.nodes.items():
            if n.proc is not None and n.proc.poll() is not None:
                violations.append(Violation("process_died", b"", f"placement {nid} exited with {n.proc.returncode}"))
        result.ops = len(h.ops)
        result.ops_ok = sum(o.outcome is Outcome.OK for o in h.ops)
        result.ops_unknown = sum(o.outcome is Outcome.UNKNOWN for o in h.ops)
        result.faults = Counter(f.kind for f in h.faults)
        result.recovery_s, result.recovery_all_s, late_kill = recovery(h, cluster.stores.shard_of)
        result.recovery_partition_s, result.recovery_partition_all_s, late_part = recovery(h, cluster.stores.shard_of, kind="partition_leader")
        result.late_write_failures = late_kill + late_part
        result.crashpoints_not_fired = nem.crashpoints_not_fired
        result.crashpoints_fired = dict(nem.crashpoints_by_point)
        result.placement_ops = {f"{k}:{o}": n for (k, o), n in sorted(nem.op_outcomes.items())}
        result.clock_skew_ms = skew_ms
        result.violations = violations
        (tmp / "history.json").write_text(h.dump())
    except Exception as exc:  # noqa: BLE001 - the run failed; reported and kept, the campaign goes on
        import traceback

        crashed = True
        violations.append(Violation("harness_error", b"", f"{exc!r}\n{traceback.format_exc()}"))
        result.violations = violations
    except BaseException:
        crashed = True
        raise
    finally:
        if router is not None:
            router.stop()
        cluster.stop()
        result.elapsed_s = time.monotonic() - t0
        if crashed or violations or cfg.keep:
            (tmp / "violations.txt").write_text("\n".join(str(v) for v in violations) + "\n")
            result.kept_dir = str(tmp)
            cfg.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


async def _bounded(coro: Any, timeout_s: float) -> Any:
    async with asyncio.timeout(timeout_s):
        return await coro


def _ok(fn: Callable[[], object]) -> bool:
    try:
        fn()
        return True
    except grpc.RpcError:
        return False


def summarize(results: list[RunResult]) -> dict[str, Any]:
    faults: Counter = Counter({k: 0 for k in KINDS})
    viol: Counter = Counter({k: 0 for k in VIOLATION_KINDS})
    crash: Counter = Counter()
    pops: Counter = Counter()
    rec: list[float] = []
    rec_part: list[float] = []
    rec_all: list[float] = []
    rec_part_all: list[float] = []
    for r in results:
        faults.update(r.faults)
        viol.update(v.kind for v in r.violations)
        crash.update(r.crashpoints_fired)
        pops.update(r.placement_ops)
        rec.extend(r.recovery_s)
        rec_part.extend(r.recovery_partition_s)
        rec_all.extend(r.recovery_all_s)
        rec_part_all.extend(r.recovery_partition_all_s)

    def pct(xs: list[float], p: float) -> float | None:
        if not xs:
            return None
        s = sorted(xs)
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)

    def figures(xs: list[float]) -> dict[str, Any]:
        return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "mean": round(statistics.fmean(xs), 3) if xs else None}

    return {
        "runs": len(results),
        "ops": sum(r.ops for r in results),
        "ops_ok": sum(r.ops_ok for r in results),
        "ops_unknown": sum(r.ops_unknown for r in results),
        "faults": dict(faults),
        "faults_total": sum(faults.values()),
        "violations": dict(viol),
        "violations_total": sum(viol.values()),
        "crashpoints": dict(sorted(crash.items())),
        "crashpoints_not_fired": sum(r.crashpoints_not_fired for r in results),
        "placement_ops": dict(sorted(pops.items())),
        "max_clock_skew_allowance_ms": max((r.clock_skew_ms for r in results), default=0),
        "recovery_leader_kill_to_first_write_s": figures(rec),
        "recovery_leader_isolation_to_first_write_s": figures(rec_part),
        "recovery_leader_kill_to_every_writer_s": figures(rec_all),
        "recovery_leader_isolation_to_every_writer_s": figures(rec_part_all),
        "late_write_failures": sum(r.late_write_failures for r in results),
        "seeds": [r.seed for r in results],
        "kept": [r.kept_dir for r in results if r.kept_dir],
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"runs: {s['runs']}  seeds: {s['seeds']}",
        f"ops: {s['ops']} (ok {s['ops_ok']}, unknown outcome {s['ops_unknown']})",
        f"faults injected (total {s['faults_total']}): " + ", ".join(f"{k}={v}" for k, v in s["faults"].items()),
        "violations: " + ", ".join(f"{k}={v}" for k, v in s["violations"].items()) + f"  (total {s['violations_total']})",
        "crash points: " + (", ".join(f"{k}={v}" for k, v in s["crashpoints"].items()) or "none armed"),
        f"crash points not fired (not reached in the window, or not honoured): {s['crashpoints_not_fired']}",
        "placement operations under faults: " + (", ".join(f"{k}={v}" for k, v in s["placement_ops"].items()) or "none"),
        f"staleness bound allowance for clock skew: +{s['max_clock_skew_allowance_ms']} ms",
        "leader-kill -> first write recovery: n={n} p50={p50}s p99={p99}s".format(**s["recovery_leader_kill_to_first_write_s"]),
        "leader-isolation -> first write recovery: n={n} p50={p50}s p99={p99}s".format(
            **s["recovery_leader_isolation_to_first_write_s"]
        ),
        "leader-kill -> every writer recovered: n={n} p50={p50}s p99={p99}s".format(**s["recovery_leader_kill_to_every_writer_s"]),
        "leader-isolation -> every writer recovered: n={n} p50={p50}s p99={p99}s".format(
            **s["recovery_leader_isolation_to_every_writer_s"]
        ),
        f"writes failed {LATE_S:g} s or more after their shard's leader was killed or isolated: {s['late_write_failures']}",
    ]
    if s["kept"]:
        lines.append("kept: " + ", ".join(s["kept"]))
    return "\n".join(lines)
