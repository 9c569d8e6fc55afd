"""GroupHost: many Raft groups in one asyncio process (dragonboat's engine, in asyncio).

One ticker ticks every awake group; one ready loop gathers the Ready of every
group that has work, persists all of them with ONE RocksDB write and ONE
sync (group commit), sends messages batched per destination node through
the transport, applies committed entries through each group's StateMachine
(effects and applied index in one WriteBatch), then advances every group:

    rounds:  ready(all dirty groups) -> send messages -> persist+sync (one)
             -> send messages_after_persist -> apply (one write) -> advance

Raft peer ids are node ids: a node holds at most one replica of a group.

Quiescence: a leader whose group has been idle for `quiesce_ticks` ticks and
whose followers all match its log sends each follower a heartbeat carrying
QUIESCE_CTX and stops ticking; followers that get it stop ticking too. Any
other message, a proposal, or silence from the leader's node for an election
timeout wakes the group. Node liveness costs one ping per peer node per tick,
whatever the number of groups.

Fail-stop: a RaftInvariantError or a storage failure ends `run()` with the
exception; the process exits and recovers from disk on restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from raft.core import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    ProposalDropped,
    RaftInvariantError,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
    Status,
    StepPeerNotFound,
    decode_conf_change,
)
from raft.runtime import envelope
from raft.runtime.clock import Clock
from raft.runtime.statemachine import StateMachine
from raft.storage.rocks import GroupStorage, LogBatch, RocksLogStore, is_bootstrap_snapshot
from raft.transport.base import Transport, spooled_path

log = logging.getLogger(__name__)

QUIESCE_CTX = b"\xffquiesce"
WAKE_CTX = b"\xffwake"
LIVENESS_GROUP = (1 << 64) - 1
"""Reserved group id of node-to-node liveness pings (no Raft group uses it)."""

_READ_CTX = struct.Struct(">BQQ")
_SPOOL_READ_BYTES = 1 << 20


def _streams(sm: StateMachine) -> bool:
    """Whether sm streams its snapshots (optional StateMachine methods
    ``snapshot_stream`` and ``restore_chunks``): the log store then keeps no
    snapshot data for it, and a snapshot is read from sm when it is sent."""
    return hasattr(sm, "snapshot_stream") and hasattr(sm, "restore_chunks")


def _in_conf(m: Message) -> bool:
    """Whether the snapshot m carries names its recipient in its configuration."""
    assert m.snapshot is not None
    cs = m.snapshot.metadata.conf_state
    return m.to in cs.voters or m.to in cs.learners


class GroupNotFound(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class HostConfig:
    tick_interval_s: float = 0.1
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    quiesce_ticks: int = 30
    """Idle ticks before a leader quiesces its group (0 disables quiescence)."""
    snapshot_entries: int = 10_000
    """Take a snapshot and compact once this many entries are applied past the first index."""
    compaction_margin: int = 1_000
    """Entries kept behind a snapshot for slow followers to catch up from the log."""
    max_inflight_msgs: int = 256
    max_size_per_msg: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True


@dataclass(slots=True)
class HostStats:
    rounds: int = 0
    syncs: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    messages_unknown_group: int = 0
    proposals: int = 0
    snapshots_created: int = 0
    snapshots_restored: int = 0
    ticks: int = 0


@dataclass(slots=True)
class _Group:
    group_id: int
    node: RawNode
    storage: GroupStorage
    sm: StateMachine
    quiet: bool = False
    idle_ticks: int = 0
    # read index batching: readers waiting for the next request, and the one in flight
    read_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    read_inflight: dict[bytes, list[asyncio.Future[int]]] = field(default_factory=dict)
    read_issued_tick: int = 0
    apply_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)
    # proposals of this round, handed to Raft as one message at the start of the next round
    proposals: list[bytes] = field(default_factory=list)
    proposal_seqs: list[int] = field(default_factory=list)


class GroupHost:
    def __init__(
        self,
        node_id: int,
        log_store: RocksLogStore,
        transport: Transport,
        *,
        clock: Clock,
        rng: random.Random,
        config: HostConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self.cfg = config or HostConfig()
        self._store = log_store
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._groups: dict[int, _Group] = {}
        self._awake: set[int] = set()
        self._dirty: set[int] = set()
        self._has_work = asyncio.Event()
        self._round_lock = asyncio.Lock()
        """Held by the ready loop for a round; remove_group writes between rounds."""
        self._seq = 0
        self._pending: dict[int, asyncio.Future[object]] = {}
        self._last_heard: dict[int, float] = {}
        self._peers: set[int] = set()
        self.stats = HostStats()
        self.crash_hook: Callable[[str], None] | None = None
        """Fault-injection seam: called at named persistence boundaries
        ("after_persist", "after_apply"); a test hook may end the process there."""
        self.on_unknown_group: Callable[[int, int], None] | None = None
        """Called with (group_id, from_node) when a message arrives for a group
        not hosted here (the message is dropped; Raft resends): the owner
        may create the replica (TiKV's "create a peer on a message")."""
        transport.set_handler(self)

    # -- groups -----------------------------------------------------------------
    async def create_group(self, group_id: int, sm: StateMachine, *, bootstrap: ConfState | None = None) -> None:
        """Host a replica of group_id. `bootstrap` is the initial configuration
        of a new group (ignored if the group already has state on disk); a
        replica joining an existing group passes none and learns it from the
        leader."""
        if group_id in self._groups or group_id == LIVENESS_GROUP:
            raise ValueError(f"group {group_id} already hosted or reserved")
        if self._store.tombstone(group_id) is not None:
            raise ValueError(f"group {group_id} was removed here (tombstone {self._store.tombstone(group_id)}): clear_tombstone first")
        storage = self._store.group(group_id)
        hs, cs = storage.initial_state()
        if bootstrap is not None and hs.is_empty and not cs.voters and not cs.learners and storage.last_index() == 0:
            # A snapshot at index 1 carrying the configuration (not index-0
            # metadata): a member added later is then sent a snapshot and
            # learns every voter (RocksLogStore.bootstrap).
            await self._store.bootstrap(group_id, bootstrap)
            storage = self._store.group(group_id)
        snap = storage.snapshot()
        if sm.applied_index() < snap.metadata.index:
            lb = self._store.batch()
            spooled: list[str] = []
            if is_bootstrap_snapshot(snap):
                # Crash between persisting the bootstrap and applying it: the
                # state machine must still say it is at the bootstrap index,
                # or a snapshot it sends would claim index 0 (compacted).
                sm.on_applied_index(snap.metadata.index, lb.wb)
            else:
                # Crash between persisting a received snapshot and restoring
                # the state machine from it: restore now, from the log
                # store's copy.
                self._restore(sm, snap.data, snap.metadata.index, lb.wb, spooled)
            await self._store.write(lb, sync=True)
            self._remove_spooled(spooled)
        node = RawNode(
            Config(
                id=self.node_id,
                election_ticks=self.cfg.election_ticks,
                heartbeat_ticks=self.cfg.heartbeat_ticks,
                applied=sm.applied_index(),
                max_inflight_msgs=self.cfg.max_inflight_msgs,
                max_size_per_msg=self.cfg.max_size_per_msg,
                pre_vote=self.cfg.pre_vote,
                check_quorum=self.cfg.check_quorum,
            ),
            storage,
            rng=random.Random(self._rng.getrandbits(64)),
            logger=logging.LoggerAdapter(logging.getLogger("raft.core"), {"group": group_id}),
        )
        self._replay_conf_changes(node, storage, snap.metadata.index, sm.applied_index())
        self._groups[group_id] = _Group(group_id, node, storage, sm)
        self._awake.add(group_id)
        self._mark(group_id)

    @staticmethod
    def _replay_conf_changes(node: RawNode, storage: GroupStorage, snapshot_index: int, applied: int) -> None:
        """Give a restarted group the configuration it had applied. The core
        starts from the snapshot's configuration, and entries up to
        `applied` are not applied again (the state machine has them), so
        the conf changes between the two would be lost: a replica promoted
        after its last snapshot would come back a learner, one removed would
        come back a voter. etcd re-applies from the snapshot index instead."""
        hi = min(applied, storage.last_index())
        lo = max(snapshot_index + 1, storage.first_index())
        if hi < lo:
            return
        for e in storage.entries(lo, hi + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                node.apply_conf_change(decode_conf_change(e.data))

    def group_ids(self) -> list[int]:
        return sorted(self._groups)

    def tombstone(self, group_id: int) -> int | None:
        """What remove_group left for a destroyed group (None: nothing)."""
        return self._store.tombstone(group_id)

    async def clear_tombstone(self, group_id: int) -> None:
        """Forget a destroyed group's tombstone, before hosting it again."""
        if self._store.tombstone(group_id) is not None:
            await self._store.clear_tombstone(group_id)

    async def remove_group(
        self, group_id: int, *, tombstone: int | None = None, extra_writes: Callable[[Any], None] | None = None
    ) -> None:
        """Stop hosting group_id and delete its Raft state (log, hard state,
        snapshot), leaving `tombstone` in its place if given (see
        LogBatch.remove_group); extra_writes adds the owner's own deletions
        to the same synced batch, so a crash leaves all or nothing.

        The group stops ticking and stepping at once (a message for it is
        then an unknown group's). The deletion waits for the ready round in
        flight, which may still persist or apply this group's last Ready:
        written before the deletion, never after it. Waiters get
        GroupNotFound; proposals already in the log are left to time out
        (their outcome is unknown: the group may still commit them).
        Idempotent: removing a group not hosted deletes what is on disk."""
        g = self._groups.pop(group_id, None)
        self._awake.discard(group_id)
        self._dirty.discard(group_id)
        if g is not None:
            self._fail_waiters(g)
        async with self._round_lock:
            lb = self._store.batch()
            lb.remove_group(group_id, tombstone=tombstone)
            if extra_writes is not None:
                extra_writes(lb.wb)
            await self._store.write(lb, sync=True)
        log.info("group=%d node=%d removed (tombstone=%s)", group_id, self.node_id, tombstone)

    def _fail_waiters(self, g: _Group) -> None:
        gone = GroupNotFound(g.group_id)
        for seq in g.proposal_seqs:
            fut = self._pending.get(seq)
            if fut is not None and not fut.done():
                fut.set_exception(ProposalDropped(f"group {g.group_id} removed"))
        g.proposals, g.proposal_seqs = [], []
        readers: list[asyncio.Future[Any]] = [*g.read_waiters, *(w for ws in g.read_inflight.values() for w in ws), *(f for _, f in g.apply_waiters)]
        g.read_waiters, g.read_inflight, g.apply_waiters = [], {}, []
        for fut in readers:
            if not fut.done():
                fut.set_exception(gone)

    def set_peer(self, node_id: int, address: str) -> None:
        if node_id == self.node_id:
            return
        self._peers.add(node_id)
        self._transport.set_peer(node_id, address)

    def _group(self, group_id: int) -> _Group:
        g = self._groups.get(group_id)
        if g is None:
            raise GroupNotFound(group_id)
        return g

    def status(self, group_id: int) -> Status:
        return self._group(group_id).node.status()

    def is_quiet(self, group_id: int) -> bool:
        return self._group(group_id).quiet

    def leader_of(self, group_id: int) -> int:
        return self._group(group_id).node.leader_id

    # -- inputs ---------------------------------------------------------------------
    def _mark(self, group_id: int) -> None:
        self._dirty.add(group_id)
        self._has_work.set()

    def _wake(self, g: _Group) -> None:
        if g.quiet:
            g.quiet = False
            g.idle_ticks = 0
            self._awake.add(g.group_id)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float = 5.0) -> object:
        """Propose data; return the state machine's result for it once applied
        here. Raises ProposalDropped (nothing was appended), or TimeoutError:
        the outcome is then unknown (it may still commit)."""
        g = self._group(group_id)
        seq = self._next_seq()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            if not g.proposals and g.node.leader_id == 0:
                raise ProposalDropped(f"group {group_id}: no leader")
            self._wake(g)
            g.idle_ticks = 0
            # Batched: every proposal of a round goes to Raft as one message,
            # so followers get one append per round, not one per proposal.
            g.proposals.append(envelope.wrap(self.node_id, seq, data))
            g.proposal_seqs.append(seq)
            self.stats.proposals += 1
            self._mark(group_id)
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            self._pending.pop(seq, None)

    def _flush_proposals(self, g: _Group) -> None:
        datas, seqs = g.proposals, g.proposal_seqs
        g.proposals, g.proposal_seqs = [], []
        try:
            g.node.propose_batch(datas)
        except ProposalDropped as exc:
            for seq in seqs:
                fut = self._pending.get(seq)
                if fut is not None and not fut.done():
                    fut.set_exception(ProposalDropped(str(exc)))

    async def propose_conf_change(self, group_id: int, cc: ConfChange, *, timeout_s: float = 5.0) -> ConfState:
        g = self._group(group_id)
        seq = self._next_seq()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._wake(g)
            g.node.propose_conf_change(dataclasses.replace(cc, context=envelope.wrap(self.node_id, seq, b"")))
            self._mark(group_id)
            async with asyncio.timeout(timeout_s):
                cs = await fut
            assert isinstance(cs, ConfState)
            return cs
        finally:
            self._pending.pop(seq, None)

    def transfer_leader(self, group_id: int, target: int) -> None:
        g = self._group(group_id)
        self._wake(g)
        g.node.transfer_leader(target)
        self._mark(group_id)

    def campaign(self, group_id: int) -> None:
        g = self._group(group_id)
        self._wake(g)
        g.node.campaign()
        self._mark(group_id)

    async def read_index(self, group_id: int, *, timeout_s: float = 5.0) -> int:
        """Linearizable read barrier (§6.4): returns an index such that this
        replica has applied it and no write committed before the call is
        missing. Concurrent callers share one ReadIndex round trip."""
        g = self._group(group_id)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        g.read_waiters.append(fut)
        self._wake(g)
        if not g.read_inflight:
            self._issue_read_index(g)
        async with asyncio.timeout(timeout_s):
            index = await fut
            await self.wait_applied(group_id, index)
        return index

    def _issue_read_index(self, g: _Group) -> None:
        waiters, g.read_waiters = g.read_waiters, []
        if not waiters:
            return
        ctx = _READ_CTX.pack(0x52, self.node_id, self._next_seq())
        g.read_inflight[ctx] = waiters
        g.read_issued_tick = self.stats.ticks
        g.node.read_index(ctx)
        self._mark(g.group_id)

    async def wait_applied(self, group_id: int, index: int) -> None:
        g = self._group(group_id)
        if g.node.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        g.apply_waiters.append((index, fut))
        await fut

    # -- transport handler -----------------------------------------------------------
    def on_messages(self, from_node: int, messages: list[tuple[int, Message]]) -> None:
        self._last_heard[from_node] = self._clock.monotonic()
        for group_id, m in messages:
            if group_id == LIVENESS_GROUP:
                if m.type == MessageType.HEARTBEAT:
                    self._transport.send(from_node, LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT_RESP, to=from_node, from_=self.node_id))
                continue
            g = self._groups.get(group_id)
            if g is None:
                self.stats.messages_unknown_group += 1
                if self.on_unknown_group is not None:
                    self.on_unknown_group(group_id, from_node)
                continue
            self._step(g, m)

    def _step(self, g: _Group, m: Message) -> None:
        quiesce = m.context == QUIESCE_CTX and m.type in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
        if g.quiet and self._wakes(g, m):
            self._wake(g)
            node = g.node
            if node.role == StateRole.FOLLOWER and node.leader_id not in (0, m.from_):
                # Someone else is talking to this group: make sure the leader
                # wakes too and resumes heartbeats before we time out.
                self._transport.send(
                    node.leader_id,
                    g.group_id,
                    Message(type=MessageType.HEARTBEAT_RESP, to=node.leader_id, from_=self.node_id, term=node.term, context=WAKE_CTX),
                )
        try:
            g.node.step(m)
        except StepPeerNotFound:
            return
        except ProposalDropped:
            return
        if quiesce and m.type == MessageType.HEARTBEAT:
            node = g.node
            if node.role == StateRole.FOLLOWER and node.leader_id == m.from_ and node.term == m.term:
                self._quiet(g)
        self._mark(g.group_id)

    @staticmethod
    def _wakes(g: _Group, m: Message) -> bool:
        """Whether m wakes a quiet group. Heartbeats of its own leader (they
        may still be in flight when it quiesced) and heartbeat responses carry
        no request, so they do not; WAKE_CTX explicitly does."""
        if m.type == MessageType.HEARTBEAT_RESP:
            return m.context == WAKE_CTX
        if m.type == MessageType.HEARTBEAT:
            return not (m.from_ == g.node.leader_id and m.term == g.node.term)
        return True

    def on_snapshot(self, from_node: int, group_id: int, msg: Message) -> None:
        self.on_messages(from_node, [(group_id, msg)])

    def on_unreachable(self, to_node: int, group_id: int, to: int) -> None:
        g = self._groups.get(group_id)
        if g is not None:
            g.node.report_unreachable(to)
            self._mark(group_id)

    def on_snapshot_status(self, to_node: int, group_id: int, to: int, ok: bool) -> None:
        g = self._groups.get(group_id)
        if g is not None:
            g.node.report_snapshot(to, ok)
            self._mark(group_id)

    # -- quiescence ---------------------------------------------------------------------
    def _quiet(self, g: _Group) -> None:
        g.quiet = True
        self._awake.discard(g.group_id)

    def _maybe_quiesce(self, g: _Group) -> None:
        node = g.node
        if g.read_waiters or g.read_inflight or not node.is_idle_leader():
            return
        last = node.applied  # an idle leader has applied its last entry
        cs = node.conf_state()
        for nid in sorted((*cs.voters, *cs.learners)):
            if nid != self.node_id:
                self._transport.send(
                    nid,
                    g.group_id,
                    Message(type=MessageType.HEARTBEAT, to=nid, from_=self.node_id, term=node.term, commit=last, context=QUIESCE_CTX),
                )
        self._quiet(g)

    # -- the loops -------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled; raises (fail-stop) if a loop fails."""
        await self._transport.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._ticker(), name="raft-ticker")
                tg.create_task(self._ready_loop(), name="raft-ready-loop")
                tg.create_task(self._transport.join(), name="raft-transport")
        finally:
            await self._transport.stop()

    async def _ticker(self) -> None:
        interval = self.cfg.tick_interval_s
        next_at = self._clock.monotonic()
        while True:
            next_at += interval
            delay = next_at - self._clock.monotonic()
            if delay < -interval * 5:
                next_at = self._clock.monotonic()  # fell far behind: do not burst
                delay = 0.0
            await self._clock.sleep(max(0.0, delay))
            self.tick()

    def tick(self) -> None:
        """One tick of every awake group, plus node liveness (public for tests)."""
        self.stats.ticks += 1
        now = self._clock.monotonic()
        for nid in self._peers:
            self._transport.send(nid, LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT, to=nid, from_=self.node_id))
        self._wake_groups_of_silent_peers(now)
        qt = self.cfg.quiesce_ticks
        for gid in list(self._awake):
            g = self._groups[gid]
            if qt:
                g.idle_ticks += 1
                if g.idle_ticks >= qt:
                    self._maybe_quiesce(g)
                    if g.quiet:
                        continue
            g.node.tick()
            self._dirty.add(gid)
            if g.read_inflight and self.stats.ticks - g.read_issued_tick > self.cfg.election_ticks:
                self._retry_reads(g)
        self._has_work.set()

    def _wake_groups_of_silent_peers(self, now: float) -> None:
        timeout = self.cfg.election_ticks * self.cfg.tick_interval_s
        silent = {p for p in self._peers if now - self._last_heard.setdefault(p, now) > timeout}
        if not silent or len(self._awake) == len(self._groups):
            return
        for g in self._groups.values():
            if g.quiet and g.node.leader_id in silent:
                self._wake(g)

    async def _ready_loop(self) -> None:
        while True:
            await self._has_work.wait()
            self._has_work.clear()
            async with self._round_lock:
                await self.process_ready()

    async def process_ready(self) -> None:
        """One round of the ready loop (public for tests)."""
        dirty, self._dirty = self._dirty, set()
        batch: list[tuple[_Group, Ready]] = []
        for gid in dirty:
            g = self._groups.get(gid)
            if g is not None and g.proposals:
                self._flush_proposals(g)
            if g is not None and g.node.has_ready():
                batch.append((g, g.node.ready()))
        if not batch:
            return
        self.stats.rounds += 1
        for g, rd in batch:
            self._send_all(g, rd.messages)
            if rd.entries:
                g.idle_ticks = 0
                self.stats.entries_persisted += len(rd.entries)
        lb = self._store.stage([(g.group_id, rd) for g, rd in batch])
        if lb.must_sync:
            self.stats.syncs += 1
        if self.crash_hook is not None:
            self.crash_hook("before_persist")
        await self._write(lb)
        if self.crash_hook is not None:
            self.crash_hook("after_persist")
        for g, rd in batch:
            self._send_all(g, rd.messages_after_persist)
        if self.crash_hook is not None:
            self.crash_hook("before_apply")
        apply_lb = self._store.batch()
        results: list[tuple[int, object]] = []
        spooled: list[str] = []
        for g, rd in batch:
            if rd.snapshot is not None and is_bootstrap_snapshot(rd.snapshot):
                # A new member sent the group's bootstrap snapshot: the empty
                # state (this replica's, being new) at the bootstrap index.
                g.sm.on_applied_index(rd.snapshot.metadata.index, apply_lb.wb)
            elif rd.snapshot is not None:
                if self.crash_hook is not None:
                    self.crash_hook("before_snapshot_apply")
                self._restore(g.sm, rd.snapshot.data, rd.snapshot.metadata.index, apply_lb.wb, spooled)
                self.stats.snapshots_restored += 1
            if rd.committed_entries:
                self._apply(g, rd.committed_entries, apply_lb.wb, results)
        await self._write(apply_lb, sync=bool(spooled))
        if self.crash_hook is not None and any(rd.snapshot is not None for _, rd in batch):
            self.crash_hook("after_snapshot_apply")
        self._remove_spooled(spooled)
        if self.crash_hook is not None:
            self.crash_hook("after_apply")
        for seq, result in results:
            fut = self._pending.get(seq)
            if fut is not None and not fut.done():
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        for g, rd in batch:
            g.node.advance(rd)
            for rs in rd.read_states:
                waiters = g.read_inflight.pop(rs.request_ctx, None)
                for w in waiters or ():
                    if not w.done():
                        w.set_result(rs.index)
            if g.read_waiters and not g.read_inflight:
                self._issue_read_index(g)
            if rd.soft_state is not None:
                self._on_soft_state(g, rd)
            self._release_apply_waiters(g)
            if g.node.has_ready():
                self._dirty.add(g.group_id)
                self._has_work.set()
        for g, rd in batch:
            if rd.committed_entries:
                await self._maybe_snapshot(g)

    async def _write(self, lb: LogBatch, *, sync: bool | None = None) -> None:
        """Write one of a round's batches: nothing at all when nothing was
        staged (a round of messages only, or with nothing to apply); inline
        when it needs no sync, since an unsynced RocksDB write holds the GIL
        anyway (rocks.py's table) and the executor round trip costs more
        than the write (the thread must win the GIL back, then wake the loop:
        0.2-2 ms per hop on a loaded 2-core host, on every commit round).
        Only a sync goes to the executor, so the loop runs during the fsync."""
        if lb.wb.is_empty() and not lb.group_ids:
            lb.discard()
            return
        if not (lb.must_sync if sync is None else sync):
            try:
                self._store.commit(lb, sync=False)
                return
            except RaftInvariantError:
                # Another write (e.g. create_group's) is still on the
                # executor: an inline write would overtake it. Queue behind
                # it (write() re-checks the batch and raises any other error).
                pass
        await self._store.write(lb, sync=sync)

    @staticmethod
    def _restore(sm: StateMachine, data: bytes, index: int, wb: Any, spooled: list[str]) -> None:
        """Install a snapshot's data: inline bytes, or a file the transport
        spooled it to (read in pieces by a streaming state machine)."""
        path = spooled_path(data)
        if path is None:
            sm.restore(data, index, wb)
            return
        with open(path, "rb") as f:
            if _streams(sm):
                sm.restore_chunks(iter(lambda: f.read(_SPOOL_READ_BYTES), b""), index, wb)  # type: ignore[attr-defined]
            else:
                sm.restore(f.read(), index, wb)
        spooled.append(path)

    @staticmethod
    def _remove_spooled(paths: list[str]) -> None:
        """Spool files of snapshots now installed (and their apply synced)."""
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _send_streamed_snapshot(self, g: _Group, m: Message) -> bool:
        """Send a snapshot of a streaming state machine: taken now, at its
        applied index (everything applied is written between rounds), and
        read lazily while the transport sends it. The metadata is rewritten
        to that index, which is >= the one the core chose (the log store
        keeps no data for such groups), with the term of that entry and the
        configuration as of it (conf changes are applied in log order)."""
        index, chunks = g.sm.snapshot_stream()  # type: ignore[attr-defined]
        meta = SnapshotMetadata(index=index, term=g.node.term_at(index), conf_state=g.node.conf_state())
        assert m.snapshot is not None and index >= m.snapshot.metadata.index, (index, m.snapshot)
        msg = dataclasses.replace(m, snapshot=Snapshot(metadata=meta, data=b""))
        log.info("group=%d node=%d streaming snapshot index=%d to node=%d", g.group_id, self.node_id, index, m.to)
        sent = self._transport.send_snapshot(m.to, g.group_id, msg, data=chunks)
        if self.crash_hook is not None:
            self.crash_hook("snapshot_save")
        return sent

    def _send_fresh_snapshot(self, g: _Group, m: Message) -> bool:
        """Send a snapshot taken now, at the state machine's applied index, in
        place of the log store's one whose configuration predates the
        recipient (a member added since, e.g. to a group still at its
        bootstrap snapshot): it would refuse a snapshot that does not name it
        (etcd leaves taking one to the application)."""
        index = g.sm.applied_index()
        assert m.snapshot is not None and index >= m.snapshot.metadata.index, (index, m.snapshot)
        meta = SnapshotMetadata(index=index, term=g.node.term_at(index), conf_state=g.node.conf_state())
        msg = dataclasses.replace(m, snapshot=Snapshot(metadata=meta, data=g.sm.snapshot()))
        log.info("group=%d node=%d sending fresh snapshot index=%d to new member node=%d", g.group_id, self.node_id, index, m.to)
        return self._transport.send(m.to, g.group_id, msg)

    def _on_soft_state(self, g: _Group, rd: Ready) -> None:
        node = g.node
        ss = rd.soft_state
        assert ss is not None
        log.info("group=%d node=%d role=%s leader=%d term=%d", g.group_id, self.node_id, ss.role.name, ss.leader_id, node.term)
        if node.role != StateRole.LEADER and g.read_inflight and node.leader_id:
            # A ReadIndex request may be lost across a leader change: retry.
            self._retry_reads(g)

    def _retry_reads(self, g: _Group) -> None:
        """Re-issue outstanding ReadIndex requests under a new context (the
        old request or its answer may be lost; a late answer is ignored)."""
        for waiters in g.read_inflight.values():
            g.read_waiters.extend(w for w in waiters if not w.done())
        g.read_inflight.clear()
        self._issue_read_index(g)

    def _release_apply_waiters(self, g: _Group) -> None:
        if not g.apply_waiters:
            return
        applied = g.node.applied
        keep = []
        for index, fut in g.apply_waiters:
            if index <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((index, fut))
        g.apply_waiters = keep

    def _apply(self, g: _Group, entries: tuple[Entry, ...], wb: Any, results: list[tuple[int, object]]) -> None:
        run: list[Entry] = []
        run_seqs: list[int] = []

        def flush() -> None:
            if not run:
                return
            out = g.sm.apply(run, wb)
            for s, res in zip(run_seqs, out):
                if s:
                    results.append((s, res))
            run.clear()
            run_seqs.clear()

        for e in entries:
            if e.kind == EntryKind.CONF_CHANGE:
                flush()
                cc = decode_conf_change(e.data)
                cs = g.node.apply_conf_change(cc)
                on_conf_change = getattr(g.sm, "on_conf_change", None)
                if on_conf_change is not None:  # optional: e.g. a shard's epoch counts conf changes
                    on_conf_change(e.index, wb)
                log.info("group=%d node=%d applied conf change %s %d -> %s", g.group_id, self.node_id, cc.type.name, cc.node_id, cs)
                if cc.context:
                    node_id, seq, _ = envelope.unwrap(cc.context)
                    if node_id == self.node_id:
                        results.append((seq, cs))
            elif e.data:
                node_id, seq, payload = envelope.unwrap(e.data)
                run.append(dataclasses.replace(e, data=payload))
                run_seqs.append(seq if node_id == self.node_id else 0)
        flush()
        g.sm.on_applied_index(entries[-1].index, wb)
        self.stats.entries_applied += len(entries)

    async def _maybe_snapshot(self, g: _Group) -> None:
        applied = g.node.applied
        first = g.storage.first_index()
        if applied - first < self.cfg.snapshot_entries:
            return
        cs = g.node.conf_state()
        data = b"" if _streams(g.sm) else g.sm.snapshot()
        lb = self._store.batch()
        lb.create_snapshot(g.group_id, applied, cs, data)
        compact_to = applied - self.cfg.compaction_margin
        if compact_to > first:
            lb.compact(g.group_id, compact_to)
        await self._store.write(lb, sync=False)
        if self.crash_hook is not None:
            self.crash_hook("snapshot_save")
        self.stats.snapshots_created += 1
        log.info("group=%d node=%d snapshot at index=%d, compacted to %d", g.group_id, self.node_id, applied, compact_to)

    def _send_all(self, g: _Group, msgs: tuple[Message, ...]) -> None:
        for m in msgs:
            if m.type == MessageType.SNAP and _streams(g.sm):
                sent = self._send_streamed_snapshot(g, m)
            elif m.type == MessageType.SNAP and not _in_conf(m):
                sent = self._send_fresh_snapshot(g, m)
            else:
                sent = self._transport.send(m.to, g.group_id, m)
            if sent:
                self.stats.messages_sent += 1
            else:
                self.stats.messages_dropped += 1
                if m.type == MessageType.SNAP:
                    # Not sent (peer unknown, or its snapshots in flight at the
                    # maximum): say so, or the leader waits for that follower's
                    # snapshot forever; it probes again and resends later.
                    g.node.report_snapshot(m.to, False)
                    self._mark(g.group_id)
