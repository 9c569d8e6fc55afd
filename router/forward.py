"""Calls from the router to store nodes, with routing retries.

One gRPC channel per node address (router/stream.py). Requests go over one
long-lived batched ``Store.Forward`` stream per node (store.proto: every hop after the client's
own call is batched), or as unary calls (``use_forward_stream=False``, and
the fallback when a node answers Forward with UNIMPLEMENTED).

``Forwarder.call`` carries one etcd request to the shard that owns it:

- the replica: the leader for writes and linearizable reads (any replica
  when the leader is unknown); any replica, in turn, for serializable reads;
  for bounded-staleness and at-revision reads, one whose last reported
  closed timestamp is enough, in turn, else the leader (router/slots.py);
- one attempt takes at most ``attempt_timeout_s`` (two election timeouts),
  never the whole deadline: the store is given that deadline, and the
  router waits a little longer for the store's own answer. A node that
  does not answer (refused, broken, or silent for the attempt) becomes
  suspect for every shard (router/health.py) and is skipped until a probe
  finds it answering again; a write that succeeds on a node the cache did
  not name as leader makes that node the leader;
- NotLeader moves the leader in the cache and retries (a replica naming a
  leader this request set aside sends the request back to it: a leader
  that dropped a proposal mid-transfer is asked again; a hint naming a
  suspect node means the replica has not noticed its leader is gone, so
  another replica is asked, with a short wait once all were); WrongShard and
  ShardNotFound refresh the map and retry; EpochNotMatch takes the newer
  descriptors it carries (or tries another replica when that replica is
  behind); StaleReadNotReady goes to the leader; ServerBusy backs off. All
  within the request's deadline;
- writes carry (router_id, seq, seq_floor) and every retry reuses the seq
  (the Raft thesis's client sessions, §6.3). One router id per router
  process; seqs come from one counter, and seq_floor is the lowest seq still
  in flight (the next seq when none is): every seq below it has its answer
  here, so the shard keeps outcomes for the window [seq_floor, ...) only
  and answers an older seq OUTCOME_UNKNOWN, never applying it again. At
  most ``max_writes_in_flight`` writes are in flight (backpressure). A
  write whose answer was lost is retried with the same seq; if the
  deadline passes first, the client gets UNAVAILABLE saying the outcome is
  unknown;
- KV errors are final, mapped by router/etcd_errors.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio

from flotillapb import store_pb2 as spb
from flotillapb import store_pb2_grpc
from router import hlc as hlcmod
from router import slots
from router.cache import RoutingCache, ShardRoute, route_from_pb
from router.etcd_errors import EtcdError, from_kv_error
from router.health import NodeHealth
from router.stream import Channels, ForwardStream, StreamBroken, WriteSeqs

__all__ = [
    "ANSWER_MARGIN_S",
    "ATTEMPT_TIMEOUT_S",
    "Answer",
    "Channels",
    "Forwarder",
    "LockedTooLong",
    "ReadMode",
    "StreamBroken",
    "WriteSeqs",
]

log = logging.getLogger(__name__)

BACKOFF_S = 0.05
ATTEMPT_TIMEOUT_S = 2.0
"""One attempt's time: two election timeouts at the stores' defaults (10
ticks of 100 ms, randomized up to twice that). A leader that is gone is
replaced within that; an attempt never takes the whole deadline."""
ANSWER_MARGIN_S = 0.25
"""The router waits this much past the deadline it gives the store, so the
store's own "not applied in time" answer arrives before the router gives up."""

# kind -> (ShardXRequest class, unary method name)
KINDS: dict[str, tuple[type, str]] = {
    "range": (spb.ShardRangeRequest, "Range"),
    "put": (spb.ShardPutRequest, "Put"),
    "delete_range": (spb.ShardDeleteRangeRequest, "DeleteRange"),
    "txn": (spb.ShardTxnRequest, "Txn"),
    "compact": (spb.ShardCompactRequest, "Compact"),
    "txn_part": (spb.ShardTxnPartRequest, "TxnPart"),
}
WRITES = frozenset({"put", "delete_range", "txn", "compact", "txn_part"})
LOCK_BACKOFF_S = 0.004
"""The first wait of a request that met a txn's lock (a txn across shards
holds it for a few Raft rounds); it doubles up to BACKOFF_S."""

