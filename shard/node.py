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

Epochs live in the shard's replicated meta (ShardStateMachine.epoch):
conf_version grows with each conf change the group applies, slot_version
with each split. Requests are checked against the replica's current epoch,
and a linearizable read checks it again after its ReadIndex wait: a replica
that applied a split while the read waited (or an old leader catching up)
answers EpochNotMatch, never from its pre-split view.

Splits: ``split()`` proposes a ``Split`` in the shard's log. Every replica,
when it applies it, queues the creation of the new shard's replica; the
split loop (in ``run``) creates it once the apply batch is on disk, with a
Raft group bootstrapped at index 0 from the conf state recorded in the new
shard's meta (the parent's at the split entry), so its initial log is the
same on every replica. At restart, ``open_split_shards`` hosts every shard
whose meta says a split created it.

Leases (when the node is given a ``LeaseRegistry``, i.e. placement): a write
that puts a key with a lease first attaches the key to the lease in
placement (``attach``), and is refused with etcd's "requested lease not
found" if the lease does not exist; only then is it proposed. So placement
knows every key that may carry a lease before the key exists, and the keys
of an ended lease are deleted with ``DeleteLeaseKeys`` ("delete if still
attached to L", through the shard's log: idempotent, and harmless for keys
whose put never applied or that were rewritten since). After applying, the
shard leader reports in the background what changed: detaches (a key
rewritten without its lease, or deleted), and the attachments again: a
lease that ended between the check and the apply answers lease_not_found,
and the leader then deletes the key if it still carries that lease (etcd
does the check and the put atomically; here the re-report closes the gap).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from raft.core import ConfState, ProposalDropped, StateRole
from raft.core.errors import FlotillaError
from raft.core.types import Entry
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost
from shard import hlc, slots
from shard.codec import encode_command
from shard import keys
from shard.engine import KvEngine, scan
from shard.errors import EmptyKey, FutureRevision, InvalidSplit, LeaseNotFound, ShardError, SlotNotOwned
from shard.leasekeys import LeaseChange, LeaseRegistry, LeaseRegistryUnavailable, lease_changes, lease_puts
from shard.mvcc import in_range
from shard.statemachine import Applied, ShardStateMachine, validate
from shard.types import (
    BOOTSTRAP_EPOCH,
    ClosedTs,
    Epoch,
    Command,
    CompactionRequest,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    PutRequest,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    Response,
    Split,
    TxnRequest,
)

log = logging.getLogger(__name__)


# --- values ----------------------------------------------------------------------------




