"""StoreNode: the shards one store process hosts, each a Raft group on the GroupHost.

Every shard replica is a ``ShardStateMachine`` over the process's one RocksDB
(``RocksEngine``), plugged into the runtime through ``ShardReplica`` (the
runtime's StateMachine seam), which also fans applied events out to the
replica's watchers. The node adds what lives between a request and the log:

- routing checks, in this order: the shard is hosted here (ShardNotFound),
  the request's epoch is the replica's (EpochNotMatch), the request is valid
  (etcd's RequestError), its keys are in the shard's slots (WrongShard), and
  for writes this replica leads the shard (NotLeader, with the leader's id
  and Store address);
- the node's HLC: advanced to every request's HLC and every applied
  revision; the leader stamps each write with it;
- closed timestamps: a write carries ``closed_ts = stamp - 1`` (piggybacked),
  and the leader of a shard that proposed nothing for ``closed_ts_interval_s``
  proposes a ``ClosedTs(now)`` entry. The apply rule (shard/hlc.py) makes
  any later write's revision greater than a closed timestamp applied before
  it, so a replica serves reads at any revision <= max(revision, closed_ts);
- reads at the four consistencies (linearizable through ReadIndex on any
  replica, serializable, bounded staleness, at a revision);
- watches: history (``events_since``), then live events, with bounded
  per-watcher queues and progress notifications.

Routing errors are the exceptions of this module (``RoutingError``); KV
errors are shard/errors.py's ``ShardError``. shard/service.py turns both into
the typed ``StoreError`` of store.proto; nothing here knows protobuf.

Epochs: until conf changes and splits go through the shard's log, every shard
has the bootstrap epoch (1, 1).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raft.core import ConfState, ProposalDropped, StateRole
from raft.core.errors import FlotillaError
from raft.core.types import Entry
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost
from shard import hlc, slots
from shard.codec import encode_command
from shard.engine import KvEngine
from shard.errors import EmptyKey, FutureRevision, ShardError, SlotNotOwned
from shard.mvcc import in_range
from shard.statemachine import Applied, ShardStateMachine, validate
from shard.types import (
    ClosedTs,
    Command,
    CompactionRequest,
    DeleteRangeRequest,
    Event,
    EventType,
    PutRequest,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    Response,
    TxnRequest,
)

log = logging.getLogger(__name__)


# --- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    conf_version: int = 1
    slot_version: int = 1


BOOTSTRAP_EPOCH = Epoch(1, 1)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """store.proto's RequestHeader, decoded."""

    shard_id: int
    epoch: Epoch
    router_id: int = 0
    seq: int = 0
    hlc: int = 0
    deadline_ms: int = 0


class Consistency(enum.IntEnum):
    """store.proto's ReadConsistency (same numbers)."""

    LINEARIZABLE = 0
    SERIALIZABLE = 1
    BOUNDED_STALENESS = 2
    AT_REVISION = 3


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    """First revision to deliver; 0: from now."""
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_interval_s: float = 0.0
    """0: the node's default."""


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One message of a shard watch stream. The stream ends after a batch
    with `error` or `compact_revision` set."""

    events: tuple[Event, ...] = ()
    progress_revision: int = 0
    """Every event of the watched range with a revision <= this was sent (0: no claim)."""
    closed_ts: int = 0
    compact_revision: int = 0
    error: RoutingError | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    closed_ts_interval_s: float = 0.2
    """A shard leader that proposed nothing for this long proposes a ClosedTs entry."""
    propose_timeout_s: float = 5.0
    read_index_timeout_s: float = 3.0
    watch_queue_events: int = 10_000
    """Events a watcher may have waiting to be sent; beyond, it is cancelled."""
    watch_batch_events: int = 1_000
    watch_progress_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A replica as this node sees it (the admin Status)."""

    shard_id: int
    epoch: Epoch
    slot_count: int
    slot_ranges: slots.SlotRanges
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    leader_node_id: int
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    revision: int
    compact_revision: int
    closed_ts: int
    watchers: int


# --- routing errors -------------------------------------------------------------------------


class RoutingError(FlotillaError):
    """The request reached the wrong place, or the right place at the wrong
    moment; nothing was done. Each carries what the router needs to retry."""


