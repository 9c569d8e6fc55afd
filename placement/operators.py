"""Operators: what the scheduler decides should change in one shard (PURE).

An `Operator` is a short list of steps the shard's leader carries out in its
own Raft log, one at a time (DESIGN.md, "Rebalancing"):

    AddLearner(n)      conf change ADD_LEARNER n (the new replica catches up by snapshot)
    Promote(n)         conf change ADD_NODE n (learner -> voter)
    RemoveReplica(n)   conf change REMOVE_NODE n
    TransferLeader(n)  Raft leader transfer to n
    Split(new, slot)   the shard's slots >= slot go to shard `new` (same replicas)
    PrepareMerge(t)    the (source) shard freezes for a merge into shard t
    CommitMerge(s, t)  shard t takes over the frozen shard s (run by t's leader)

A MERGE operator belongs to its source shard and keeps both shards busy:
its steps are the moves that put the source's replicas on the target's
nodes (when they differ), then PrepareMerge, confirmed once every replica of
the source reported its freeze in a heartbeat (``frozen``: a replica that
has not applied it must not see the CommitMerge, see
shard/statemachine.py), then CommitMerge, confirmed when the source has
left the map (the target's report of the merged slots removes it).

Placement never assumes a step happened: a step is confirmed when the map
(what the shard leader reported, gated by the epoch) shows its effect
(`step_done`). `OperatorTable` holds the running operators of the placement
leader (memory only: a new leader starts with none, and the scheduler
re-derives what is still needed from the map), advances them as the map
confirms steps, times out a stalled one and rolls it back (a learner it
added and did not promote is removed again), and keeps a short history.

No clocks here: `now` is passed in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from placement.model import Replica, Shard


class OperatorKind(enum.Enum):
    REPAIR = "repair"
    DRAIN = "drain"
    ZONE = "zone"
    BALANCE_REPLICA = "balance-replica"
    BALANCE_LEADER = "balance-leader"
    MOVE = "move"
    TRANSFER_LEADER = "transfer-leader"
    SPLIT = "split"
    MERGE = "merge"
    ROLLBACK = "rollback"


class OperatorState(enum.Enum):
    RUNNING = "running"
    SUCCESS = "success"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class AddLearner:
    node_id: int


@dataclass(frozen=True, slots=True)
class Promote:
    node_id: int


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    node_id: int


@dataclass(frozen=True, slots=True)
class TransferLeader:
    node_id: int


@dataclass(frozen=True, slots=True)
class Split:
    new_shard_id: int
    at_slot: int


@dataclass(frozen=True, slots=True)
class PrepareMerge:
    target_shard_id: int


@dataclass(frozen=True, slots=True)
class CommitMerge:
    source_shard_id: int
    target_shard_id: int


Step = AddLearner | Promote | RemoveReplica | TransferLeader | Split | PrepareMerge | CommitMerge

Frozen = Mapping[int, Mapping[int, int]]
"""shard id -> node id -> the merge target that node's replica reported being frozen for."""


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    kind: OperatorKind
    shard_id: int
    steps: tuple[Step, ...]
    created_at: float
    timeout: float
    """Seconds one step may take (from when it became current) before the operator is cancelled."""
    step_index: int = 0
    step_started_at: float = 0.0
    state: OperatorState = OperatorState.RUNNING
    note: str = ""

    @property
    def current(self) -> Step | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None

    def shards(self) -> frozenset[int]:
        """Every shard this operator changes (a merge: its target too)."""
        return frozenset({self.shard_id, *(s.target_shard_id for s in self.steps if isinstance(s, (PrepareMerge, CommitMerge)))})

    def executing_shard(self) -> int:
        """The shard whose leader carries out the current step."""
        step = self.current
        return step.target_shard_id if isinstance(step, CommitMerge) else self.shard_id

    def nodes(self) -> frozenset[int]:
        """Nodes this operator adds to or removes from (the per-node rate limit counts them)."""
        return frozenset(s.node_id for s in self.steps if isinstance(s, (AddLearner, RemoveReplica, TransferLeader)))


def move_steps(from_node: int, to_node: int) -> tuple[Step, ...]:
    """Move a replica: add the new one as a learner, promote it, then remove the old one."""
    return (AddLearner(to_node), Promote(to_node), RemoveReplica(from_node))