LockResolver = Callable[[int, spb.TxnLocked, float], Awaitable[None]]
"""(shard id, the lock met, deadline): resolve a lock whose coordinator went
quiet (router/txn2pc.py)."""


class LocalStore(Protocol):
    """The store node of the router's own process (shard/local.py): its
    Store servicer, called in-process."""

    node_id: int

    async def call(self, kind: str, request: Any) -> Any: ...


class LockedTooLong(Exception):
    """A request met a txn's lock for longer than its lock_patience_s."""


@dataclass(frozen=True, slots=True)
class ReadMode:
    consistency: int = spb.READ_LINEARIZABLE
    max_staleness_ms: int = 0
    revision: int = 0  # with READ_AT_REVISION


@dataclass(frozen=True, slots=True)
class Answer:
    response: Any  # the etcd response message
    header: spb.ShardResponseHeader
    node_id: int


class Forwarder:
    def __init__(
        self,
        cache: RoutingCache,
        channels: Channels,
        *,
        router_id: int,
        use_forward_stream: bool = True,
        max_writes_in_flight: int = 4096,
        wall_ms: Callable[[], int] | None = None,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        health: NodeHealth | None = None,
    ) -> None:
        self.cache = cache
        self.attempt_timeout_s = attempt_timeout_s
        self.health = health or NodeHealth()
        self.channels = channels
        self.router_id = router_id
        self.hlc = hlcmod.Hlc()
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._use_stream = use_forward_stream
        self._streams: dict[str, ForwardStream] = {}
        self._turn = itertools.count()
        self._read_turns: dict[int, int] = {}
        """Per shard: reads that could go to any replica so far (each shard's
        own turn spreads its reads evenly, whatever the mix of shards)."""
        self.write_seqs = WriteSeqs(max_writes_in_flight)
        self.replica_counts: dict[tuple[int, int], int] = {}  # (shard, node) -> reads served (observability)
        self.retries: dict[str, int] = {}
        """Attempts retried, by reason: unreachable, no_address, future_revision, or the
        RoutingError's kind (not_leader, epoch_not_match, ...). Counted only on a retry (metrics)."""
        self.last_revision = 0  # the largest revision any shard answered with
        self.lock_resolver: LockResolver | None = None
        """Set by the txn coordinator: called when a request meets a lock older
        than lock_recovery_s (router/txn2pc.py)."""
        self.lock_recovery_s = attempt_timeout_s
        """How old a txn's lock must be before a request that meets it resolves
        the txn from its record (its coordinator is presumed gone)."""
        self.local: LocalStore | None = None
        """Set when this router runs inside a store process (flotilla/server.py):
        a request for a replica on that node is a direct call into it, with no
        gRPC hop and no serialization; the rest go over the Forward streams."""
        self.local_calls = 0

    def now_ms(self) -> int:
        return self._wall_ms()

    async def close(self) -> None:
        for s in self._streams.values():
            s.close()
        self._streams.clear()

    # -- one attempt -------------------------------------------------------------------
    async def _send(self, node: int, address: str, kind: str, request: Any, timeout_s: float) -> Any:
        local = self.local
        if local is not None and node == local.node_id:
            self.local_calls += 1
            try:
                async with asyncio.timeout(timeout_s):
                    return await local.call(kind, request)
            except TimeoutError:
                raise
            except Exception as exc:  # a bug in the store: the remote path would see gRPC's UNKNOWN
                log.exception("the local store failed on a %s", kind)
                raise StreamBroken(f"the local store failed: {type(exc).__name__}") from exc
        if self._use_stream:
            stream = self._streams.get(address)
            if stream is None:
                stream = self._streams[address] = ForwardStream(store_pb2_grpc.StoreStub(self.channels.channel(address)))
            if not stream.unimplemented:
                return await stream.call(kind, request, timeout_s)
        stub = store_pb2_grpc.StoreStub(self.channels.channel(address))
        return await getattr(stub, KINDS[kind][1])(request, timeout=timeout_s)

    def _pick(self, route: ShardRoute, kind: str, mode: ReadMode, avoid: set[int], now: float) -> int:
        """The replica for this attempt: never one this request set aside
        (`avoid`), and a node the router suspects (router/health.py) only to
        take a due probe, or when every other replica was tried."""
        health = self.health
        untried = [n for n in route.replicas if n not in avoid] or list(route.replicas)
        candidates = [n for n in untried if not health.suspect(n)]
        if not candidates:
            probe = next((n for n in untried if health.usable(n, now)), 0)
            candidates = [probe] if probe else untried
        leader = route.leader if route.leader and route.leader not in avoid else 0
        local = self.local.node_id if self.local is not None else 0
        if kind == "range" and mode.consistency == spb.READ_LINEARIZABLE and local in candidates:
            # A replica in this process, leader or not, serves it: a follower
            # asks its leader for the read index (a Raft message, no data) and
            # reads its own copy, as an etcd member does.
            return local
        if kind in WRITES or mode.consistency == spb.READ_LINEARIZABLE:
            if leader and (leader in candidates or health.usable(leader, now)):
                return leader
            return candidates[next(self._turn) % len(candidates)]
        needed = 0
        if leader and leader not in candidates:
            leader = 0
        if mode.consistency == spb.READ_BOUNDED_STALENESS:
            needed = hlcmod.from_ms(self.now_ms() - mode.max_staleness_ms)
        elif mode.consistency == spb.READ_AT_REVISION:
            needed = mode.revision
        closed = self.cache.closed_ts(route.shard_id)
        if local in candidates and closed.get(local, needed) >= needed:
            return local  # a replica in this process that can serve it: no hop at all
        turn = self._read_turns.get(route.shard_id, 0)
        self._read_turns[route.shard_id] = turn + 1
        return slots.choose_replica(candidates, closed, needed, leader, turn)

    # -- the retry loop ----------------------------------------------------------------
    async def call(
        self,
        kind: str,
        request: Any,
        *,
        route: Callable[[], ShardRoute],
        deadline: float,
        mode: ReadMode = ReadMode(),
        lock_patience_s: float | None = None,
        yield_to: Callable[[bytes], bool] | None = None,
    ) -> Answer:
        """Carry one etcd request to its shard and return the shard's answer.
        `route` names the shard again on every attempt (the map may change);
        `deadline` is a loop.time() reading. A shard locked by a txn across
        shards is waited for, unless yield_to(the txn's id) says to give up
        at once, or it stays locked for lock_patience_s: then LockedTooLong."""
        if kind not in WRITES:
            return await self._attempts(kind, request, route, deadline, mode, 0, 0, lock_patience_s, yield_to)
        seq = await self.write_seqs.acquire()
        try:
            return await self._attempts(kind, request, route, deadline, mode, self.router_id, seq, lock_patience_s, yield_to)
        finally:
            self.write_seqs.release(seq)

    async def _attempts(
        self,
        kind: str,
        request: Any,
        route_fn: Callable[[], ShardRoute],
        deadline: float,
        mode: ReadMode,
        router_id: int,
        seq: int,
        lock_patience_s: float | None = None,
        yield_to: Callable[[bytes], bool] | None = None,
    ) -> Answer:
        loop = asyncio.get_running_loop()
        cls = KINDS[kind][0]
        unknown = False  # a write attempt may have been applied
        avoid: set[int] = set()
        last = "no attempt was made"
        no_leader = False  # the last attempt found the shard without a leader that answers
        locked = 0  # attempts that met a txn's lock
        locked_since = 0.0
        consistency = mode.consistency
        while True:
            now = loop.time()
            left = deadline - now
            if left <= 0:
                if unknown:
                    raise EtcdError("outcome_unknown", last)
                raise EtcdError("no_leader", last) if no_leader else EtcdError("timeout", last)
            route = route_fn()
            node = self._pick(route, kind, ReadMode(consistency, mode.max_staleness_ms, mode.revision), avoid, now)
            address = self.cache.address(node)
            # One attempt never takes the whole deadline: a dead or cut-off
            # node costs at most attempt_timeout_s, then the same request
            # (a write with the same seq) goes elsewhere.
            attempt_s = min(left, self.attempt_timeout_s)
            header = route.header()
            header.hlc = self.hlc.now(self.now_ms())
            header.deadline_ms = self.now_ms() + int(attempt_s * 1000)
            if seq:
                # The floor as of this attempt: a retry keeps its seq, and
                # its own seq is in flight, so the floor never passes it.
                header.router_id, header.seq, header.seq_floor = router_id, seq, self.write_seqs.floor()
            if kind == "txn_part":
                msg = cls()
                msg.CopyFrom(request)
                msg.header.CopyFrom(header)
            else:
                msg = cls(header=header, request=request)
            if kind == "range":
                msg.consistency = consistency
                msg.max_staleness_ms = mode.max_staleness_ms
            if not address and (self.local is None or node != self.local.node_id):
                last, no_leader = f"no address known for node {node} of shard {route.shard_id}", False
                self._retried("no_address")
                await self._backoff(deadline, refresh=True)
                continue
            try:
                resp = await self._send(node, address, kind, msg, min(left, attempt_s + ANSWER_MARGIN_S))
            except (grpc.aio.AioRpcError, StreamBroken, TimeoutError) as exc:
                code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                last, no_leader = f"node {node} ({address}) did not answer: {code}", False
                if kind in WRITES:
                    # Any failed call may have reached the leader: gRPC also
                    # says UNAVAILABLE when a connection drops after the
                    # request went out. The retry (same seq) is safe, but if
                    # the deadline ends first the client must hear "unknown".
                    unknown = True
                log.debug("shard=%d %s: %s (retrying)", route.shard_id, kind, last)
                self._retried("unreachable")
                self.health.failed(node, loop.time())
                avoid.add(node)
                if len(avoid) >= len(route.replicas):
                    avoid.clear()
                    await self._backoff(deadline, refresh=True)
                continue
            self.health.answered(node)
            h = resp.header
            self.hlc.observe(h.hlc)
            self.cache.note_closed_ts(route.shard_id, h.node_id or node, h.closed_ts)
            if not h.HasField("error"):
                payload = resp if kind == "txn_part" else resp.response
                rev = resp.revision if kind == "txn_part" else payload.header.revision
                if rev > self.last_revision:
                    self.last_revision = rev
                if kind == "range":
                    key = (route.shard_id, node)
                    self.replica_counts[key] = self.replica_counts.get(key, 0) + 1
                elif node != route.leader:
                    # Only the leader carries out a write: the map is behind.
                    self.cache.set_leader(route.shard_id, node)
                return Answer(payload, h, node)
            err = h.error
            if err.HasField("kv"):
                if err.kv.code == spb.KvError.FUTURE_REVISION and self._may_catch_up(kind, request, mode):
                    last, no_leader = "the shard has not closed the revision yet", False
                    self._retried("future_revision")
                    await self._backoff(deadline)
                    continue
                raise from_kv_error(err.kv)
            which = err.routing.WhichOneof("error")
            if which == "txn_locked":
                holder = err.routing.txn_locked.txn_id
                if yield_to is not None and yield_to(holder):
                    raise LockedTooLong(f"shard {route.shard_id} is locked by txn {holder.hex()}, which goes first")
                if not locked:
                    locked_since = loop.time()
                elif lock_patience_s is not None and loop.time() - locked_since >= lock_patience_s:
                    raise LockedTooLong(f"shard {route.shard_id} stayed locked by txn {holder.hex()}")
                locked += 1
                last, no_leader = f"shard {route.shard_id} is locked by a txn across shards", False
                self._retried("txn_locked")
                await self._on_locked(route.shard_id, err.routing.txn_locked, locked, deadline)
                continue
            last, wait = self._on_routing(route, node, err.routing, avoid)
            log.debug("shard=%d node=%d %s: %s (retrying)", route.shard_id, node, kind, last)
            self._retried(which or "routing")
            no_leader = which == "not_leader"
            if which == "server_busy" and kind in WRITES and err.routing.server_busy.outcome_unknown:
                unknown = True
            if wait:
                await self._backoff(deadline, refresh=which != "server_busy")

    async def _on_locked(self, shard_id: int, lock: spb.TxnLocked, attempts: int, deadline: float) -> None:
        """Wait for a txn's lock to go; resolve the txn if its lock is old
        (its coordinator died or stalls: DESIGN.md, "Transactions across shards")."""
        loop = asyncio.get_running_loop()
        age_s = (self.now_ms() - hlcmod.to_ms(lock.locked_at)) / 1000 if lock.locked_at else 0.0
        if self.lock_resolver is not None and age_s >= self.lock_recovery_s:
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    await self.lock_resolver(shard_id, lock, deadline)
                return
            except (EtcdError, TimeoutError) as exc:
                log.debug("shard=%d: resolving txn %s failed: %s", shard_id, lock.txn_id.hex(), exc)
        wait = min(BACKOFF_S, LOCK_BACKOFF_S * (1 << min(attempts, 5))) * random.uniform(0.5, 1.0)
        await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))

    def _retried(self, reason: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def _may_catch_up(self, kind: str, request: Any, mode: ReadMode) -> bool:
        """A revision the router has already seen (from any shard) will be
        closed by every shard shortly (the router's HLC reaches every node
        with each request): wait for it rather than answer "future"."""
        if kind == "range":
            rev = request.revision
        elif kind == "compact":
            rev = request.revision
        else:
            return False
        return 0 < rev <= self.hlc.last

    def _on_routing(self, route: ShardRoute, node: int, r: spb.RoutingError, avoid: set[int]) -> tuple[str, bool]:
        """Learn what a routing error says; return why the attempt failed
        and whether to wait a little before the next one (nothing better to
        try right now)."""
        cache = self.cache
        which = r.WhichOneof("error")
        if which == "not_leader":
            nl = r.not_leader
            hint = nl.leader_node_id
            if hint and hint != node:
                now = asyncio.get_running_loop().time()
                self.health.probe_soon(hint, now)  # the replica hears from it, or did lately
                cache.set_leader(route.shard_id, hint, nl.leader_address)
                # A replica names the leader: ask it, even if this request
                # set it aside earlier (a leader that dropped a proposal
                # while transferring leadership answers "no leader").
                avoid.discard(hint)
                if self.health.due(hint, now):
                    return f"node {node} is not the leader of shard {route.shard_id} (it names node {hint})", False
                # The hint names a node that did not answer us: the replica
                # has not noticed yet that its leader is gone. Try another
                # replica, and wait a little when every one was asked.
                avoid.add(node)
                wait = len(avoid) >= len(route.replicas)
                if wait:
                    avoid.clear()
                return f"shard {route.shard_id} has no leader right now (node {hint}, its last leader, does not answer)", wait
            avoid.add(node)
            if route.leader == node:
                cache.set_leader(route.shard_id, 0)
            if len(avoid) >= len(route.replicas):
                avoid.clear()
            return f"shard {route.shard_id} has no leader right now", True
        if which == "epoch_not_match":
            enm = r.epoch_not_match
            current = (enm.current_epoch.conf_version, enm.current_epoch.slot_version)
            if (current[1], current[0]) < (route.epoch[1], route.epoch[0]):
                avoid.add(node)  # that replica is behind
            else:
                cache.update(
                    ShardRoute(route.shard_id, current, tuple((s.start, s.end) for s in enm.current_slots), route.replicas, route.leader)
                )
                for d in enm.related:
                    cache.update(route_from_pb(d))
            return f"shard {route.shard_id} changed epoch", False
        if which == "stale_read_not_ready":
            s = r.stale_read_not_ready
            cache.note_closed_ts(route.shard_id, node, s.closed_ts)
            if s.leader_node_id:
                cache.set_leader(route.shard_id, s.leader_node_id)
            avoid.add(node)
            return f"replica {node} of shard {route.shard_id} is behind", False
        if which == "shard_not_found":
            avoid.add(node)
            return f"node {node} does not host shard {route.shard_id}", True
        if which == "wrong_shard":
            return f"the router's map is behind for slot {r.wrong_shard.slot}", True
        if which == "server_busy":
            avoid.add(node)
            if len(avoid) >= len(route.replicas):
                avoid.clear()
            return f"node {node} is busy: {r.server_busy.reason}", True
        return f"unknown routing error from node {node}", False

    async def _backoff(self, deadline: float, *, refresh: bool = False) -> None:
        loop = asyncio.get_running_loop()
        wait = min(BACKOFF_S, max(0.0, deadline - loop.time()))
        if refresh:
            try:
                async with asyncio.timeout(max(0.001, min(self.attempt_timeout_s, deadline - loop.time()))):
                    await self.cache.refresh()
            except TimeoutError:
                return
        await asyncio.sleep(wait)
