"""RawNode: the thread-unsafe, I/O-free handle a host drives a Raft node with.

Usage by a host (one group):

    rd = node.ready()                      # only when node.has_ready()
    send(rd.messages)
    persist(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)
    send(rd.messages_after_persist)
    apply(rd.committed_entries)
    node.advance(rd)

Messages a node addresses to itself (its own vote, the leader's own append
acknowledgement) never appear in a Ready: they are stepped inside
``advance``, after the host has persisted what they depend on. That is what
makes sending appends before the local sync safe (thesis §10.2.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

from raft.core.config import Config
from raft.core.errors import RaftInvariantError, StepLocalMessage, StepPeerNotFound
from raft.core.raft import Raft
from raft.core.storage import Storage
from raft.core.tracker import ProgressState
from raft.core.types import (
    LOCAL_MESSAGES,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfState,
    HardState,
    Message,
    MessageType,
    RandomSource,
    Ready,
    SoftState,
    StateRole,
)


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class BasicStatus:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    lead_transferee: int


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    first_index: int
    last_index: int
    conf_state: ConfState
    lead_transferee: int
    progress: Mapping[int, ProgressStatus] = field(default_factory=lambda: MappingProxyType({}))


class RawNode:
    def __init__(
        self,
        config: Config,
        storage: Storage,
        *,
        rng: RandomSource,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.raft = Raft(config, storage, rng=rng, logger=logger)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._steps_on_advance: list[Message] = []
        self._outstanding: Ready | None = None

    # -- inputs ---------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(type=MessageType.HUP, from_=self.raft.id))

    def propose(self, data: bytes) -> None:
        """Propose data for the log. Raises ProposalDropped when it cannot be
        accepted now (no leader, leadership transfer, size limit)."""
        self.raft.propose(data)

    def propose_batch(self, datas: Sequence[bytes]) -> None:
        """Propose several entries in one message (one append per follower).
        All are accepted or all dropped (ProposalDropped)."""
        self.raft.propose_batch(tuple(datas))

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Called by the host when it applies a committed conf-change entry."""
        return self.raft.apply_conf_change(cc)

    def step(self, msg: Message) -> None:
        if msg.type in LOCAL_MESSAGES and msg.type not in (
            MessageType.UNREACHABLE,
            MessageType.SNAP_STATUS,
        ):
            raise StepLocalMessage(f"cannot step raft local message {msg.type.name}")
        if msg.type in RESPONSE_MESSAGES and not self.raft.trk.has(msg.from_):
            raise StepPeerNotFound(f"response from unknown peer {msg.from_}")
        self.raft.step(msg)

    def read_index(self, ctx: bytes) -> None:
        """Request a read index; the answer comes as a ReadState with ctx.
        ctx must be non-empty and unique among outstanding requests."""
        if not ctx:
            raise ValueError("read index context must not be empty")
        self.raft.step(Message(type=MessageType.READ_INDEX, from_=self.raft.id, entries=(), context=ctx))

    def forget_leader(self) -> None:
        """A follower's leader is known to be gone (the host saw its process
        go): campaign after the random part of the election timeout only.
        A no-op on a node that is not a follower or knows no leader."""
        self.raft.step(Message(type=MessageType.FORGET_LEADER, from_=self.raft.id))

    def transfer_leader(self, target: int) -> None:
        self.raft.step(Message(type=MessageType.TRANSFER_LEADER, from_=target, to=self.raft.id))

    def report_unreachable(self, node_id: int) -> None:
        self.raft.step(Message(type=MessageType.UNREACHABLE, from_=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self.raft.step(Message(type=MessageType.SNAP_STATUS, from_=node_id, reject=not ok))

    # -- outputs --------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        if r.soft_state() != self._prev_soft:
            return True
        hs = r.hard_state()
        if hs != self._prev_hard:
            return True
        if r.raft_log.has_pending_snapshot():
            return True
        if r.msgs or r.msgs_after_append or r.raft_log.has_unstable_entries():
            return True
        if r.read_states:
            return True
        return r.raft_log.has_next_committed_entries()

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RaftInvariantError("ready() called again before advance()")
        r = self.raft
        soft = r.soft_state()
        hard = r.hard_state()
        entries = r.raft_log.unstable_entries()
        after: list[Message] = []
        for m in r.msgs_after_append:
            if m.to == r.id:
                self._steps_on_advance.append(m)
            else:
                after.append(m)
        hard_changed = hard != self._prev_hard
        snapshot = r.raft_log.pending_snapshot()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            entries=entries,
            snapshot=snapshot,
            committed_entries=r.raft_log.next_committed_entries(),
            messages=tuple(r.msgs),
            messages_after_persist=tuple(after),
            read_states=tuple(r.read_states),
            must_sync=bool(entries)
            or snapshot is not None
            or (hard_changed and (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)),
        )
        r.msgs = []
        r.msgs_after_append = []
        r.read_states = []
        if rd.soft_state is not None:
            self._prev_soft = soft
        if rd.hard_state is not None:
            self._prev_hard = hard
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The host has persisted rd and applied rd.committed_entries."""
        if self._outstanding is not rd:
            raise RaftInvariantError("advance() with a Ready that is not the outstanding one")
        self._outstanding = None
        log = self.raft.raft_log
        if rd.snapshot is not None:
            # The host restored its state machine from the snapshot: that is
            # applied up to the snapshot's index (etcd's appliedSnap).
            log.stable_snap_to(rd.snapshot.metadata.index)
            log.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            self.raft.step(m)
        self.raft.on_advanced(rd.committed_entries)

    # -- introspection --------------------------------------------------------
    # What a host may read of the node: cheap accessors for its hot path
    # (no allocation), basic_status() and status() (etcd's BasicStatus and
    # Status). A host never reaches into ``raft``.
    @property
    def leader_id(self) -> int:
        """The leader this node knows of (0: none)."""
        return self.raft.leader_id

    @property
    def role(self) -> StateRole:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def applied(self) -> int:
        """The index the host has applied up to (as told through advance)."""
        return self.raft.raft_log.applied

    def term_at(self, index: int) -> int:
        """The term of the entry at index (raises Compacted or Unavailable)."""
        return self.raft.raft_log.term(index)

    def conf_state(self) -> ConfState:
        """The configuration as applied so far (voters and learners)."""
        return self.raft.trk.conf_state()

    def is_idle_leader(self) -> bool:
        """Whether this node leads and nothing is in flight: every entry is
        committed, applied, stable and matched by every peer, with no leader
        transfer and no ReadIndex request pending (a host may then quiesce
        the group)."""
        r = self.raft
        if r.role != StateRole.LEADER:
            return False
        log = r.raft_log
        last = log.last_index()
        if log.committed != last or log.applied != last or log.has_unstable_entries():
            return False
        if r.lead_transferee or r.pending_read_index_messages or r.read_only.queue:
            return False
        return all(pr.match == last for pr in r.trk.progress.values())

    def basic_status(self) -> BasicStatus:
        """status() without the leader's progress map (etcd's BasicStatus)."""
        r = self.raft
        return BasicStatus(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.raft_log.applied,
            lead_transferee=r.lead_transferee,
        )

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, ProgressStatus] = {}
        if r.role == StateRole.LEADER:
            for nid, pr in r.trk.progress.items():
                progress[nid] = ProgressStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.raft_log.applied,
            first_index=r.raft_log.first_index(),
            last_index=r.raft_log.last_index(),
            conf_state=r.trk.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=MappingProxyType(progress),
        )