def merge_steps(source: Shard, target: Shard) -> tuple[Step, ...] | str:
    """The steps merging source into target: first the moves that put the
    source's replicas on the target's nodes (each a move step of the
    source), then PrepareMerge and CommitMerge. A string: why it cannot be
    done (the replica sets differ in size or in learners)."""
    have = {r.node_id: r.learner for r in source.replicas}
    want = {r.node_id: r.learner for r in target.replicas}
    if len(have) != len(want):
        return f"shard {source.shard_id} has {len(have)} replicas and shard {target.shard_id} {len(want)}: move them onto the same nodes first"
    if any(have.values()) or any(want.values()):
        if have != want:
            return f"shards {source.shard_id} and {target.shard_id} have learners on different nodes: finish or cancel their operators first"
    steps: list[Step] = []
    for frm, to in zip(sorted(set(have) - set(want)), sorted(set(want) - set(have))):
        steps.extend(move_steps(frm, to))
    steps += [PrepareMerge(target.shard_id), CommitMerge(source.shard_id, target.shard_id)]
    return tuple(steps)


def step_done(step: Step, shard: Shard, frozen: Frozen | None = None) -> bool:
    """Does the map's view of the shard show this step's effect? (A
    PrepareMerge: every replica of the shard reported its freeze; a
    CommitMerge: never while the source is in the map.)"""
    if isinstance(step, PrepareMerge):
        reported = (frozen or {}).get(shard.shard_id, {})
        return bool(shard.replicas) and all(reported.get(r.node_id) == step.target_shard_id for r in shard.replicas)
    if isinstance(step, CommitMerge):
        return False
    role = {r.node_id: r.learner for r in shard.replicas}
    if isinstance(step, AddLearner):
        return step.node_id in role
    if isinstance(step, Promote):
        return role.get(step.node_id) is False
    if isinstance(step, RemoveReplica):
        return step.node_id not in role
    if isinstance(step, TransferLeader):
        return shard.leader_node_id == step.node_id
    if isinstance(step, Split):
        return not any(lo <= step.at_slot < hi for lo, hi in shard.slots)
    raise TypeError(step)


def project(replicas: Sequence[Replica], steps: Iterable[Step]) -> tuple[Replica, ...]:
    """The replica set after the given steps (the scheduler counts running operators as done)."""
    out = {r.node_id: r.learner for r in replicas}
    for s in steps:
        if isinstance(s, AddLearner):
            out.setdefault(s.node_id, True)
        elif isinstance(s, Promote):
            out[s.node_id] = False
        elif isinstance(s, RemoveReplica):
            out.pop(s.node_id, None)
    return tuple(Replica(n, le) for n, le in sorted(out.items()))


def project_leader(leader: int, steps: Iterable[Step]) -> int:
    """The shard's leader after the given steps (the scheduler counts running
    transfers as done): a TransferLeader's node; 0 (not known) once a step
    removes the leader's replica (the leader then hands leadership to a
    voter of its choosing, see `next_action`, and the map tells which)."""
    for s in steps:
        if isinstance(s, TransferLeader):
            leader = s.node_id
        elif isinstance(s, RemoveReplica) and s.node_id == leader:
            leader = 0
    return leader


def next_action(op: Operator, shard: Shard, up_nodes: Iterable[int] = ()) -> Step | None:
    """What the shard leader should do now for op. A RemoveReplica of the
    leader itself first moves leadership to another voter (preferring an up
    node), since a leader does not remove itself."""
    step = op.current
    if step is None:
        return None
    if isinstance(step, RemoveReplica) and step.node_id == shard.leader_node_id:
        up = set(up_nodes)
        voters = [r.node_id for r in shard.replicas if not r.learner and r.node_id != step.node_id]
        voters.sort(key=lambda n: (n not in up, n))
        return TransferLeader(voters[0]) if voters else None
    return step


def step_node(step: Step) -> int | None:
    """The node a step adds, promotes or gives leadership to (None: the step
    needs no node to answer: a removal, a split, a merge step)."""
    return step.node_id if isinstance(step, (AddLearner, Promote, TransferLeader)) else None


