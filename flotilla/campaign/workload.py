"""The workload of one campaign run (flotilla/campaign/runner.py): concurrent
etcd clients through the router (put, get, bounded-staleness get, CAS,
delete, lease put and revoke), watchers over the run's prefix, and the
nemesis schedule, all recording into one History."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import grpc
import grpc.aio

from flotilla.campaign.checkers import Violation
from flotilla.campaign.config import CampaignConfig
from flotilla.campaign.history import History, OpKind, Outcome, WatchEvent, WatchStream
from flotilla.campaign.nemesis import Nemesis
from flotilla.cluster import Cluster
from flotilla.router_main import RouterProcess
from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as eg
from flotillapb.etcd.mvccpb import kv_pb2 as mvccpb

__all__ = ["Workload"]


class Workload:
    """The run's clients, watchers and fault schedule, and the history they
    record (every choice drawn from the seed)."""

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
        self.nemesis_over = asyncio.Event()
        """Set once the nemesis healed its last fault."""
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

    def op_count(self) -> int:
        """Operations recorded so far (the run ends at cfg.ops)."""
        return len(self.history.ops)

    async def setup(self, kv: eg.KVStub) -> None:
        """Before the clients and the nemesis start (bank.py: the accounts)."""

    def extra_tasks(self, kv: eg.KVStub) -> list[Any]:
        """Coroutines to run beside the clients until the run stops (bank.py: the prober)."""
        return []

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
        try:
            await self._nemesis(nem, schedule, t_end)
        finally:
            self.nemesis_over.set()

    async def _nemesis(self, nem: Nemesis, schedule: list[str], t_end: float) -> None:
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
