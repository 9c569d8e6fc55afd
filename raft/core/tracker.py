"""Replication progress of each peer, as seen by the leader (etcd's tracker).

Progress state diagram (etcd design.md):

    PROBE      --(append acked)-->        REPLICATE
    REPLICATE  --(reject/unreachable)-->  PROBE
    PROBE|REPLICATE --(log compacted)-->  SNAPSHOT
    SNAPSHOT   --(snapshot acked/failed)-> PROBE

In PROBE the leader sends one append at a time and waits; in REPLICATE it
pipelines appends optimistically, up to `max_inflight_msgs` unacknowledged;
in SNAPSHOT it sends nothing until the snapshot is reported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from raft.core import quorum
from raft.core.errors import RaftInvariantError
from raft.core.types import ConfState


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded FIFO of the last indexes of append messages in flight.

    A plain list, made on the first add and dropped once emptied: most
    groups are idle, and each has one of these per peer (an empty deque
    costs 624 bytes; issue #20). It holds at most ``size`` indexes, so
    freeing from the front moves few."""

    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: list[int] | None = None

    def add(self, index: int) -> None:
        if self.full():
            raise RaftInvariantError("cannot add into a full inflights")
        if self._q is None:
            self._q = [index]
        else:
            self._q.append(index)

    def free_le(self, index: int) -> None:
        q = self._q
        if not q:
            return
        n = 0
        for i in q:
            if i > index:
                break
            n += 1
        if n == len(q):
            self._q = None
        elif n:
            del q[:n]

    def free_first_one(self) -> None:
        q = self._q
        if q:
            if len(q) == 1:
                self._q = None
            else:
                del q[0]

    def full(self) -> bool:
        return self._q is not None and len(self._q) >= self.size

    def count(self) -> int:
        return len(self._q) if self._q is not None else 0

    def reset(self) -> None:
        self._q = None


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    pending_snapshot: int = 0
    recent_active: bool = False
    probe_sent: bool = False
    is_learner: bool = False

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """An append up to n was acknowledged. Returns whether match moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at index `rejected` was refused; the follower's log may
        match up to `match_hint`. Returns False for a stale rejection."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, n_entries: int) -> None:
        """Book-keeping after sending an append carrying n_entries."""
        if self.state == ProgressState.REPLICATE:
            if n_entries:
                self.next += n_entries
                self.inflights.add(self.next - 1)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True
        else:
            raise RaftInvariantError(f"sending append in unhandled state {self.state.name}")

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


@dataclass(slots=True)
class ProgressTracker:
    max_inflight: int
    progress: dict[int, Progress] = field(default_factory=dict)
    votes: dict[int, bool] = field(default_factory=dict)

    def voters(self) -> list[int]:
        return sorted(i for i, p in self.progress.items() if not p.is_learner)

    def learners(self) -> list[int]:
        return sorted(i for i, p in self.progress.items() if p.is_learner)

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(self.voters()), learners=tuple(self.learners()))

    def has(self, node_id: int) -> bool:
        return node_id in self.progress

    def is_singleton(self) -> bool:
        return len(self.voters()) == 1

    def init_progress(self, node_id: int, *, match: int, next_: int, is_learner: bool, active: bool) -> None:
        self.progress[node_id] = Progress(
            match=match,
            next=next_,
            inflights=Inflights(self.max_inflight),
            is_learner=is_learner,
            recent_active=active,
        )

    def committed(self) -> int:
        return quorum.committed_index(self.voters(), {i: p.match for i, p in self.progress.items()})

    def quorum_active(self) -> bool:
        votes = {i: p.recent_active for i, p in self.progress.items() if not p.is_learner}
        return quorum.vote_result(self.voters(), votes) == quorum.VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, quorum.VoteResult]:
        voters = self.voters()
        granted = sum(1 for v in voters if self.votes.get(v) is True)
        rejected = sum(1 for v in voters if self.votes.get(v) is False)
        return granted, rejected, quorum.vote_result(voters, self.votes)
