"""The Raft state machine (etcd's raft.go, in Python).

Every input is a tick or a message; every output accumulates in `msgs`,
`msgs_after_append` and `read_states` and leaves through RawNode.ready().
Roles swap two callables, as etcd does: `self._step` (the role's message
handler) and `self._tick` (election or heartbeat timer).

Messages that may only leave after the local persist (append and vote
responses, including those a node addresses to itself) go to
`msgs_after_append` (etcd's msgsAfterAppend).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from raft.core import confchange
from raft.core.config import Config
from raft.core.errors import (
    Compacted,
    ProposalDropped,
    RaftInvariantError,
    SnapshotTemporarilyUnavailable,
    Unavailable,
)
from raft.core.log import RaftLog
from raft.core.quorum import VoteResult, vote_result
from raft.core.read_only import ReadOnly
from raft.core.storage import Storage
from raft.core.tracker import ProgressState, ProgressTracker
from raft.core.types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    RandomSource,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)


CAMPAIGN_TRANSFER = b"CampaignTransfer"

MT = MessageType

_VOTE_TYPES = frozenset({MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP})
_AFTER_APPEND_TYPES = frozenset({MT.APP_RESP, MT.VOTE_RESP, MT.PRE_VOTE_RESP})
_VOTE_RESP_OF = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}


def _stamped(m: Message, from_: int, term: int) -> Message:
    """`m` from `from_` at `term`. Positional construction: every message the
    node sends passes here, and dataclasses.replace costs twice as much."""
    return Message(
        m.type, m.to, from_, term, m.log_term, m.index, m.entries, m.commit, m.snapshot, m.reject, m.reject_hint, m.context
    )


class Raft:
    # Slots, not a __dict__: a store hosts thousands of idle groups (issue #20).
    __slots__ = (
        "_step", "_tick", "check_quorum", "election_elapsed", "election_timeout", "heartbeat_elapsed",
        "heartbeat_timeout", "id", "is_learner", "lead_transferee", "leader_id", "logger", "max_msg_size",
        "max_uncommitted_size", "msgs", "msgs_after_append", "pending_conf_index",
        "pending_read_index_messages", "pre_vote", "raft_log", "randomized_election_timeout", "read_only",
        "read_states", "rng", "role", "step_down_on_removal", "term", "trk", "uncommitted_size", "vote"
    )

    def __init__(
        self,
        config: Config,
        storage: Storage,
        *,
        rng: RandomSource,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        config.validate()
        self.id = config.id
        self.logger = logger
        self.rng = rng
        self.raft_log = RaftLog(storage, logger, config.max_committed_size_per_ready)
        self.max_msg_size = config.max_size_per_msg
        self.max_uncommitted_size = config.max_uncommitted_entries_size
        self.trk = ProgressTracker(config.max_inflight_msgs)
        self.election_timeout = config.election_ticks
        self.heartbeat_timeout = config.heartbeat_ticks
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.step_down_on_removal = config.step_down_on_removal

        self.term = 0
        self.vote: int = NONE
        self.leader_id: int = NONE
        self.role = StateRole.FOLLOWER
        self.is_learner = False
        self.lead_transferee: int = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout

        self.msgs: list[Message] = []
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []

        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = storage.initial_state()
        confchange.restore(self.trk, cs, self.raft_log.last_index())
        pr = self.trk.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if not hs.is_empty:
            self._load_state(hs)
        if config.applied > 0:
            self.raft_log.applied_to(config.applied)
        self._become_follower(self.term, NONE)
        self.logger.info(
            "newRaft %d [peers: %s, learners: %s, term: %d, commit: %d, applied: %d, lastindex: %d, lastterm: %d]",
            self.id,
            list(cs.voters),
            list(cs.learners),
            self.term,
            self.raft_log.committed,
            self.raft_log.applied,
            self.raft_log.last_index(),
            self.raft_log.last_term(),
        )

    # -- state ------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(leader_id=self.leader_id, role=self.role)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.raft_log.committed)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.raft_log.committed or hs.commit > self.raft_log.last_index():
            raise RaftInvariantError(
                f"{self.id} state.commit {hs.commit} is out of range "
                f"[{self.raft_log.committed}, {self.raft_log.last_index()}]"
            )
        self.raft_log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    # -- sending ----------------------------------------------------------
    def _send(self, m: Message) -> None:
        t = m.type
        if t in _VOTE_TYPES:
            if m.term == 0:
                raise RaftInvariantError(f"term should be set when sending {t.name}")
            term = m.term
        else:
            if m.term != 0:
                raise RaftInvariantError(f"term should not be set when sending {t.name} (was {m.term})")
            term = 0 if t is MT.PROP or t is MT.READ_INDEX else self.term
        if m.from_ == NONE or term != m.term:
            m = _stamped(m, m.from_ if m.from_ != NONE else self.id, term)
        if t in _AFTER_APPEND_TYPES:
            self.msgs_after_append.append(m)
        else:
            if m.to == self.id:
                raise RaftInvariantError(f"message should not be self-addressed when sending {t.name}")
            self.msgs.append(m)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, *, send_if_empty: bool) -> bool:
        """Send an append (or a snapshot) to `to` if its progress allows.
        Returns whether a message was sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.raft_log.term(prev_index)
            ents = self.raft_log.entries(pr.next, self.max_msg_size)
        except (Compacted, Unavailable):
            return self._maybe_send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                type=MT.APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.raft_log.committed,
            )
        )
        pr.sent_entries(len(ents))
        return True

    def _maybe_send_snapshot(self, to: int) -> bool:
        pr = self.trk.progress[to]
        if not pr.recent_active:
            self.logger.debug("%d ignore sending snapshot to %d since it is not recently active", self.id, to)
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailable:
            self.logger.debug("%d failed to send snapshot to %d because snapshot is temporarily unavailable", self.id, to)
            return False
        if snap.is_empty:
            raise RaftInvariantError("need non-empty snapshot")
        self.logger.info(
            "%d [firstindex: %d, commit: %d] sent snapshot[index: %d, term: %d] to %d",
            self.id,
            self.raft_log.first_index(),
            self.raft_log.committed,
            snap.metadata.index,
            snap.metadata.term,
            to,
        )
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(type=MT.SNAP, to=to, snapshot=snap))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never advance a follower's commit beyond what it is known to have.
        commit = min(self.trk.progress[to].match, self.raft_log.committed)
        self._send(Message(type=MT.HEARTBEAT, to=to, commit=commit, context=ctx))

    def _bcast_append(self) -> None:
        for nid in self.trk.progress:
            if nid != self.id:
                self._send_append(nid)

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_only.start_round()
        for nid in self.trk.progress:
            if nid != self.id:
                self._send_heartbeat(nid, ctx)

    # -- role transitions ---------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.leader_id = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._abort_leader_transfer()
        self.trk.reset_votes()
        last = self.raft_log.last_index()
        for nid, pr in self.trk.progress.items():
            pr.match = 0
            pr.next = last + 1
            pr.recent_active = False
            pr._reset_state(ProgressState.PROBE)
            if nid == self.id:
                # Only what is persisted counts toward our own match: the rest
                # is acknowledged to ourselves after the persist.
                pr.match = self.raft_log.last_stable_index()
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()

    def _become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self._tick = self._tick_election
        self.leader_id = lead
        self.role = StateRole.FOLLOWER
        self.logger.info("%d became follower at term %d", self.id, self.term)

    def _become_candidate(self) -> None:
        if self.role == StateRole.LEADER:
            raise RaftInvariantError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.role = StateRole.CANDIDATE
        self.logger.info("%d became candidate at term %d", self.id, self.term)

    def _become_pre_candidate(self) -> None:
        if self.role == StateRole.LEADER:
            raise RaftInvariantError("invalid transition [leader -> pre-candidate]")
        # Pre-candidacy changes neither the term nor the vote (thesis §9.6).
        self._step = self._step_candidate
        self.trk.reset_votes()
        self._tick = self._tick_election
        self.leader_id = NONE
        self.role = StateRole.PRE_CANDIDATE
        self.logger.info("%d became pre-candidate at term %d", self.id, self.term)

    def _become_leader(self) -> None:
        if self.role == StateRole.FOLLOWER:
            raise RaftInvariantError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self._tick = self._tick_heartbeat
        self.leader_id = self.id
        self.role = StateRole.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # No conf change until everything up to here is applied, and (see
        # propose) until an entry of this term has committed.
        self.pending_conf_index = self.raft_log.last_index()
        # The no-op entry that lets this leader commit its term (§5.4.2, §8).
        if not self._append_entry([Entry(term=0, index=0)]):
            raise RaftInvariantError("empty entry was dropped")
        self.uncommitted_size = 0
        self.logger.info("%d became leader at term %d", self.id, self.term)

    # -- ticks ----------------------------------------------------------------
    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(type=MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(type=MT.CHECK_QUORUM, from_=self.id))
            if self.role == StateRole.LEADER and self.lead_transferee != NONE:
                self._abort_leader_transfer()
        if self.role != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MT.BEAT, from_=self.id))

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    def _promotable(self) -> bool:
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.has_pending_snapshot()

    def _abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # -- proposals ------------------------------------------------------------
    def propose(self, data: bytes) -> None:
        self.step(Message(type=MT.PROP, from_=self.id, entries=(Entry(term=0, index=0, data=data),)))

    def propose_batch(self, datas: tuple[bytes, ...]) -> None:
        if not datas:
            return
        self.step(Message(type=MT.PROP, from_=self.id, entries=tuple(Entry(term=0, index=0, data=d) for d in datas)))

    def propose_conf_change(self, cc: ConfChange) -> None:
        data = confchange.encode_conf_change(cc)
        self.step(
            Message(
                type=MT.PROP,
                from_=self.id,
                entries=(Entry(term=0, index=0, kind=EntryKind.CONF_CHANGE, data=data),),
            )
        )

    def _drop_proposal(self, m: Message, why: str) -> None:
        self.logger.debug("%d dropped proposal from %d: %s", self.id, m.from_, why)
        if m.from_ == self.id:
            raise ProposalDropped(why)

    def _append_entry(self, es: list[Entry]) -> bool:
        li = self.raft_log.last_index()
        term = self.term
        ents = [Entry(term, li + 1 + i, e.kind, e.data) for i, e in enumerate(es)]
        if not self._increase_uncommitted_size(ents):
            return False
        li = self.raft_log.append(ents)
        # The leader acknowledges its own entries only once they are persisted.
        self._send(Message(type=MT.APP_RESP, to=self.id, index=li))
        return True

    def _increase_uncommitted_size(self, ents: list[Entry]) -> bool:
        size = sum(len(e.data) for e in ents)
        if self.uncommitted_size > 0 and size > 0 and self.max_uncommitted_size > 0:
            if self.uncommitted_size + size > self.max_uncommitted_size:
                return False
        self.uncommitted_size += size
        return True

    def reduce_uncommitted_size(self, ents: tuple[Entry, ...]) -> None:
        if self.uncommitted_size == 0:
            return
        size = sum(len(e.data) for e in ents)
        self.uncommitted_size = max(0, self.uncommitted_size - size)

    def _committed_entry_in_current_term(self) -> bool:
        return self.raft_log.zero_term_on_err(self.raft_log.committed) == self.term

    # -- conf changes ---------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        confchange.apply(self.trk, cc, self.raft_log.last_index())
        self.logger.info("%d applied conf change %s %d", self.id, cc.type.name, cc.node_id)
        return self._switch_to_config()

    def _switch_to_config(self) -> ConfState:
        cs = self.trk.conf_state()
        pr = self.trk.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.role == StateRole.LEADER:
            # Removed or demoted: a leader that is not a voter steps down.
            if self.step_down_on_removal:
                self._become_follower(self.term, NONE)
            return cs
        if self.role != StateRole.LEADER or not cs.voters:
            return cs
        if self._maybe_commit():
            self._bcast_append()
        else:
            for nid in self.trk.progress:
                if nid != self.id:
                    self._maybe_send_append(nid, send_if_empty=False)
        if self.lead_transferee != NONE and not self.trk.has(self.lead_transferee):
            self._abort_leader_transfer()
        return cs

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.raft_log
        if log.applied >= log.committed:
            return False
        lo = max(log.applied + 1, log.first_index())
        return any(e.kind == EntryKind.CONF_CHANGE for e in log.slice(lo, log.committed + 1))

    # -- elections ------------------------------------------------------------
    def _hup(self, transfer: bool) -> None:
        if self.role == StateRole.LEADER:
            self.logger.debug("%d ignoring HUP because already leader", self.id)
            return
        if not self._promotable():
            self.logger.warning("%d is unpromotable and can not campaign", self.id)
            return
        if self._has_unapplied_conf_changes():
            self.logger.warning("%d cannot campaign at term %d since there are still pending configuration changes to apply", self.id, self.term)
            return
        self.logger.info("%d is starting a new election at term %d", self.id, self.term)
        if self.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, *, pre: bool, transfer: bool) -> None:
        if not self._promotable():
            self.logger.warning("%d is unpromotable; campaign() should have been called", self.id)
            return
        if pre:
            self._become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self.term + 1  # our future term; the current one is unchanged
        else:
            self._become_candidate()
            vote_type = MT.VOTE
            term = self.term
        last = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for nid in self.trk.voters():
            if nid == self.id:
                # Our own vote counts only after the persist of term and vote.
                self._send(Message(type=_VOTE_RESP_OF[vote_type], to=self.id, term=term))
                continue
            self.logger.info(
                "%d [logterm: %d, index: %d] sent %s request to %d at term %d",
                self.id, last_term, last, vote_type.name, nid, self.term,
            )
            self._send(Message(type=vote_type, to=nid, term=term, index=last, log_term=last_term, context=ctx))

    def _poll(self, from_: int, granted: bool) -> VoteResult:
        self.trk.record_vote(from_, granted)
        _, _, res = self.trk.tally_votes()
        return res

    # -- step -------------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.leader_id != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Leader stickiness (thesis §4.2.3): we heard from a leader
                    # within the minimum election timeout.
                    self.logger.info(
                        "%d [logterm: %d, index: %d, vote: %d] ignored %s from %d [logterm: %d, index: %d] at term %d: lease is not expired",
                        self.id, self.raft_log.last_term(), self.raft_log.last_index(), self.vote,
                        m.type.name, m.from_, m.log_term, m.index, self.term,
                    )
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change our term in response to a pre-vote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # our future term: we bump it when the pre-vote wins
            else:
                self.logger.info(
                    "%d [term: %d] received a %s message with higher term from %d [term: %d]",
                    self.id, self.term, m.type.name, m.from_, m.term,
                )
                if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                    self._become_follower(m.term, m.from_)
                else:
                    self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. partitioned) learns our term and steps down,
                # instead of us bumping terms when it rejoins.
                self._send(Message(type=MT.APP_RESP, to=m.from_))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(type=MT.PRE_VOTE_RESP, to=m.from_, term=self.term, reject=True))
            else:
                self.logger.debug(
                    "%d [term: %d] ignored a %s message with lower term from %d [term: %d]",
                    self.id, self.term, m.type.name, m.from_, m.term,
                )
            return

        t = m.type
        if t == MT.HUP:
            self._hup(transfer=False)
        elif t == MT.VOTE or t == MT.PRE_VOTE:
            can_vote = (
                self.vote == m.from_
                or (self.vote == NONE and self.leader_id == NONE)
                or (t == MT.PRE_VOTE and m.term > self.term)
            )
            if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
                self.logger.info(
                    "%d [logterm: %d, index: %d, vote: %d] cast %s for %d [logterm: %d, index: %d] at term %d",
                    self.id, self.raft_log.last_term(), self.raft_log.last_index(), self.vote,
                    t.name, m.from_, m.log_term, m.index, self.term,
                )
                self._send(Message(type=_VOTE_RESP_OF[t], to=m.from_, term=m.term))
                if t == MT.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.from_
            else:
                self.logger.info(
                    "%d [logterm: %d, index: %d, vote: %d] rejected %s from %d [logterm: %d, index: %d] at term %d",
                    self.id, self.raft_log.last_term(), self.raft_log.last_index(), self.vote,
                    t.name, m.from_, m.log_term, m.index, self.term,
                )
                self._send(Message(type=_VOTE_RESP_OF[t], to=m.from_, term=self.term, reject=True))
        else:
            self._step(m)

    # -- leader -------------------------------------------------------------
    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self._bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            if not self.trk.quorum_active():
                self.logger.warning("%d stepped down to follower since quorum is not active", self.id)
                self._become_follower(self.term, NONE)
            for nid, peer in self.trk.progress.items():
                if nid != self.id:
                    peer.recent_active = False
            return
        if t == MT.PROP:
            self._leader_propose(m)
            return
        if t == MT.READ_INDEX:
            if self.trk.is_singleton():
                self._respond_read_index(m, self.raft_log.committed)
                return
            if not self._committed_entry_in_current_term():
                # §6.4: the read index is only known once this term committed.
                self.pending_read_index_messages.append(m)
                return
            self._send_read_index_response(m)
            return

        pr = self.trk.progress.get(m.from_)
        if pr is None:
            self.logger.debug("%d no progress available for %d", self.id, m.from_)
            return
        if t == MT.APP_RESP:
            pr.recent_active = True
            if m.reject:
                self.logger.debug(
                    "%d received APP_RESP(rejected, hint: (index %d, term %d)) from %d for index %d",
                    self.id, m.reject_hint, m.log_term, m.from_, m.index,
                )
                next_probe = m.reject_hint
                if m.log_term > 0:
                    next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, next_probe):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.from_)
                return
            old_paused = pr.is_paused()
            if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.raft_log.first_index():
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state == ProgressState.REPLICATE:
                    pr.inflights.free_le(m.index)
                if self._maybe_commit():
                    self._release_pending_read_index_messages()
                    self._bcast_append()
                elif old_paused and m.from_ != self.id:
                    self._send_append(m.from_)
                if m.from_ != self.id:
                    for _ in range(self.trk.max_inflight + 1):
                        if not self._maybe_send_append(m.from_, send_if_empty=False):
                            break
                if m.from_ == self.lead_transferee and pr.match == self.raft_log.last_index():
                    self.logger.info("%d sent TIMEOUT_NOW to %d after received APP_RESP", self.id, m.from_)
                    self._send(Message(type=MT.TIMEOUT_NOW, to=m.from_))
            return
        if t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.raft_log.last_index():
                self._send_append(m.from_)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.from_, m.context)
            if acks is None:
                return
            if vote_result(self.trk.voters(), acks) != VoteResult.WON:
                return
            for rs in self.read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
            if self.read_only.queue and not self.read_only.round_in_flight():
                self._bcast_heartbeat()  # the requests that came during that round
            return
        if t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            self.logger.debug("%d snapshot %s, resumed sending replication messages to %d", self.id, "failed" if m.reject else "succeeded", m.from_)
            # Wait for a heartbeat response before the next append (etcd).
            pr.probe_sent = True
            return
        if t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            return
        if t == MT.TRANSFER_LEADER:
            self._leader_transfer(m, pr.is_learner, pr.match)
            return

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise RaftInvariantError(f"{self.id} stepped empty PROP")
        if self.id not in self.trk.progress:
            # We were removed from the configuration while leader.
            self._drop_proposal(m, "leader is not in the configuration")
            return
        if self.lead_transferee != NONE:
            self._drop_proposal(m, f"leadership transfer to {self.lead_transferee} in progress")
            return
        for e in m.entries:
            if e.kind != EntryKind.CONF_CHANGE:
                continue
            why = self._refuse_conf_change(e)
            if why:
                self._drop_proposal(m, why)
                return
        if not self._append_entry(list(m.entries)):
            self._drop_proposal(m, "too many uncommitted entries")
            return
        for i, e in enumerate(m.entries):
            if e.kind == EntryKind.CONF_CHANGE:
                self.pending_conf_index = self.raft_log.last_index() - len(m.entries) + 1 + i
        self._bcast_append()

    def _refuse_conf_change(self, e: Entry) -> str:
        if self.pending_conf_index > self.raft_log.applied:
            return f"possible unapplied conf change at index {self.pending_conf_index} (applied to {self.raft_log.applied})"
        if not self._committed_entry_in_current_term():
            return "leader has not yet committed an entry of its term"
        try:
            cc = confchange.decode_conf_change(e.data)
        except ValueError as exc:
            return f"invalid conf change: {exc}"
        if cc.node_id <= 0:
            return f"invalid node id {cc.node_id}"
        if not confchange.voters_after(self.trk.conf_state(), cc):
            return "conf change would remove every voter"
        return ""

    def _leader_transfer(self, m: Message, target_is_learner: bool, target_match: int) -> None:
        target = m.from_
        if target_is_learner:
            self.logger.debug("%d is learner. Ignored transferring leadership", target)
            return
        last = self.lead_transferee
        if last != NONE:
            if last == target:
                self.logger.info("%d [term %d] transfer leadership to %d is in progress, ignores request to same node", self.id, self.term, target)
                return
            self._abort_leader_transfer()
        if target == self.id:
            self.logger.debug("%d is already leader. Ignored transferring leadership to self", self.id)
            return
        self.logger.info("%d [term %d] starts to transfer leadership to %d", self.id, self.term, target)
        # Transfer must finish within an election timeout or it is aborted.
        self.election_elapsed = 0
        self.lead_transferee = target
        if target_match == self.raft_log.last_index():
            self._send(Message(type=MT.TIMEOUT_NOW, to=target))
        else:
            self._send_append(target)

    def _maybe_commit(self) -> bool:
        return self.raft_log.maybe_commit(self.trk.committed(), self.term)

    def _send_read_index_response(self, m: Message) -> None:
        self._queue_read(m)
        if not self.read_only.round_in_flight():
            self._bcast_heartbeat()

    def _queue_read(self, m: Message) -> None:
        self.read_only.add_request(self.raft_log.committed, m)
        self.read_only.recv_ack(self.id, m.context)

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(index=index, request_ctx=req.context))
            return
        self._send(Message(type=MT.READ_INDEX_RESP, to=req.from_, index=index, context=req.context))

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages:
            return
        if not self._committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self._queue_read(m)
        if not self.read_only.round_in_flight():
            self._bcast_heartbeat()  # one round for all of them

    # -- candidate ------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.role == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        t = m.type
        if t == MT.PROP:
            self._drop_proposal(m, "no leader (campaigning)")
        elif t == MT.APP:
            self._become_follower(m.term, m.from_)
            self._handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self._become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self._become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.from_, not m.reject)
            granted, rejected, _ = self.trk.tally_votes()
            self.logger.info(
                "%d has received %d %s votes and %d vote rejections", self.id, granted, t.name, rejected
            )
            if res == VoteResult.WON:
                if self.role == StateRole.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif res == VoteResult.LOST:
                self._become_follower(self.term, NONE)
        elif t == MT.TIMEOUT_NOW:
            self.logger.debug("%d [term %d state %s] ignored TIMEOUT_NOW from %d", self.id, self.term, self.role.name, m.from_)
        elif t == MT.READ_INDEX:
            self.logger.debug("%d no leader at term %d; dropping read index", self.id, self.term)

    # -- follower -------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            if self.leader_id == NONE:
                self._drop_proposal(m, "no leader")
                return
            self._send(replace(m, to=self.leader_id))
        elif t == MT.APP:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self._handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.leader_id = m.from_
            self._handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.leader_id == NONE:
                self.logger.info("%d no leader at term %d; dropping leader transfer msg", self.id, self.term)
                return
            self._send(replace(m, to=self.leader_id))
        elif t == MT.TIMEOUT_NOW:
            self.logger.info("%d [term %d] received TIMEOUT_NOW from %d and starts an election to get leadership", self.id, self.term, m.from_)
            # Leadership transfers never use pre-vote: we know we are not
            # recovering from a partition, so campaign at once.
            self._hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.leader_id == NONE:
                self.logger.info("%d no leader at term %d; dropping index reading msg", self.id, self.term)
                return
            self._send(replace(m, to=self.leader_id))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.context))
        elif t == MT.FORGET_LEADER:
            self._forget_leader()

    def _forget_leader(self) -> None:
        """The host learned that the leader's process is gone (its
        connection was reset): stop waiting out the leader's lease. Unlike
        etcd's ForgetLeader, which only lets this follower grant pre-votes
        at once, the election clock also moves to the end of the minimum
        election timeout, so this follower campaigns after the random part
        alone ([0, election_timeout) ticks more). Safe: it changes only when
        an election starts, never who can win one; a leader that is in fact
        alive re-establishes itself with its next heartbeat."""
        if self.leader_id == NONE:
            return
        self.logger.info("%d [term %d] forgets leader %d", self.id, self.term, self.leader_id)
        self.leader_id = NONE
        self.election_elapsed = max(self.election_elapsed, self.election_timeout)

    def _handle_append_entries(self, m: Message) -> None:
        log = self.raft_log
        if m.index < log.committed:
            self._send(Message(type=MT.APP_RESP, to=m.from_, index=log.committed))
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(type=MT.APP_RESP, to=m.from_, index=last))
            return
        # Reject with a hint for fast back-tracking: the largest index at or
        # below m.index whose term is <= m.log_term.
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self.logger.debug(
            "%d [logterm: %d, index: %d] rejected APP [logterm: %d, index: %d] from %d",
            self.id, log.zero_term_on_err(m.index), m.index, m.log_term, m.index, m.from_,
        )
        self._send(
            Message(type=MT.APP_RESP, to=m.from_, index=m.index, reject=True, reject_hint=hint_index, log_term=hint_term)
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self._send(Message(type=MT.HEARTBEAT_RESP, to=m.from_, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            raise RaftInvariantError("SNAP message without snapshot")
        if self._restore(snap):
            self.logger.info(
                "%d [commit: %d] restored snapshot [index: %d, term: %d]",
                self.id, self.raft_log.committed, snap.metadata.index, snap.metadata.term,
            )
            self._send(Message(type=MT.APP_RESP, to=m.from_, index=self.raft_log.last_index()))
        else:
            self.logger.info(
                "%d [commit: %d] ignored snapshot [index: %d, term: %d]",
                self.id, self.raft_log.committed, snap.metadata.index, snap.metadata.term,
            )
            self._send(Message(type=MT.APP_RESP, to=m.from_, index=self.raft_log.committed))

    def _restore(self, s: Snapshot) -> bool:
        md = s.metadata
        if md.index <= self.raft_log.committed:
            return False
        if self.role != StateRole.FOLLOWER:
            # Defense in depth (etcd): never restore a snapshot while leading.
            self.logger.warning("%d attempted to restore snapshot as leader; should never happen", self.id)
            self._become_follower(self.term + 1, NONE)
            return False
        cs = md.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            self.logger.warning("%d attempted to restore snapshot but it is not in the ConfState %s; should never happen", self.id, cs)
            return False
        if self.raft_log.match_term(md.index, md.term):
            # We already have the snapshot's last entry: fast-forward commit.
            self.raft_log.commit_to(md.index)
            return False
        self.raft_log.restore(s)
        confchange.restore(self.trk, cs, self.raft_log.last_index())
        self._switch_to_config()
        return True

    # -- host hook ------------------------------------------------------------
    def on_advanced(self, committed: tuple[Entry, ...]) -> None:
        if self.role == StateRole.LEADER and committed:
            self.reduce_uncommitted_size(committed)
