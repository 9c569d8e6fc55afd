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
whose meta says a split created it. ``host_shard`` (the map's way in) does
not host a shard whose slots a replica here still holds (one that missed
the split): that replica's older log or snapshot would overwrite them.

Destruction: ``destroy_replica()`` deletes a replica the caller no longer
wants (the store agent decides: see flotilla/storeagent.py): its Raft group,
meta and the data of its slots no other shard here holds, in one synced
batch, leaving a tombstone (its conf_version) in the log store; ``host_shard``
hosts it again only for a newer conf_version.

Merges (placement's MERGE operator): ``prepare_merge()`` as the source's
leader proposes a ``PrepareMerge``; the frozen source then refuses reads and
writes with WrongShard (the router refreshes its map and retries) and
proposes no closed timestamps, but still serves watches (its history is
final). ``commit_merge()`` as the target's leader proposes a ``CommitMerge``
only once the local source replica is frozen for it (placement has also
seen every source replica report the freeze, ``merge_target``). Every
replica that applies the CommitMerge then destroys its source replica,
keeping the slots' data (the target's now); one that restarts before doing
so destroys it when it would host it (``merged_away``).

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
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from raft.core import ConfState, ProposalDropped, StateRole
from raft.core.types import Entry
from raft.runtime.clock import Clock
from raft.runtime.host import GroupHost, GroupNotFound
from shard import hlc, keys, slots
from shard import snapshot as shard_snapshot
from shard.codec import encode_command
from shard.engine import KvEngine, scan
from shard.errors import (
    EmptyKey,
    EpochNotMatch,
    FutureRevision,
    InvalidSplit,
    LeaseNotFound,
    NotLeader,
    RevisionCompacted,
    RoutingError,
    ServerBusy,
    ShardError,
    ShardNotFound,
    SlotNotOwned,
    StaleReadNotReady,
    WrongShard,
)
from shard.hashkv import KvHash
from shard.hashkv import records as mvcc_records
from shard.leasekeys import LeaseChange, LeaseRegistry, LeaseRegistryUnavailable, lease_changes, lease_puts
from shard.mvcc import in_range
from shard.quota import DEFAULT_QUOTA_BYTES, AlarmType, SpaceQuota
from shard.space import SpaceMeter
from shard.statemachine import Applied, ShardStateMachine, validate
from shard.types import (
    BOOTSTRAP_EPOCH,
    ClosedTs,
    Command,
    CommitMerge,
    CompactionRequest,
    DeleteLeaseKeys,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Epoch,
    Event,
    EventType,
    PrepareMerge,
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
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    """The space quota (shard/quota.py); -1: none."""
    space_check_interval_s: float = 1.0
    """How often the space used is measured (with a SpaceMeter)."""


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
    reads: int = 0
    """Range requests this replica received since the process started."""
    writes: int = 0
    """Write requests this replica received as leader since the process started."""


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
        self.on_merge: Callable[[int, int, int], None] | None = None
        """(target shard, index, source shard) of each CommitMerge applied here."""
        self.retired = False
        """This frozen replica's merge target applied the CommitMerge here: it is being destroyed."""

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
            if a.frozen:
                # Watchers stay: the shard's history is final and they have
                # it all; they end when the replica is destroyed.
                log.info("shard=%d applied PrepareMerge at index=%d: frozen for shard=%d epoch=%s", self.shard_id, a.index, self.sm.merge_state.target if self.sm.merge_state else 0, self.sm.epoch)
            if a.merged_from:
                # Watchers stay too: the source's slots join their feed from
                # here on, every event above both shards' last revisions.
                log.info("shard=%d applied CommitMerge at index=%d: took over shard=%d epoch=%s slots=%s", self.shard_id, a.index, a.merged_from, self.sm.epoch, self.sm.slot_ranges)
                if self.on_merge is not None:
                    self.on_merge(self.shard_id, a.index, a.merged_from)
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
        if self.on_merge is not None:
            # A snapshot taken after a merge: the source's local replica (still
            # frozen here) is destroyed as if this replica had applied it.
            for source in sorted(self.sm.merged_sources):
                self.on_merge(self.shard_id, self.sm.applied_index(), source)


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
        self._merges: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
        self._created: dict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.leases: LeaseRegistry | None = None
        """Placement's leases; None: puts with a lease are not checked (static clusters)."""
        self._lease_reports: list[tuple[int, LeaseChange]] = []
        self._lease_kick = asyncio.Event()
        self._destroying: set[int] = set()
        self.quota = SpaceQuota(self.cfg.quota_bytes)
        """The node's quota and alarms: its shard leaders refuse growing writes while NOSPACE is active."""
        self.space: SpaceMeter | None = None
        self._saved_alarms: tuple[int, ...] | None = None
        """Measures the space used, every space_check_interval_s; None: no measurement."""

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

    def _group_nodes(self, shard_id: int) -> tuple[int, ...]:
        """Every node of the shard's group (voters, then learners)."""
        cs = self._host.status(shard_id).conf_state
        return (*cs.voters, *cs.learners)

    def _group_conf(self, shard_id: int) -> Callable[[], tuple[Sequence[int], Sequence[int]]]:
        def conf() -> tuple[Sequence[int], Sequence[int]]:
            cs = self._host.status(shard_id).conf_state
            return tuple(cs.voters), tuple(cs.learners)

        return conf

    async def _host_replica(self, sm: ShardStateMachine, bootstrap: ConfState) -> None:
        shard_id = sm.shard_id
        rep = ShardReplica(sm, self.hlc.update, self._queue_split, self._on_applied_events)
        rep.on_merge = self._queue_merge
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
        conf_version: int = 0,
    ) -> None:
        """Host a replica of a shard the map assigns to this node. bootstrap:
        one of the shard's initial replicas, which all start its group from
        the same configuration (voters, learners); else a replica joining an
        existing group, which learns everything from the leader's snapshot.

        A replica destroyed here (``destroy_replica``) is hosted again only
        for a map entry at a newer conf_version than the one it was destroyed
        at (a re-add): a stale map, or a late message of its old group, must
        not bring it back empty."""
        if shard_id in self._replicas or shard_id in self._host.group_ids() or shard_id in self._destroying:
            return
        tomb = self._host.tombstone(shard_id)
        if tomb is not None:
            if conf_version <= tomb:
                log.info("node=%d shard=%d not hosted: destroyed here at conf_version %d, map says %d", self.node_id, shard_id, tomb, conf_version)
                return
            await self._host.clear_tombstone(shard_id)
            if shard_id in self._replicas or shard_id in self._host.group_ids():
                return
        if self.merged_away(shard_id):
            await self.destroy_replica(shard_id)  # merged before a restart, not destroyed yet
            return
        overlap = self._overlapping(shard_id, slot_ranges)
        if overlap:
            # A replica here still holds some of these slots: one that missed
            # the split creating this shard (TiKV does not create a peer whose
            # range overlaps another either). It applies the split and creates
            # this one itself, or installs a later snapshot and shrinks; the
            # map or the next message of this shard's group then retries. Now,
            # the lagging replica's log or an older snapshot of it would write
            # over this shard's newer data in those slots.
            log.debug("node=%d shard=%d not hosted yet: its slots overlap shard(s) %s here", self.node_id, shard_id, overlap)
            return
        sm = ShardStateMachine(self._engine, shard_id, slot_count, slot_ranges, group_conf=self._group_conf(shard_id), other_slots=self._other_slots(shard_id))
        rep = ShardReplica(sm, self.hlc.update, self._queue_split, self._on_applied_events)
        rep.on_merge = self._queue_merge
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

    async def destroy_replica(self, shard_id: int) -> None:
        """Delete this node's replica of shard_id: its Raft group (log, hard
        state), its meta records, and the data of its slots, except slots
        another shard on this node owns (a shard split off it that this node
        hosts, or the target of a merge). A tombstone with the replica's
        conf_version stays behind (``host_shard`` then refuses to bring it
        back at that or an older configuration).

        The caller decides that the replica is no longer wanted (the store
        agent: not in the map, and not in its group's applied configuration).
        Everything is one synced WriteBatch, so a crash leaves the replica
        whole (destroyed again later) or gone; calling it again, or for a
        shard not hosted, deletes whatever is left and keeps the tombstone."""
        rep = self._replicas.pop(shard_id, None)
        self._destroying.add(shard_id)
        try:
            self._timers.pop(shard_id, None)
            self.request_counts.pop(shard_id, None)
            self._created.pop(shard_id, None)
            if rep is not None:
                ranges, conf_version = rep.sm.slot_ranges, rep.epoch.conf_version
                for w in list(rep.watchers):
                    w.cancel_routing(ShardNotFound(shard_id))
            else:
                ranges, conf_version = self._on_disk(shard_id)
            tomb = max(conf_version, self._host.tombstone(shard_id) or 0)
            doomed = slots.subtract(slots.normalize(ranges), self._slots_elsewhere(shard_id))
            await self._host.remove_group(
                shard_id, tombstone=tomb, extra_writes=lambda wb: shard_snapshot.clear(wb, shard_id, doomed)
            )
        finally:
            self._destroying.discard(shard_id)
        log.info("node=%d destroyed its replica of shard=%d (conf_version %d); slots deleted: %s", self.node_id, shard_id, tomb, doomed)

    def _overlapping(self, shard_id: int, slot_ranges: slots.SlotRanges) -> list[int]:
        """Hosted shards other than shard_id holding any of slot_ranges."""
        wanted = slots.normalize(slot_ranges)
        return [sid for sid, rep in self._replicas.items() if sid != shard_id and slots.intersect(rep.sm.slot_ranges, wanted)]

    def _on_disk(self, shard_id: int) -> tuple[slots.SlotRanges, int]:
        """(slot ranges, conf_version) of a replica not hosted, from its meta ((), 0 if none)."""
        raw = self._engine.get(keys.slots_key(shard_id))
        ranges = keys.decode_slots(raw)[1] if raw is not None else ()
        raw = self._engine.get(keys.epoch_key(shard_id))
        return ranges, keys.decode_epoch(raw)[0] if raw is not None else 0

    def _slots_elsewhere(self, shard_id: int) -> slots.SlotRanges:
        """The slots every other shard of this node owns: hosted, or with
        meta on disk (a split's new shard not opened yet)."""
        out: slots.SlotRanges = ()
        for sid, rep in self._replicas.items():
            if sid != shard_id:
                out = slots.merge(out, rep.sm.slot_ranges)
        for sid in self.shards_on_disk():
            if sid != shard_id and sid not in self._replicas:
                out = slots.merge(out, self._on_disk(sid)[0])
        return out

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
            raise ServerBusy("the deletion was not applied in time: its outcome is unknown; retry", 100, outcome_unknown=True) from None
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
            if self.merged_away(shard_id):
                await self.destroy_replica(shard_id)  # merged before a restart, not destroyed yet
                continue
            if shard_id not in self._replicas:
                await self._open_split_shard(shard_id)
                opened.append(shard_id)
        return opened

    async def _open_split_shard(self, shard_id: int) -> None:
        if self._host.tombstone(shard_id) is not None:
            # Destroyed here already (a stale split entry replayed): never back empty.
            log.warning("node=%d split shard=%d not opened: destroyed here (tombstone)", self.node_id, shard_id)
            return
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
            if parent_id not in self._replicas:
                continue  # destroyed meanwhile: its split's new shard is not ours to open
            try:
                await self._host.wait_applied(parent_id, index)
            except GroupNotFound:
                continue
            if self._host.crash_hook is not None:
                self._host.crash_hook("split_apply")  # the split is on disk, its new shard not yet open
            if new_shard_id not in self._replicas:
                await self._open_split_shard(new_shard_id)

    # -- merges -------------------------------------------------------------------------------
    def merged_away(self, shard_id: int) -> bool:
        """Does this node's engine say shard_id was merged into another shard
        (its target applied the CommitMerge here)? Such a replica is only
        destroyed, never served again."""
        raw = self._engine.get(keys.merge_key(shard_id))
        return raw is not None and keys.decode_merge(raw).committed

    def merge_target(self, shard_id: int) -> int:
        """The shard a hosted shard is frozen for (0: not frozen, not hosted)."""
        rep = self._replicas.get(shard_id)
        m = rep.sm.merge_state if rep is not None else None
        return m.target if m is not None else 0

    def _queue_merge(self, target_id: int, index: int, source_id: int) -> None:
        self._merges.put_nowait((target_id, index, source_id))

    async def _merge_loop(self) -> None:
        """Destroy the source of each merge applied here, once the target's
        apply batch (which marks the source merged and owns its slots) is on
        disk. destroy_replica keeps the slots the target now owns."""
        while True:
            target_id, index, source_id = await self._merges.get()
            try:
                await self._host.wait_applied(target_id, index)
            except GroupNotFound:
                continue
            if self._host.crash_hook is not None:
                self._host.crash_hook("merge_apply")  # the merge is on disk, its source not destroyed yet
            source = self._replicas.get(source_id)
            if source is not None:
                source.retired = True
            if source_id in self._replicas or source_id in self._host.group_ids():
                await self.destroy_replica(source_id)

    def _merge_pair(self, source_id: int, target_id: int) -> tuple[ShardReplica, ShardReplica]:
        """Both replicas of a merge, hosted here with the same voters and
        learners (the merge's precondition: the source's data is on exactly
        the target's nodes)."""
        source, target = self._replicas.get(source_id), self._replicas.get(target_id)
        if source is None:
            raise ShardNotFound(source_id)
        if target is None:
            raise ShardNotFound(target_id)
        if source.sm.slot_count != target.sm.slot_count:
            raise InvalidSplit(f"shards {source_id} and {target_id} have different slot counts")
        cs, ct = self._host.status(source_id).conf_state, self._host.status(target_id).conf_state
        if (sorted(cs.voters), sorted(cs.learners)) != (sorted(ct.voters), sorted(ct.learners)):
            raise InvalidSplit(
                f"shards {source_id} and {target_id} have different replicas "
                f"({sorted(cs.voters)}/{sorted(cs.learners)} vs {sorted(ct.voters)}/{sorted(ct.learners)}): move them onto the same nodes first"
            )
        return source, target

    async def prepare_merge(self, source_id: int, target_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        """As the source shard's leader, freeze it for a merge into target_id
        (a PrepareMerge in its log). Already frozen for that target: nothing
        to do."""
        source, target = self._merge_pair(source_id, target_id)
        m = source.sm.merge_state
        if m is not None:
            if m.target != target_id:
                raise InvalidSplit(f"shard {source_id} is frozen for a merge into shard {m.target}, not {target_id}")
            return self.shard_info(source_id)
        if not self._is_leader(source_id):
            raise self._not_leader(source_id)
        timeout = timeout_s if timeout_s is not None else self.cfg.propose_timeout_s
        stamp = self.hlc.now(self._clock.wall_ms())
        epoch = (target.epoch.conf_version, target.epoch.slot_version)
        cmd = Command(PrepareMerge(target_id, epoch), stamp=stamp, closed_ts=stamp - 1)
        applied = await self._propose_admin(source_id, cmd, timeout, "the merge's freeze")
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        return self.shard_info(source_id)

    async def commit_merge(self, target_id: int, source_id: int, *, timeout_s: float | None = None) -> ShardInfo:
        """As the target shard's leader, take over the frozen source (a
        CommitMerge in its log). Proposed only once the local source replica
        applied its PrepareMerge (placement also waits for every source
        replica to report the freeze before it asks; see
        ShardStateMachine._commit_merge for why that makes the apply safe on
        every replica). Already merged: nothing to do."""
        tgt = self._replicas.get(target_id)
        if tgt is None:
            raise ShardNotFound(target_id)
        if source_id in tgt.sm.merged_sources:
            return self.shard_info(target_id)
        source, target = self._merge_pair(source_id, target_id)
        m = source.sm.merge_state
        if m is None or m.target != target_id:
            raise ServerBusy(f"shard {source_id} is not frozen for a merge into shard {target_id} on this node yet", 200)
        if not self._is_leader(target_id):
            raise self._not_leader(target_id)
        timeout = timeout_s if timeout_s is not None else self.cfg.propose_timeout_s
        stamp = self.hlc.now(self._clock.wall_ms())
        ep = (source.epoch.conf_version, source.epoch.slot_version)
        cmd = Command(CommitMerge(source_id, m.index, m.revision, ep), stamp=stamp, closed_ts=stamp - 1)
        applied = await self._propose_admin(target_id, cmd, timeout, "the merge")
        if isinstance(applied.outcome, ShardError):
            raise applied.outcome
        return self.shard_info(target_id)

    async def _propose_admin(self, shard_id: int, cmd: Command, timeout_s: float, what: str) -> Applied:
        try:
            applied = await self._host.propose(shard_id, encode_command(cmd), timeout_s=timeout_s)
        except (ProposalDropped, GroupNotFound):
            raise self._not_leader(shard_id) from None
        except TimeoutError:
            raise ServerBusy(f"{what} was not applied in time: its outcome is unknown", 100, outcome_unknown=True) from None
        assert isinstance(applied, Applied), applied
        return applied

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
            tg.create_task(self._merge_loop(), name="store-merges")
            tg.create_task(self._lease_report_loop(), name="store-lease-reports")
            tg.create_task(self._space_loop(), name="store-space")
            interval = self.cfg.closed_ts_interval_s
            while True:
                await self._clock.sleep(interval / 2)
                now = self._clock.monotonic()
                for sid in list(self._replicas):
                    t = self._timers[sid]
                    if t.closing or now - t.last_closed < interval or not self._is_leader(sid):
                        continue
                    if self._replicas[sid].sm.frozen:
                        continue  # a frozen shard applies nothing more: no closed timestamps either
                    t.closing = True
                    t.last_closed = now
                    tg.create_task(self._close(sid, t))

    async def _close(self, shard_id: int, t: _ShardTimers) -> None:
        ts = self.hlc.now(self._clock.wall_ms())
        data = encode_command(Command(ClosedTs(ts), stamp=ts, closed_ts=ts))
        try:
            await self._host.propose(shard_id, data, timeout_s=self.cfg.propose_timeout_s)
        except (ProposalDropped, TimeoutError, GroupNotFound):
            pass  # leadership moved, the group is stuck or was destroyed: the next round tries again
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

    @staticmethod
    def _refuse_frozen(rep: ShardReplica, request: Request | RequestOp) -> None:
        """A shard frozen for a merge serves no reads or writes: WrongShard,
        so the router refreshes its map and retries (on the merge's target
        once the merge is in the map). Watches are still served: the frozen
        history is final."""
        if not rep.sm.frozen:
            return
        for key, range_end in _request_keys(request):
            one = slots.single_slot(key, range_end, rep.sm.slot_count)
            if one is not None:
                raise WrongShard(one)
        raise WrongShard(rep.sm.slot_ranges[0][0] if rep.sm.slot_ranges else 0)

    def _is_leader(self, shard_id: int) -> bool:
        # Not host.status(): that builds the whole Status (progress, conf
        # state) and was ~12% of a store's CPU under write load, asked on
        # every request. The core names itself leader exactly while it is one.
        return self._host.leader_of(shard_id) == self.node_id

    def _not_leader(self, shard_id: int) -> NotLeader | ShardNotFound:
        if shard_id not in self._replicas or shard_id not in self._host.group_ids():
            return ShardNotFound(shard_id)  # destroyed meanwhile
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
        self._refuse_frozen(rep, request)
        sid = ctx.shard_id
        if not self._is_leader(sid):
            raise self._not_leader(sid)
        # NoSpace while the NOSPACE alarm is active here or on a node with a
        # replica of this shard (etcd's capped applier)
        self.quota.admit(request, lambda: self._group_nodes(sid))
        self.request_counts.setdefault(sid, [0, 0])[1] += 1
        timeout_s = self._timeout_s(ctx, self.cfg.propose_timeout_s)
        await self._check_leases(request)
        stamp = self.hlc.now(self._clock.wall_ms())
        cmd = Command(request, ctx.router_id, ctx.seq, stamp, stamp - 1, ctx.seq_floor)
        self._timers[sid].last_closed = self._clock.monotonic()
        try:
            applied = await self._host.propose(sid, encode_command(cmd), timeout_s=timeout_s)
        except (ProposalDropped, GroupNotFound):
            raise self._not_leader(sid) from None
        except TimeoutError:
            if rep.retired:
                # Destroyed after a merge with this proposal pending: every
                # entry up to the freeze was applied here before (the merge
                # needed it), so its entry, if any, came after the freeze,
                # which applies nothing. The keys are the target's now.
                self._refuse_frozen(rep, request)
            raise ServerBusy(
                "the write was not applied in time: its outcome is unknown; retry it with the same seq", 100, outcome_unknown=True
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
            raise ServerBusy("the split was not applied in time: its outcome is unknown", 100, outcome_unknown=True) from None
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
        self._refuse_frozen(rep, request)
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
        except (TimeoutError, GroupNotFound):
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
                    yield WatchBatch(events=events, progress_revision=self._progress_claim(rep, w), closed_ts=sm.closed_ts)
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

    @classmethod
    def _progress(cls, rep: ShardReplica, w: _Watcher) -> WatchBatch:
        return WatchBatch(progress_revision=cls._progress_claim(rep, w), closed_ts=rep.sm.closed_ts)

    @staticmethod
    def _progress_claim(rep: ShardReplica, w: _Watcher) -> int:
        """The revision up to which this stream has sent every event of the
        watched range (0: no claim): the replica's readable revision once
        nothing is queued. A watcher cut off by a split, a merge or the
        replica's destruction claims nothing more: the replica's revision
        moves on for the slots it kept, and the router would take a later
        claim as the frontier of the slots that moved, skipping their new
        owner's events up to it (found by a 4-store campaign: a watch gap
        right after a split)."""
        if w.queue or w.canceled is not None:
            return 0
        return rep.sm.readable_revision

    # -- space and hashes ----------------------------------------------------------------------
    async def _space_loop(self) -> None:
        """Measure the space used on a timer (never per request): over the
        quota raises the NOSPACE alarm (shard/quota.py)."""
        while True:
            self.measure_space()
            self.save_alarms()
            await self._clock.sleep(self.cfg.space_check_interval_s)

    def _load_alarms(self, space: SpaceMeter) -> None:
        """Arm what the node saved before a restart (once per meter)."""
        saved = space.load_alarms()
        for a in saved:
            with contextlib.suppress(ValueError):  # a type newer than this build: not ours to act on
                self.quota.activate(AlarmType(a))
        self._saved_alarms = saved

    def save_alarms(self) -> None:
        """Keep the active alarms on disk when they changed (an alarm stays
        across a restart until disarmed, as in etcd); the saved ones are
        loaded first. Called by the space loop, and at once by the Alarm RPC."""
        if self.space is None:
            return
        if self._saved_alarms is None:
            self._load_alarms(self.space)
        now = tuple(int(a) for a in self.quota.active())
        if now != self._saved_alarms:
            self.space.save_alarms(now)
            self._saved_alarms = now

    def measure_space(self) -> int:
        """Measure now (with a SpaceMeter); the space used as last measured."""
        if self.space is not None and self.quota.observe(self.space.used_bytes()):
            log.warning(
                "node=%d raised the NOSPACE alarm: %d bytes used, quota %d bytes; writes that add data are refused "
                "until the alarm is disarmed", self.node_id, self.quota.used_bytes, self.quota.quota_bytes,
            )
        return self.quota.used_bytes

    async def defragment(self) -> tuple[int, int]:
        """Give the space of deleted versions back (etcd's Defragment): the
        space used before and after, measured."""
        before = self.measure_space()
        if self.space is not None:
            await self.space.defragment()
        return before, self.measure_space()

    async def hash_kv(self, shard_id: int, revision: int = 0) -> tuple[int, int, int, int]:
        """(hash, compact_revision, hash_revision, versions hashed) of this
        replica's MVCC state of the shard at revision (0: its newest
        readable one); shard/hashkv.py says what is hashed. Read from one
        RocksDB snapshot, yielding to the loop every few thousand versions."""
        rep = self._replicas.get(shard_id)
        if rep is None:
            raise ShardNotFound(shard_id)
        sm = rep.sm
        rev = revision or sm.readable_revision
        if rev > sm.readable_revision:
            if self._is_leader(shard_id):
                raise FutureRevision()
            raise StaleReadNotReady(sm.closed_ts, rev, self._host.leader_of(shard_id))
        if rev < sm.compact_revision:
            raise RevisionCompacted()
        h = KvHash(rev, sm.compact_revision)
        view = self._engine.snapshot()  # no await since the checks: the view is the state they saw
        for i, (k, v) in enumerate(mvcc_records(view, sm.slot_ranges)):
            h.add(k, v)
            if i % 4096 == 4095:
                await asyncio.sleep(0)
        return h.result(), h.compact_revision, rev, h.versions

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
            reads=self.request_counts.get(shard_id, (0, 0))[0],
            writes=self.request_counts.get(shard_id, (0, 0))[1],
        )
