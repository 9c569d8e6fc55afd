"""Operators: what the scheduler decides should change in one shard (PURE).

An `Operator` is a short list of steps the shard's leader carries out in its
own Raft log, one at a time (DESIGN.md, "Rebalancing"):

    AddLearner(n)      conf change ADD_LEARNER n (the new replica catches up by snapshot)
    Promote(n)         conf change ADD_NODE n (learner -> voter)
    RemoveReplica(n)   conf change REMOVE_NODE n
    TransferLeader(n)  Raft leader transfer to n
    Split(new, slot)   the shard's slots >= slot go to shard `new` (same replicas)

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

from placement.state import Replica, Shard


class OperatorKind(enum.Enum):
    REPAIR = "repair"
    DRAIN = "drain"
    ZONE = "zone"
    BALANCE_REPLICA = "balance-replica"
    BALANCE_LEADER = "balance-leader"
    MOVE = "move"
    TRANSFER_LEADER = "transfer-leader"
    SPLIT = "split"
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


Step = AddLearner | Promote | RemoveReplica | TransferLeader | Split


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

    def nodes(self) -> frozenset[int]:
        """Nodes this operator adds to or removes from (the per-node rate limit counts them)."""
        return frozenset(s.node_id for s in self.steps if isinstance(s, (AddLearner, RemoveReplica, TransferLeader)))


def move_steps(from_node: int, to_node: int) -> tuple[Step, ...]:
    """Move a replica: add the new one as a learner, promote it, then remove the old one."""
    return (AddLearner(to_node), Promote(to_node), RemoveReplica(from_node))


def step_done(step: Step, shard: Shard) -> bool:
    """Does the map's view of the shard show this step's effect?"""
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


@dataclass(slots=True)
class OperatorTable:
    """The placement leader's running operators (one per shard at most)."""

    history_len: int = 50
    running: dict[int, Operator] = dataclasses.field(default_factory=dict)
    finished: deque[Operator] = dataclasses.field(default_factory=deque)
    _next_id: int = 1

    def busy_shards(self) -> frozenset[int]:
        return frozenset(op.shard_id for op in self.running.values())

    def add(self, op: Operator, now: float) -> Operator | None:
        """Start op (a new id is assigned); None if its shard has one running."""
        if op.shard_id in self.busy_shards():
            return None
        op = dataclasses.replace(op, id=self._next_id, step_started_at=now, state=OperatorState.RUNNING)
        self._next_id += 1
        self.running[op.id] = op
        return op

    def _finish(self, op: Operator, state: OperatorState, note: str = "") -> None:
        del self.running[op.id]
        self.finished.append(dataclasses.replace(op, state=state, note=note or op.note))
        while len(self.finished) > self.history_len:
            self.finished.popleft()

    def cancel(self, op_id: int, now: float, *, state: OperatorState = OperatorState.CANCELLED, shard: Shard | None = None, note: str = "") -> Operator | None:
        """Stop op_id. If it added a learner it did not promote, a ROLLBACK
        operator removing that learner replaces it (returned)."""
        op = self.running.get(op_id)
        if op is None:
            return None
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

    def confirm(self, shards: Mapping[int, Shard], now: float) -> list[Operator]:
        """Advance every operator past the steps the map confirms; finish the
        completed ones; time out the stalled ones (rolled back). Returns the
        operators that ended in this call."""
        ended: list[Operator] = []
        for op in list(self.running.values()):
            shard = shards.get(op.shard_id)
            if shard is None:
                self._finish(op, OperatorState.CANCELLED, "the shard left the map")
                ended.append(op)
                continue
            i = op.step_index
            while i < len(op.steps) and step_done(op.steps[i], shard):
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