class NotLeader(RoutingError):
    def __init__(self, shard_id: int, leader_node_id: int, leader_address: str) -> None:
        super().__init__(f"shard {shard_id}: not the leader (leader {leader_node_id or 'unknown'})")
        self.shard_id = shard_id
        self.leader_node_id = leader_node_id
        self.leader_address = leader_address


class WrongShard(RoutingError):
    def __init__(self, slot: int, map_version: int = 0) -> None:
        super().__init__(f"slot {slot} is not in this shard")
        self.slot = slot
        self.map_version = map_version


class EpochNotMatch(RoutingError):
    def __init__(self, current_epoch: Epoch, current_slots: slots.SlotRanges) -> None:
        super().__init__(f"epoch mismatch: current epoch {current_epoch}")
        self.current_epoch = current_epoch
        self.current_slots = current_slots


class StaleReadNotReady(RoutingError):
    def __init__(self, closed_ts: int, needed_ts: int, leader_node_id: int) -> None:
        super().__init__(f"closed timestamp {closed_ts} is behind the {needed_ts} the read needs")
        self.closed_ts = closed_ts
        self.needed_ts = needed_ts
        self.leader_node_id = leader_node_id


class ShardNotFound(RoutingError):
    def __init__(self, shard_id: int) -> None:
        super().__init__(f"shard {shard_id} is not hosted here")
        self.shard_id = shard_id


class ServerBusy(RoutingError):
    def __init__(self, reason: str, backoff_ms: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.backoff_ms = backoff_ms


# --- watchers ------------------------------------------------------------------------------


class _Watcher:
    """One watch stream's live queue on a replica. `offer` runs inside apply
    (synchronously, on the loop); the stream drains the queue."""

    __slots__ = ("spec", "start", "max_events", "queue", "queued", "wakeup", "canceled")

    def __init__(self, spec: WatchSpec, start: int, max_events: int) -> None:
        self.spec = spec
        self.start = start
        self.max_events = max_events
        self.queue: collections.deque[tuple[Event, ...]] = collections.deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.canceled: str | None = None

    def select(self, events: Sequence[Event]) -> tuple[Event, ...]:
        s = self.spec
        out = []
        for ev in events:
            if ev.kv.mod_revision < self.start or not in_range(ev.kv.key, s.key, s.range_end):
                continue
            if (s.no_put and ev.type == EventType.PUT) or (s.no_delete and ev.type == EventType.DELETE):
                continue
            if not s.prev_kv and ev.prev_kv is not None:
                ev = Event(ev.type, ev.kv)
            out.append(ev)
        return tuple(out)

    def offer(self, events: Sequence[Event]) -> None:
        if self.canceled is not None:
            return
        chosen = self.select(events)
        if not chosen:
            return
        if self.queued + len(chosen) > self.max_events:
            self.canceled = (
                f"watcher fell behind: more than {self.max_events} events waiting to be sent; "
                f"resume from the revision after the last event received"
            )
            self.queue.clear()
            self.queued = 0
        else:
            self.queue.append(chosen)
            self.queued += len(chosen)
        self.wakeup.set()

    def cancel(self, reason: str) -> None:
        if self.canceled is None:
            self.canceled = reason
            self.queue.clear()
            self.queued = 0
            self.wakeup.set()

    def take(self, max_events: int) -> tuple[Event, ...]:
        """Whole revisions' batches, up to about max_events."""
        out: list[Event] = []
        while self.queue and (not out or len(out) + len(self.queue[0]) <= max_events):
            batch = self.queue.popleft()
            self.queued -= len(batch)
            out.extend(batch)
        return tuple(out)


# --- the runtime's state machine ---------------------------------------------------------------


class ShardReplica:
    """A shard replica as the runtime's StateMachine: delegates to the
    ShardStateMachine, then feeds what was applied to the node (HLC) and to
    this replica's watchers."""

    def __init__(self, sm: ShardStateMachine, epoch: Epoch, clock_update: Callable[[int], int]) -> None:
        self.sm = sm
        self.epoch = epoch
        self.watchers: set[_Watcher] = set()
        self._clock_update = clock_update

    @property
    def shard_id(self) -> int:
        return self.sm.shard_id

    def applied_index(self) -> int:
        return self.sm.applied_index()

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]:
        out = self.sm.apply(entries, wb)
        if self.watchers:
            for a in out:
                if isinstance(a, Applied) and a.events:
                    for w in list(self.watchers):
                        w.offer(a.events)
        self._clock_update(self.sm.readable_revision)
        return out

    def on_applied_index(self, index: int, wb: Any) -> None:
        self.sm.on_applied_index(index, wb)

    def snapshot(self) -> bytes:
        return self.sm.snapshot()

    def restore(self, data: bytes, index: int, wb: Any) -> None:
        self.sm.restore(data, index, wb)
        self._clock_update(self.sm.readable_revision)
        for w in list(self.watchers):
            w.cancel("the replica installed a snapshot; resume from the revision after the last event received")