@dataclass(frozen=True, slots=True)
class RequestContext:
    """store.proto's RequestHeader, decoded."""

    shard_id: int
    epoch: Epoch
    router_id: int = 0
    seq: int = 0
    hlc: int = 0
    deadline_ms: int = 0
    seq_floor: int = 0


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
    def __init__(
        self,
        current_epoch: Epoch,
        current_slots: slots.SlotRanges,
        related: tuple[ShardInfo, ...] = (),
        addresses: dict[int, str] | None = None,
    ) -> None:
        super().__init__(f"epoch mismatch: current epoch {current_epoch}")
        self.current_epoch = current_epoch
        self.current_slots = current_slots
        self.related = related
        """Shards hosted here that took slots from this one (after a split), or that own the request's keys."""
        self.addresses = addresses or {}


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

    __slots__ = ("spec", "start", "max_events", "queue", "queued", "wakeup", "canceled", "routing_error")

    def __init__(self, spec: WatchSpec, start: int, max_events: int) -> None:
        self.spec = spec
        self.start = start
        self.max_events = max_events
        self.queue: collections.deque[tuple[Event, ...]] = collections.deque()
        self.queued = 0
        self.wakeup = asyncio.Event()
        self.canceled: str | None = None
        self.routing_error: RoutingError | None = None

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

    def cancel_routing(self, err: RoutingError) -> None:
        """End the stream with a routing error (the shard's slots changed):
        events queued so far are still delivered first."""
        if self.canceled is None:
            self.canceled = str(err)
            self.routing_error = err
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

    def __init__(
        self,
        sm: ShardStateMachine,
        clock_update: Callable[[int], int],
        on_split: Callable[[int, int, int], None] | None = None,
        on_events: Callable[[int, tuple[Event, ...]], None] | None = None,
    ) -> None:
        self.sm = sm
        self.watchers: set[_Watcher] = set()
        self._clock_update = clock_update
        self._on_split = on_split
        self._on_events = on_events

    @property
    def epoch(self) -> Epoch:
        return self.sm.epoch

    @property
    def shard_id(self) -> int:
        return self.sm.shard_id

    def applied_index(self) -> int:
        return self.sm.applied_index()

    def apply(self, entries: Sequence[Entry], wb: Any) -> list[object]:
        out = self.sm.apply(entries, wb)
        for a in out:
            if not isinstance(a, Applied):
                continue
            if a.events and self.watchers:
                for w in list(self.watchers):
                    w.offer(a.events)
            if a.events and self._on_events is not None:
                self._on_events(self.shard_id, a.events)
            if a.split_to:
                log.info("shard=%d applied split at index=%d: new shard=%d epoch=%s", self.shard_id, a.index, a.split_to, self.sm.epoch)
                for w in list(self.watchers):
                    w.cancel_routing(EpochNotMatch(self.sm.epoch, self.sm.slot_ranges))
                if self._on_split is not None:
                    self._on_split(self.shard_id, a.index, a.split_to)
        self._clock_update(self.sm.readable_revision)
        return out

    def on_applied_index(self, index: int, wb: Any) -> None:
        self.sm.on_applied_index(index, wb)

    def on_conf_change(self, index: int, wb: Any) -> None:
        self.sm.on_conf_change(index, wb)

    def snapshot(self) -> bytes:
        return self.sm.snapshot()

    def snapshot_stream(self) -> tuple[int, Iterator[bytes]]:
        return self.sm.snapshot_stream()

    def restore_chunks(self, chunks: Iterable[bytes], index: int, wb: Any) -> None:
        self.sm.restore_chunks(chunks, index, wb)
        self._restored()

    def restore(self, data: bytes, index: int, wb: Any) -> None:
        self.sm.restore(data, index, wb)
        self._restored()

    def _restored(self) -> None:
        self._clock_update(self.sm.readable_revision)
        for w in list(self.watchers):
            w.cancel("the replica installed a snapshot; resume from the revision after the last event received")


# --- the node ----------------------------------------------------------------------------------


