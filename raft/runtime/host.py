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
other message, a proposal, or silence from the leader's node (or, at the
leader, a member's) for an election timeout wakes the group. Node liveness
costs a ping per peer node every few ticks while they share a quiet group,
whatever the number of groups; with every group quiet the ticker does not
tick (``ticker.py``).

Fail-stop: a RaftInvariantError or a storage failure ends `run()` with the
exception; the process exits and recovers from disk on restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import Counter, deque
from typing import Any, Awaitable, Callable

from raft.core import ConfChange, ConfState, Message, MessageType, ProposalDropped, StateRole, StepPeerNotFound
from raft.runtime import envelope
from raft.runtime.clock import Clock
from raft.runtime.group import Group, GroupNotFound, HostConfig, HostStats
from raft.runtime.quiescence import LIVENESS_GROUP, NODE_MESSAGE_GROUP, QUIESCE_CTX, WAKE_CTX, Quiescence
from raft.runtime.readindex import ReadIndex
from raft.runtime.readyloop import ReadyLoop
from raft.runtime.registry import GroupRegistry
from raft.runtime.snapshots import Snapshots
from raft.runtime.ticker import Ticker
from raft.storage.logstore import LogStore
from raft.transport.base import Transport

__all__ = ["GroupHost", "GroupNotFound", "HostConfig", "HostStats"]

log = logging.getLogger(__name__)