# --- the node ----------------------------------------------------------------------------------


def _request_keys(op: Request | RequestOp) -> list[tuple[bytes, bytes]]:
    if isinstance(op, TxnRequest):
        out = [(c.key, c.range_end) for c in op.compare]
        for sub in (*op.success, *op.failure):
            out.extend(_request_keys(sub))
        return out
    if isinstance(op, PutRequest):
        return [(op.key, b"")]
    if isinstance(op, (RangeRequest, DeleteRangeRequest)):
        return [(op.key, op.range_end)]
    return []


@dataclass(slots=True)
class _ShardTimers:
    last_closed: float = 0.0
    closing: bool = False


class StoreNode:
    def __init__(
        self,
        node_id: int,
        host: GroupHost,
        engine: KvEngine,
        *,
        clock: Clock,
        config: NodeConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.cfg = config or NodeConfig()
        self.hlc = hlc.HybridClock()
        self.address = ""
        """host:port of this node's own gRPC server (set once it listens)."""
        self._host = host
        self._engine = engine
        self._clock = clock
        self._replicas: dict[int, ShardReplica] = {}
        self._addresses: dict[int, str] = {}
        self._timers: dict[int, _ShardTimers] = {}
        self._tg: asyncio.TaskGroup | None = None

    # -- wiring ----------------------------------------------------------------------
    async def add_shard(
        self,
        shard_id: int,
        *,
        voters: Sequence[int],
        slot_count: int = slots.DEFAULT_SLOTS,
        slot_ranges: slots.SlotRanges | None = None,
        epoch: Epoch = BOOTSTRAP_EPOCH,
    ) -> None:
        """Host a replica of shard_id. voters, slot_count and slot_ranges
        describe a new shard; one with state on disk keeps its own."""
        sm = ShardStateMachine(self._engine, shard_id, slot_count, slot_ranges)
        rep = ShardReplica(sm, epoch, self.hlc.update)
        self._replicas[shard_id] = rep
        self._timers[shard_id] = _ShardTimers()
        await self._host.create_group(shard_id, rep, bootstrap=ConfState(voters=tuple(voters)))
        self.hlc.update(sm.readable_revision)

    def shard_ids(self) -> list[int]:
        return sorted(self._replicas)

    def set_peer(self, node_id: int, address: str) -> None:
        """A node's address (its one gRPC server: Raft, Store, StoreAdmin).
        Told its own, the node takes it as what it advertises in NotLeader."""
        if node_id == self.node_id:
            self.address = address
            return
        self._addresses[node_id] = address
        self._host.set_peer(node_id, address)

    def address_of(self, node_id: int) -> str:
        if node_id == self.node_id:
            return self.address
        return self._addresses.get(node_id, "")

    def closed_ts(self, shard_id: int) -> int:
        rep = self._replicas.get(shard_id)
        return rep.sm.closed_ts if rep is not None else 0

    def compact_revision(self, shard_id: int) -> int:
        rep = self._replicas.get(shard_id)
        return rep.sm.compact_revision if rep is not None else 0

    async def run(self) -> None:
        """The closed-timestamp loop, until cancelled. Proposals it starts run
        in its TaskGroup: an unexpected failure of one ends the node."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            interval = self.cfg.closed_ts_interval_s
            while True:
                await self._clock.sleep(interval / 2)
                now = self._clock.monotonic()
                for sid in self._replicas:
                    t = self._timers[sid]
                    if t.closing or now - t.last_closed < interval or not self._is_leader(sid):
                        continue
                    t.closing = True
                    t.last_closed = now
                    tg.create_task(self._close(sid, t))

    async def _close(self, shard_id: int, t: _ShardTimers) -> None:
        ts = self.hlc.now(self._clock.wall_ms())
        data = encode_command(Command(ClosedTs(ts), stamp=ts, closed_ts=ts))
        try:
            await self._host.propose(shard_id, data, timeout_s=self.cfg.propose_timeout_s)
        except (ProposalDropped, TimeoutError):
            pass  # leadership moved or the group is stuck: the next round tries again
        finally:
            t.closing = False

    # -- checks ------------------------------------------------------------------------
    def _replica(self, ctx: RequestContext) -> ShardReplica:
        rep = self._replicas.get(ctx.shard_id)
        if rep is None:
            raise ShardNotFound(ctx.shard_id)
        if ctx.epoch != rep.epoch:
            raise EpochNotMatch(rep.epoch, rep.sm.slot_ranges)
        if ctx.hlc > 0:
            self.hlc.update(ctx.hlc)
        return rep

    @staticmethod
    def _check_owned(rep: ShardReplica, request: Request | RequestOp) -> None:
        sm = rep.sm
        for key, range_end in _request_keys(request):
            one = slots.single_slot(key, range_end, sm.slot_count)
            if one is not None and not slots.contains(sm.slot_ranges, one):
                raise WrongShard(one)

    def _is_leader(self, shard_id: int) -> bool:
        st = self._host.status(shard_id)
        return st.soft_state.role == StateRole.LEADER

    def _not_leader(self, shard_id: int) -> NotLeader:
        leader = self._host.leader_of(shard_id)
        if leader == self.node_id:
            leader = 0  # we were, but the proposal was dropped: an election is under way
        return NotLeader(shard_id, leader, self.address_of(leader) if leader else "")

    def _timeout_s(self, ctx: RequestContext, default: float) -> float:
        if not ctx.deadline_ms:
            return default
        left = (ctx.deadline_ms - self._clock.wall_ms()) / 1000
        if left <= 0:
            raise ServerBusy("the request's deadline passed before it started")
        return min(default, left)

    # -- writes ------------------------------------------------------------------------------
    async def write(self, ctx: RequestContext, request: PutRequest | DeleteRangeRequest | TxnRequest | CompactionRequest) -> Response:
        """Propose a write as the shard's leader; return etcd's response once
        applied here. A retry with the same (router_id, seq) gets the first
        outcome and is not applied again."""
        rep = self._replica(ctx)
        validate(request)
        self._check_owned(rep, request)
        sid = ctx.shard_id
        if not self._is_leader(sid):
            raise self._not_leader(sid)
        timeout_s = self._timeout_s(ctx, self.cfg.propose_timeout_s)
        stamp = self.hlc.now(self._clock.wall_ms())
        cmd = Command(request, ctx.router_id, ctx.seq, stamp, stamp - 1)
        self._timers[sid].last_closed = self._clock.monotonic()
        try:
            applied = await self._host.propose(sid, encode_command(cmd), timeout_s=timeout_s)
        except ProposalDropped:
            raise self._not_leader(sid) from None
        except TimeoutError:
            raise ServerBusy(
                "the write was not applied in time: its outcome is unknown; retry it with the same seq", 100
            ) from None
        assert isinstance(applied, Applied), applied
        outcome = applied.outcome
        if isinstance(outcome, SlotNotOwned):  # the slots changed between the check and the apply
            self._check_owned(rep, request)
            raise outcome
        if isinstance(outcome, ShardError):
            raise outcome
        return outcome

    # -- reads ------------------------------------------------------------------------------
    async def range(
        self, ctx: RequestContext, request: RangeRequest, consistency: Consistency, max_staleness_ms: int = 0
    ) -> RangeResponse:
        rep = self._replica(ctx)
        validate(request)
        self._check_owned(rep, request)
        sid = ctx.shard_id
        sm = rep.sm
        if consistency == Consistency.LINEARIZABLE:
            await self._read_index(ctx)
        elif consistency == Consistency.BOUNDED_STALENESS:
            now = self.hlc.now(self._clock.wall_ms())
            needed = max(0, now - (max_staleness_ms << hlc.LOGICAL_BITS))
            if sm.closed_ts < needed and not self._is_leader(sid):
                raise StaleReadNotReady(sm.closed_ts, needed, self._host.leader_of(sid))
        elif consistency == Consistency.AT_REVISION:
            if request.revision > sm.readable_revision:
                if not self._is_leader(sid):
                    raise StaleReadNotReady(sm.closed_ts, request.revision, self._host.leader_of(sid))
                await self._read_index(ctx)  # a new leader may not have applied all it committed
                if request.revision > sm.readable_revision:
                    raise FutureRevision()
        return rep.sm.range(request)

    async def _read_index(self, ctx: RequestContext) -> None:
        sid = ctx.shard_id
        try:
            await self._host.read_index(sid, timeout_s=self._timeout_s(ctx, self.cfg.read_index_timeout_s))
        except TimeoutError:
            raise self._not_leader(sid) from None

    # -- watch ------------------------------------------------------------------------------
    async def watch(self, ctx: RequestContext, spec: WatchSpec) -> AsyncIterator[WatchBatch]:
        """History from spec.start_revision, then live events, with progress
        notifications while idle. Raises a RoutingError before the first batch."""
        rep = self._replica(ctx)
        if not spec.key:
            raise EmptyKey()
        self._check_owned(rep, RangeRequest(spec.key, spec.range_end))
        return self._watch(rep, spec)

    async def _watch(self, rep: ShardReplica, spec: WatchSpec) -> AsyncIterator[WatchBatch]:
        sm = rep.sm
        start = spec.start_revision if spec.start_revision > 0 else sm.revision + 1
        if start < sm.compact_revision:
            yield WatchBatch(compact_revision=sm.compact_revision, closed_ts=sm.closed_ts)
            return
        w = _Watcher(spec, start, self.cfg.watch_queue_events)
        # Registration and the history read happen with no await between them,
        # so history covers every event up to sm.revision and the queue every
        # one after it.
        rep.watchers.add(w)
        try:
            history = w.select(sm.events_since(spec.key, spec.range_end, start, prev_kv=spec.prev_kv))
            step = self.cfg.watch_batch_events
            i = 0
            while i < len(history):
                j = min(len(history), i + step)
                while j < len(history) and history[j].kv.mod_revision == history[j - 1].kv.mod_revision:
                    j += 1  # never split a revision
                yield WatchBatch(events=history[i:j], closed_ts=sm.closed_ts)
                i = j
            yield self._progress(rep, w)
            interval = spec.progress_interval_s or self.cfg.watch_progress_interval_s
            while True:
                if w.canceled is not None:
                    yield WatchBatch(error=ServerBusy(w.canceled), closed_ts=sm.closed_ts)
                    return
                if w.queue:
                    events = w.take(step)
                    yield WatchBatch(
                        events=events,
                        progress_revision=0 if w.queue else sm.readable_revision,
                        closed_ts=sm.closed_ts,
                    )
                    continue
                w.wakeup.clear()
                try:
                    async with asyncio.timeout(interval):
                        await w.wakeup.wait()
                except TimeoutError:
                    if not w.queue and w.canceled is None:
                        yield self._progress(rep, w)
        finally:
            rep.watchers.discard(w)

    @staticmethod
    def _progress(rep: ShardReplica, w: _Watcher) -> WatchBatch:
        sm = rep.sm
        return WatchBatch(progress_revision=0 if w.queue else sm.readable_revision, closed_ts=sm.closed_ts)

    # -- status ------------------------------------------------------------------------------
    def shard_info(self, shard_id: int) -> ShardInfo:
        rep = self._replicas[shard_id]
        st = self._host.status(shard_id)
        sm = rep.sm
        return ShardInfo(
            shard_id=shard_id,
            epoch=rep.epoch,
            slot_count=sm.slot_count,
            slot_ranges=sm.slot_ranges,
            voters=tuple(st.conf_state.voters),
            learners=tuple(st.conf_state.learners),
            leader_node_id=st.soft_state.leader_id,
            is_leader=st.soft_state.role == StateRole.LEADER,
            term=st.hard_state.term,
            commit_index=st.hard_state.commit,
            applied_index=st.applied,
            revision=sm.revision,
            compact_revision=sm.compact_revision,
            closed_ts=sm.closed_ts,
            watchers=len(rep.watchers),
        )