def find_split_shards(engine: KvEngine) -> list[int]:
    """Ids of the shards whose meta on this node says a split created them."""
    out = []
    for k, _ in scan(engine, keys.META_PREFIX, keys.META_PREFIX + b"\xff" * 9):
        shard_id, kind = keys.shard_of_meta_key(k)
        if kind == keys.MetaKind.GROUP:
            out.append(shard_id)
    return out


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
        # Requests served per shard since start: (reads, writes). Heartbeats
        # turn them into rates for placement's scheduler.
        self.request_counts: dict[int, list[int]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._splits: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
        self._created: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.leases: LeaseRegistry | None = None
        """Placement's leases; None: puts with a lease are not checked (static clusters)."""
        self._lease_reports: list[tuple[int, LeaseChange]] = []
        self._lease_kick = asyncio.Event()

    # -- wiring ----------------------------------------------------------------------
    async def add_shard(
        self,
        shard_id: int,
        *,
        voters: Sequence[int],
        slot_count: int = slots.DEFAULT_SLOTS,
        slot_ranges: slots.SlotRanges | None = None,
    ) -> None:
        """Host a replica of shard_id. voters, slot_count and slot_ranges
        describe a new shard; one with state on disk keeps its own."""
        if shard_id in self._replicas:
            raise ValueError(f"shard {shard_id} already hosted")
        sm = ShardStateMachine(self._engine, shard_id, slot_count, slot_ranges, group_conf=self._group_conf(shard_id), other_slots=self._other_slots(shard_id))
        await self._host_replica(sm, ConfState(voters=tuple(voters)))

    def _other_slots(self, shard_id: int) -> Callable[[], slots.SlotRanges]:
        def other() -> slots.SlotRanges:
            out: slots.SlotRanges = ()
            for sid, rep in self._replicas.items():
                if sid != shard_id:
                    out = slots.merge(out, rep.sm.slot_ranges)
            return out

        return other

    def _group_conf(self, shard_id: int) -> Callable[[], tuple[Sequence[int], Sequence[int]]]:
        def conf() -> tuple[Sequence[int], Sequence[int]]:
            cs = self._host.status(shard_id).conf_state
            return tuple(cs.voters), tuple(cs.learners)

        return conf

    async def _host_replica(self, sm: ShardStateMachine, bootstrap: ConfState) -> None:
        shard_id = sm.shard_id
        rep = ShardReplica(sm, self.hlc.update, self._queue_split, self._on_applied_events)
        await self._host.create_group(shard_id, rep, bootstrap=bootstrap)
        # Known to the node only once its group exists (the loops ask the host about it).
        self._replicas[shard_id] = rep
        self._timers[shard_id] = _ShardTimers()
        self.hlc.update(sm.readable_revision)
        self._created[shard_id].set()

    async def host_shard(
        self,
        shard_id: int,
        *,
        slot_count: int,
        slot_ranges: slots.SlotRanges,
        voters: Sequence[int] = (),
        learners: Sequence[int] = (),
        bootstrap: bool,
    ) -> None:
        """Host a replica of a shard the map assigns to this node. bootstrap:
        one of the shard's initial replicas, which all start its group from
        the same configuration (voters, learners); else a replica joining an
        existing group, which learns everything from the leader's snapshot."""
        if shard_id in self._replicas or shard_id in self._host.group_ids():
            return
        sm = ShardStateMachine(self._engine, shard_id, slot_count, slot_ranges, group_conf=self._group_conf(shard_id), other_slots=self._other_slots(shard_id))
        rep = ShardReplica(sm, self.hlc.update, self._queue_split, self._on_applied_events)
        conf = ConfState(voters=tuple(voters), learners=tuple(learners)) if bootstrap else None
        await self._host.create_group(shard_id, rep, bootstrap=conf)
        self._replicas[shard_id] = rep
        self._timers[shard_id] = _ShardTimers()
        self.hlc.update(sm.readable_revision)
        self._created[shard_id].set()
        log.info(
            "node=%d hosts shard=%d (%s) epoch=%s slots=%s",
            self.node_id, shard_id, "bootstrapped" if bootstrap else "from disk or the leader", sm.epoch, sm.slot_ranges,
        )

    def shards_on_disk(self) -> list[int]:
        """Shards with a replica's state on this node (slots recorded)."""
        out = []
        for k, _ in scan(self._engine, keys.META_PREFIX, keys.META_PREFIX + b"\xff" * 9):
            shard_id, kind = keys.shard_of_meta_key(k)
            if kind == keys.MetaKind.SLOTS:
                out.append(shard_id)
        return out

    def _on_applied_events(self, shard_id: int, events: tuple[Event, ...]) -> None:
        if self.leases is None or not self._is_leader(shard_id):
            return
        for ch in lease_changes(events):
            self._lease_reports.append((shard_id, ch))
        if self._lease_reports:
            self._lease_kick.set()

    async def _lease_report_loop(self) -> None:
        """Send the lease changes applied by shards this node leads, in batches."""
        while True:
            await self._lease_kick.wait()
            self._lease_kick.clear()
            batch, self._lease_reports = self._lease_reports, []
            if not batch or self.leases is None:
                continue
            try:
                missing = await self.leases.attach([ch for _, ch in batch])
            except LeaseRegistryUnavailable as exc:
                log.warning("node=%d lease report of %d changes failed (%s); retrying", self.node_id, len(batch), exc)
                self._lease_reports[:0] = batch
                await self._clock.sleep(0.5)
                self._lease_kick.set()
                continue
            doomed: dict[tuple[int, int], list[bytes]] = collections.defaultdict(list)
            for i in missing:
                sid, (lease_id, key, _) = batch[i]
                doomed[(sid, lease_id)].append(key)
            for (sid, lease_id), ks in doomed.items():
                try:
                    await self.delete_lease_keys(sid, lease_id, ks)
                except (RoutingError, ShardError) as exc:
                    log.warning("node=%d shard=%d keys of ended lease %x not deleted (%s)", self.node_id, sid, lease_id, exc)

    async def _check_leases(self, request: Request | RequestOp) -> None:
        """Attach the keys a write puts with a lease, before proposing it;
        LeaseNotFound if a lease does not exist."""
        if self.leases is None:
            return
        puts = lease_puts(request)
        if not puts:
            return
        try:
            missing = await self.leases.attach([(lease, key, False) for lease, key in puts])
        except LeaseRegistryUnavailable as exc:
            raise ServerBusy(f"cannot check the lease with placement: {exc}", 200) from None
        if missing:
            raise LeaseNotFound()

    async def delete_lease_keys(self, shard_id: int, lease_id: int, lease_keys: Sequence[bytes]) -> int:
        """As the shard's leader, delete those of lease_keys still attached to
        lease_id (through the shard's log); the number deleted."""
        rep = self._replicas.get(shard_id)
        if rep is None:
            raise ShardNotFound(shard_id)
        for key in lease_keys:
            if not rep.sm.owns(key):
                raise WrongShard(slots.slot_of(key, rep.sm.slot_count))
        if not self._is_leader(shard_id):
            raise self._not_leader(shard_id)
        stamp = self.hlc.now(self._clock.wall_ms())
        cmd = Command(DeleteLeaseKeys(lease_id, tuple(lease_keys)), stamp=stamp, closed_ts=stamp - 1)
        try:
            applied = await self._host.propose(shard_id, encode_command(cmd), timeout_s=self.cfg.propose_timeout_s)
        except ProposalDropped:
            raise self._not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy("the deletion was not applied in time: its outcome is unknown; retry", 100) from None
        assert isinstance(applied, Applied), applied
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        assert isinstance(applied.outcome, DeleteRangeResponse)
        return applied.outcome.deleted

    def _queue_split(self, parent_id: int, index: int, new_shard_id: int) -> None:
        self._splits.put_nowait((parent_id, index, new_shard_id))

    async def open_split_shards(self) -> list[int]:
        """Host every shard a split created on this node (found by its meta)
        that is not hosted yet: at restart, and after a crash between a
        split's apply and the creation of the new group."""
        opened = []
        for shard_id in find_split_shards(self._engine):
            if shard_id not in self._replicas:
                await self._open_split_shard(shard_id)
                opened.append(shard_id)
        return opened

    async def _open_split_shard(self, shard_id: int) -> None:
        sm = ShardStateMachine(self._engine, shard_id, group_conf=self._group_conf(shard_id), other_slots=self._other_slots(shard_id))
        conf = sm.bootstrap_conf
        if conf is None:
            raise AssertionError(f"shard {shard_id} has no bootstrap group record")
        voters, learners = conf
        await self._host_replica(sm, ConfState(voters=voters, learners=learners))
        log.info("node=%d hosts split shard=%d epoch=%s slots=%s voters=%s", self.node_id, shard_id, sm.epoch, sm.slot_ranges, voters)

    async def _split_loop(self) -> None:
        while True:
            parent_id, index, new_shard_id = await self._splits.get()
            # The new shard's meta is in the apply batch of the split entry:
            # open it once that batch is written.
            await self._host.wait_applied(parent_id, index)
            if new_shard_id not in self._replicas:
                await self._open_split_shard(new_shard_id)

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
            tg.create_task(self._split_loop(), name="store-splits")
            tg.create_task(self._lease_report_loop(), name="store-lease-reports")
            interval = self.cfg.closed_ts_interval_s
            while True:
                await self._clock.sleep(interval / 2)
                now = self._clock.monotonic()
                for sid in list(self._replicas):
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
            raise self._epoch_not_match(rep)
        if ctx.hlc > 0:
            self.hlc.update(ctx.hlc)
        return rep

    def _epoch_not_match(self, rep: ShardReplica, request: Request | RequestOp | None = None) -> EpochNotMatch:
        related: dict[int, ShardInfo] = {}
        for child in rep.sm.children:
            if child in self._replicas:
                related[child] = self.shard_info(child)
        if request is not None:
            for key, range_end in _request_keys(request):
                one = slots.single_slot(key, range_end, rep.sm.slot_count)
                if one is None:
                    continue
                for sid, other in self._replicas.items():
                    if sid != rep.shard_id and sid not in related and slots.contains(other.sm.slot_ranges, one):
                        related[sid] = self.shard_info(sid)
        infos = tuple(related.values())
        addresses = {n: self.address_of(n) for info in infos for n in (*info.voters, *info.learners)}
        return EpochNotMatch(rep.epoch, rep.sm.slot_ranges, infos, addresses)

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
        self.request_counts.setdefault(sid, [0, 0])[1] += 1
        timeout_s = self._timeout_s(ctx, self.cfg.propose_timeout_s)
        await self._check_leases(request)
        stamp = self.hlc.now(self._clock.wall_ms())
        cmd = Command(request, ctx.router_id, ctx.seq, stamp, stamp - 1, ctx.seq_floor)
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

    # -- admin -------------------------------------------------------------------------------
    async def split(
        self, shard_id: int, new_shard_id: int, split_slot: int, *, timeout_s: float | None = None
    ) -> tuple[ShardInfo, ShardInfo]:
        """As the shard's leader, split it: the slots >= split_slot go to a
        new shard new_shard_id with the same replicas. Returns both shards'
        descriptors once the split is applied here and the new shard's
        replica is hosted here."""
        rep = self._replicas.get(shard_id)
        if rep is None:
            raise ShardNotFound(shard_id)
        if new_shard_id in self._replicas or new_shard_id == 0:
            raise InvalidSplit(f"shard {new_shard_id} exists here already (or is 0)")
        ranges = rep.sm.slot_ranges
        moved = slots.split(ranges, split_slot)[1]
        if not moved or moved == ranges:
            raise InvalidSplit(f"slot {split_slot} does not divide the shard's slots {ranges}")
        if not self._is_leader(shard_id):
            raise self._not_leader(shard_id)
        timeout = timeout_s if timeout_s is not None else self.cfg.propose_timeout_s
        stamp = self.hlc.now(self._clock.wall_ms())
        cmd = Command(Split(new_shard_id, moved), stamp=stamp, closed_ts=stamp - 1)
        try:
            applied = await self._host.propose(shard_id, encode_command(cmd), timeout_s=timeout)
        except ProposalDropped:
            raise self._not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy("the split was not applied in time: its outcome is unknown", 100) from None
        assert isinstance(applied, Applied), applied
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        async with asyncio.timeout(timeout):
            await self._created[new_shard_id].wait()
        return self.shard_info(shard_id), self.shard_info(new_shard_id)

    # -- reads ------------------------------------------------------------------------------
    async def range(
        self, ctx: RequestContext, request: RangeRequest, consistency: Consistency, max_staleness_ms: int = 0
    ) -> RangeResponse:
        rep = self._replica(ctx)
        validate(request)
        self._check_owned(rep, request)
        sid = ctx.shard_id
        sm = rep.sm
        self.request_counts.setdefault(sid, [0, 0])[0] += 1
        if consistency == Consistency.LINEARIZABLE:
            await self._read_index(ctx)
            # The wait may have applied a split (or conf change): the read is
            # linearizable only if this replica still serves its keys at the
            # epoch the request named. (The multi-Raft "read on the old
            # leader of a shard that just split" bug.)
            if ctx.epoch != rep.epoch or self._replicas.get(sid) is not rep:
                raise self._epoch_not_match(rep, request)
            self._check_owned(rep, request)
        elif consistency == Consistency.BOUNDED_STALENESS:
            now = self.hlc.now(self._clock.wall_ms())
            needed = max(0, now - (max_staleness_ms << hlc.LOGICAL_BITS))
            if sm.closed_ts < needed:
                if not self._is_leader(sid):
                    raise StaleReadNotReady(sm.closed_ts, needed, self._host.leader_of(sid))
                # The leader is the fallback, but a deposed leader may not know
                # it yet: a ReadIndex proves its state is current, which meets
                # any staleness bound.
                await self._read_index(ctx)
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
                if w.canceled is not None and not w.queue:
                    yield WatchBatch(error=w.routing_error or ServerBusy(w.canceled), closed_ts=sm.closed_ts)
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
    def shard_figures(self, shard_id: int) -> tuple[int, int]:
        """(live key count, approximate live size in bytes) of a hosted shard
        as this replica applied it; (0, 0) when not hosted or not known."""
        rep = self._replicas.get(shard_id)
        if rep is None:
            return 0, 0
        return max(rep.sm.key_count, 0), max(rep.sm.size_bytes, 0)

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