def _time_out(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class GroupHost(GroupRegistry, ReadyLoop, Ticker, Quiescence, ReadIndex, Snapshots):
    """Many Raft groups in one asyncio process. Its parts, one job each, are
    listed in ``raft/runtime/group.py``; this class wires them and takes the
    inputs: proposals, conf changes, leader transfers, and the transport's
    messages."""

    def __init__(
        self,
        node_id: int,
        log_store: LogStore[Any],
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
        self._groups: dict[int, Group] = {}
        self._awake: set[int] = set()
        self._dirty: set[int] = set()
        self._has_work = asyncio.Event()
        self._round_lock = asyncio.Lock()
        """Held by the ready loop for a round; remove_group writes between rounds."""
        self._last_sync_s = 0.0
        self._seq = (clock.wall_ms() & ((1 << 43) - 1)) << 20
        """Proposal sequence numbers (in each entry's envelope) start where no
        earlier process of this node's could have reached: its entries still
        in the log are applied after a restart, and a reused number answered
        a new proposal with an old entry's result (an acknowledged write that
        was never written; the host simulation found it)."""
        self._pending: dict[int, asyncio.Future[object]] = {}
        self._last_heard: dict[int, float] = {}
        self._last_sent: dict[int, float] = {}
        self._ping_to: Counter[int] = Counter()
        self._watched: Counter[int] = Counter()
        self._ticker_wakeup = asyncio.Event()
        self._judge_silence_after = 0.0
        self._campaigns: deque[int] = deque()
        self._campaigning: dict[int, int] = {}
        """New groups' campaigns started (ticker.py): group id -> the tick they started at."""
        self._peers: set[int] = set()
        self.stats = HostStats()
        self.crash_hook: Callable[[str], None] | None = None
        """Fault-injection seam: called at named persistence boundaries
        ("after_persist", "after_apply"); a test hook may end the process there."""
        self.on_unknown_group: Callable[[int, int], None] | None = None
        """Called with (group_id, from_node) when a message arrives for a group
        not hosted here (the message is dropped; Raft resends): the owner
        may create the replica (TiKV's "create a peer on a message")."""
        self.on_node_message: Callable[[int, Message], None] | None = None
        """Called with (from_node, message) for each node-to-node message of
        the owner's (``send_node_message``): a side channel per node pair
        riding the transport's per-destination batches (the store's closed
        timestamps, shard/node/closedts.py)."""
        self.on_activity: Callable[[int], None] | None = None
        """Called with a group id, synchronously, whenever something may end
        the group's idleness: a proposal, conf change, leader transfer or
        campaign here, or a change of its role, leader or term."""
        self.conf_change_barrier: Callable[[int], Awaitable[None]] | None = None
        """Awaited with the group id before a conf change is proposed here
        (the store logs its closed timestamp first: shard/node/closedts.py)."""
        transport.set_handler(self)

    # -- inputs ---------------------------------------------------------------------
    def _mark(self, group_id: int) -> None:
        self._dirty.add(group_id)
        self._has_work.set()

    def _active(self, group_id: int) -> None:
        if self.on_activity is not None:
            self.on_activity(group_id)

    def send_node_message(self, node_id: int, m: Message) -> None:
        """Send m to node_id's ``on_node_message`` (batched with the Raft
        messages to that node; may be lost, never reordered on one connection)."""
        self._last_sent[node_id] = self._clock.monotonic()  # counts as a liveness ping (ticker.py)
        self._transport.send(node_id, NODE_MESSAGE_GROUP, m)

    def is_idle_leader(self, group_id: int) -> bool:
        """This node leads the group and nothing is in flight: no proposal
        waiting for the next round, every entry committed, applied and matched
        by every peer (RawNode.is_idle_leader)."""
        g = self._groups.get(group_id)
        return g is not None and not g.proposals and g.node.is_idle_leader()

    def term_and_leader(self, group_id: int) -> tuple[int, int]:
        """(term, leader id) of the group as this node knows them ((0, 0): not hosted)."""
        g = self._groups.get(group_id)
        return (g.node.term, g.node.leader_id) if g is not None else (0, 0)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float = 5.0) -> object:
        """Propose data; return the state machine's result for it once applied
        here. Raises ProposalDropped (nothing was appended), or TimeoutError:
        the outcome is then unknown (it may still commit)."""
        g = self._group(group_id)
        seq = self._next_seq()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._pending[seq] = fut
        # A timer that fails the future, not asyncio.timeout: that one costs
        # a Timeout object, the current task and a reschedule per call, and
        # every write passes here (issue #18). The answer sets the future only
        # while it is not done, so a timed-out future is left alone.
        expiry = loop.call_at(loop.time() + timeout_s, _time_out, fut)
        try:
            if not g.proposals and g.node.leader_id == 0:
                raise ProposalDropped(f"group {group_id}: no leader")
            self._wake(g)
            g.idle_ticks = 0
            self._active(group_id)
            # Batched: every proposal of a round goes to Raft as one message,
            # so followers get one append per round, not one per proposal.
            g.proposals.append(envelope.wrap(self.node_id, seq, data))
            g.proposal_seqs.append(seq)
            self.stats.proposals += 1
            self._mark(group_id)
            return await fut
        finally:
            expiry.cancel()
            self._pending.pop(seq, None)

    def _flush_proposals(self, g: Group) -> None:
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
        if self.conf_change_barrier is not None:
            await self.conf_change_barrier(group_id)
        seq = self._next_seq()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._wake(g)
            self._active(group_id)
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
        self._active(group_id)
        g.node.transfer_leader(target)
        self._mark(group_id)

    def campaign(self, group_id: int) -> None:
        g = self._group(group_id)
        self._wake(g)
        self._active(group_id)
        g.node.campaign()
        self._mark(group_id)

    # -- transport handler -----------------------------------------------------------
    def on_messages(self, from_node: int, messages: list[tuple[int, Message]]) -> None:
        now = self._clock.monotonic()
        self._last_heard[from_node] = now
        for group_id, m in messages:
            if group_id == LIVENESS_GROUP:
                if m.type == MessageType.HEARTBEAT:
                    # The answer is a word to that node as good as a ping of
                    # our own (ticker.py): two nodes that each lead groups of
                    # the other's do not both ping, one pings and one answers.
                    self._transport.send(from_node, LIVENESS_GROUP, Message(type=MessageType.HEARTBEAT_RESP, to=from_node, from_=self.node_id))
                    self._last_sent[from_node] = now
                continue
            if group_id == NODE_MESSAGE_GROUP:
                if self.on_node_message is not None:
                    self.on_node_message(from_node, m)
                continue
            g = self._groups.get(group_id)
            if g is None:
                self.stats.messages_unknown_group += 1
                if self.on_unknown_group is not None:
                    self.on_unknown_group(group_id, from_node)
                continue
            self._step(g, m)

    def _step(self, g: Group, m: Message) -> None:
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

    def on_peer_down(self, node_id: int) -> None:
        """node_id's process is gone (the transport's connection to it was
        refused): every group here that it led forgets it and elects a new
        leader after the random part of the election timeout, not after the
        full lease (issue #13: a killed store's shards took 1.1-1.8 s to
        elect). Quiet groups wake for it."""
        n = 0
        for g in self._groups.values():
            node = g.node
            if node.role == StateRole.FOLLOWER and node.leader_id == node_id:
                self._wake(g)
                node.forget_leader()
                self._mark(g.group_id)
                n += 1
        if n:
            log.info("node=%d: node %d is gone; %d group(s) it led elect anew", self.node_id, node_id, n)

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