@dataclass(slots=True)
class OperatorTable:
    """The placement leader's running operators (one per shard at most)."""

    history_len: int = 50
    running: dict[int, Operator] = dataclasses.field(default_factory=dict)
    finished: deque[Operator] = dataclasses.field(default_factory=deque)
    _next_id: int = 1
    ended: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    """Operators ended by (kind, outcome), for the metrics page."""

    def busy_shards(self) -> frozenset[int]:
        return frozenset(sid for op in self.running.values() for sid in op.shards())

    def add(self, op: Operator, now: float) -> Operator | None:
        """Start op (a new id is assigned); None if one of its shards has one running."""
        if op.shards() & self.busy_shards():
            return None
        op = dataclasses.replace(op, id=self._next_id, step_started_at=now, state=OperatorState.RUNNING)
        self._next_id += 1
        self.running[op.id] = op
        return op

    def _finish(self, op: Operator, state: OperatorState, note: str = "") -> None:
        del self.running[op.id]
        key = (op.kind.value, state.value)
        self.ended[key] = self.ended.get(key, 0) + 1
        self.finished.append(dataclasses.replace(op, state=state, note=note or op.note))
        while len(self.finished) > self.history_len:
            self.finished.popleft()

    def cancel(self, op_id: int, now: float, *, state: OperatorState = OperatorState.CANCELLED, shard: Shard | None = None, note: str = "") -> Operator | None:
        """Stop op_id. If it added a learner it did not promote, a ROLLBACK
        operator removing that learner replaces it (returned). A merge
        stopped at its CommitMerge leaves its source frozen (there is no
        rollback of a freeze): the note says how to finish it."""
        op = self.running.get(op_id)
        if op is None:
            return None
        cur = op.current
        if isinstance(cur, CommitMerge):
            finish = f"shard {cur.source_shard_id} stays frozen: merge it into shard {cur.target_shard_id} again to finish"
            note = f"{note or op.note}; {finish}"
        self._finish(op, state, note)
        if shard is None:
            return None
        done = op.steps[: op.step_index]
        added = {s.node_id for s in done if isinstance(s, AddLearner)}
        promoted = {s.node_id for s in done if isinstance(s, Promote)}
        cur = op.current
        if isinstance(cur, AddLearner) and any(r.node_id == cur.node_id for r in shard.replicas):
            added.add(cur.node_id)
        learners = sorted(n for n in added - promoted if any(r.node_id == n and r.learner for r in shard.replicas))
        if not learners:
            return None
        rb = Operator(0, OperatorKind.ROLLBACK, op.shard_id, tuple(RemoveReplica(n) for n in learners), now, op.timeout, note=f"rolls back operator {op.id}")
        return self.add(rb, now)

    def confirm(self, shards: Mapping[int, Shard], now: float, frozen: Frozen | None = None) -> list[Operator]:
        """Advance every operator past the steps the map (and, for a merge's
        freeze, the replicas' reports) confirms; finish the completed ones;
        time out the stalled ones (rolled back). Returns the operators that
        ended in this call."""
        ended: list[Operator] = []
        for op in list(self.running.values()):
            shard = shards.get(op.shard_id)
            cur = op.current
            if shard is None and isinstance(cur, CommitMerge) and cur.target_shard_id in shards:
                # The source left the map: the target's report of its slots removed it.
                op = self.running[op.id] = dataclasses.replace(op, step_index=len(op.steps), step_started_at=now)
                self._finish(op, OperatorState.SUCCESS)
                ended.append(op)
                continue
            if shard is None:
                self._finish(op, OperatorState.CANCELLED, "the shard left the map")
                ended.append(op)
                continue
            i = op.step_index
            while i < len(op.steps) and step_done(op.steps[i], shard, frozen):
                i += 1
            if i != op.step_index:
                op = dataclasses.replace(op, step_index=i, step_started_at=now)
                self.running[op.id] = op
            if i == len(op.steps):
                self._finish(op, OperatorState.SUCCESS)
                ended.append(op)
            elif now - op.step_started_at > op.timeout:
                self.cancel(op.id, now, state=OperatorState.TIMEOUT, shard=shard, note=f"step {i} ({op.steps[i]}) timed out")
                ended.append(op)
        return ended

    def all(self) -> list[Operator]:
        return [*self.finished, *sorted(self.running.values(), key=lambda o: o.id)]
