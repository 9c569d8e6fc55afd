"""The placement leader's operator execution (DESIGN.md, "Rebalancing").

`Rebalancer` is wiring between the pure parts (placement/scheduler.py,
placement/operators.py) and the placement server: every duty round it
confirms the running operators against the map (steps advance as shard
leaders report new epochs), times out stalled ones, and asks the scheduler
for new ones. A store's heartbeat is answered with the next step of each
operator whose shard that store leads (`steps_for`); the store carries it
out in the shard's own Raft log and reports the new epoch.

A suspect node (up, but unheard for the scheduler's suspect_after: see
placement/scheduler.py) is handed no step aimed at it. A running operator
whose current step aims at one is treated by what stopping it costs:

- TransferLeader: cancelled at once, so the shard is free for the next
  round (nothing to undo; a transfer that lands anyway is a leadership
  change the map then reports);
- AddLearner, Promote (and the transfer a leader makes before removing
  itself, when its only other voters are suspect): withheld, not
  cancelled. The operator waits for the node to be heard again, and ends
  as before when the node is marked down (cancelled, a learner it added
  rolled back) or at its step timeout. Cancelling these over a heartbeat
  gap of a few seconds would throw away a learner's snapshot catch-up, or
  leave a learner whose conf change was in flight with no operator to
  remove it.

Operators live in the leader's memory only: a new leader starts with none,
and the scheduler re-derives from the map what is still needed. Admin
commands (Move, TransferLeader, Split, Merge, Cancel, Drain) start or stop
operators here after checking them against the map.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Protocol

import grpc

from flotillapb import placement_pb2 as ppb
from placement.commands import Command, SetNodeState
from placement.errors import OperatorError
from placement.model import NodeKind, NodeState, Shard
from placement.operators import (
    AddLearner,
    CommitMerge,
    Frozen,
    Operator,
    OperatorKind,
    OperatorTable,
    PrepareMerge,
    Promote,
    RemoveReplica,
    Split,
    Step,
    TransferLeader,
    merge_steps,
    move_steps,
    next_action,
    step_node,
)
from placement.scheduler import (
    SchedulerConfig,
    ShardLoad,
    Stats,
    live_nodes,
    middle_slot,
    next_shard_id,
    schedule,
    split_point_valid,
    suspect_after,
)
from placement.shardtable import ShardTable
from placement.state import PlacementState
from raft.runtime.clock import Clock

log = logging.getLogger(__name__)

MANUAL_TIMEOUT_S = 60.0


class RebalancerHost(Protocol):
    """What the rebalancer needs from the placement server (placement/server.py
    provides it; tests pass a namespace)."""

    node_id: int
    clock: Clock

    @property
    def state(self) -> PlacementState: ...

    @property
    def heard(self) -> Mapping[int, float]:
        """When each node was last heard by this leader (monotonic)."""
        ...

    @property
    def ready_at(self) -> float | None:
        """When this server became ready to lead; None while it is not."""
        ...

    @property
    def shard_table(self) -> ShardTable:
        """The shard figures of the nodes' heartbeats to this leader."""
        ...

    def require_leader(self) -> None: ...

    async def propose_ok(self, cmd: Command) -> object: ...


class Rebalancer:
    def __init__(self, server: RebalancerHost, config: SchedulerConfig | None = None, *, interval_s: float = 0.5) -> None:
        self.s = server
        self.cfg = config or SchedulerConfig()
        self.interval_s = interval_s
        self.table = OperatorTable()
        self._next_round = 0.0
        self._idle_inputs: tuple[object, ...] | None = None
        """The scheduler's inputs when it last found nothing to do."""
        self._loads: tuple[tuple[int, int, int], dict[int, ShardLoad]] | None = None
        """(the shard table's version, the map's version, the state's id) -> loads_of: kept while none moves."""

    # -- the duty round ----------------------------------------------------------------
    def reset(self) -> None:
        """Leadership lost: operators are the leader's memory."""
        if self.table.running:
            log.info("placement node=%d drops %d running operators (no longer leader)", self.s.node_id, len(self.table.running))
        self.table = OperatorTable()
        self._idle_inputs = None
        self._loads = None

    def heard(self, now: float) -> dict[int, float]:
        """When each node was last heard (a node not heard since this leader
        took over counts as heard then)."""
        ready = self.s.ready_at if self.s.ready_at is not None else now
        return {nid: self.s.heard.get(nid, ready) for nid in self.s.state.nodes}

    def live(self, now: float) -> frozenset[int]:
        """Store nodes that are up and not suspect (placement/scheduler.py's live_nodes)."""
        return live_nodes(self.s.state, self.heard(now), now, self.cfg)

    def suspects(self, now: float) -> list[int]:
        """UP store nodes unheard for longer than suspect_after (none unless ready to lead)."""
        if self.s.ready_at is None:
            return []
        live = self.live(now)
        return sorted(
            nid for nid, n in self.s.state.nodes.items() if n.kind == NodeKind.STORE and n.state == NodeState.UP and nid not in live
        )

    def stats(self, now: float) -> Stats:
        return Stats(last_heard=self.heard(now), shards=self.loads(), running=tuple(self.table.running.values()), frozen=self.frozen())

    def _inputs(self, now: float) -> tuple[object, ...]:
        """What the scheduler's answer depends on, besides the configuration:
        the map, the heartbeat figures, the running operators, and which
        nodes are live and which dead (the only use it makes of the time and
        of when nodes were heard; the time it stamps on operators aside)."""
        heard = self.heard(now)
        st = self.s.state
        dead = frozenset(
            nid for nid, n in st.nodes.items()
            if n.state == NodeState.DOWN and (h := heard.get(nid)) is not None and now - h > self.cfg.down_after_s
        )
        t = self.s.shard_table
        running = tuple((op.id, op.step_index, op.state) for op in self.table.running.values())
        return (id(st), st.map_version, id(t), t.version, running, live_nodes(st, heard, now, self.cfg), dead)

    def loads(self) -> dict[int, ShardLoad]:
        """loads_of the heartbeats' figures, built again only when they or the map changed."""
        t = self.s.shard_table
        key = (t.version, self.s.state.map_version, id(self.s.state))
        if self._loads is None or self._loads[0] != key:
            self._loads = (key, loads_of(t.leader_stats(), self.s.state.shards))
        return self._loads[1]

    def frozen(self) -> Frozen:
        """Which replicas reported a freeze for a merge, from the latest heartbeats."""
        return self.s.shard_table.frozen()

    def confirm(self, now: float) -> None:
        for op in self.table.confirm(self.s.state.shards, now, self.frozen()):
            log.info("placement node=%d operator %d (%s shard=%d) ended", self.s.node_id, op.id, op.kind.value, op.shard_id)
        # A step that needs a node that is no longer up cannot finish: cancel
        # now (rolling back a learner it added) rather than at the timeout.
        # A transfer to a suspect node is cancelled too (see the module docstring).
        live = self.live(now)
        for op in list(self.table.running.values()):
            step = op.current
            if isinstance(step, (AddLearner, Promote, TransferLeader)):
                node = self.s.state.nodes.get(step.node_id)
                why = ""
                if node is None or node.state != NodeState.UP:
                    why = f"node {step.node_id} is {node.state.name.lower() if node else 'gone'}"
                elif isinstance(step, TransferLeader) and step.node_id not in live:
                    why = f"node {step.node_id} is suspect (unheard for over {suspect_after(self.cfg):g}s)"
                if why:
                    log.info("placement node=%d operator %d (%s shard=%d) cancelled: %s", self.s.node_id, op.id, op.kind.value, op.shard_id, why)
                    self.table.cancel(op.id, now, shard=self.s.state.shards.get(op.shard_id), note=f"cancelled: {why}")

    async def round(self) -> None:
        now = self.s.clock.monotonic()
        self.confirm(now)
        if now < self._next_round:
            return
        self._next_round = now + self.interval_s
        # The scheduler is pure: with the same inputs it finds again the
        # nothing it found last round (an idle cluster's rounds cost no
        # walk over every shard).
        inputs = self._inputs(now)
        if inputs == self._idle_inputs:
            return
        ops = schedule(self.s.state, self.stats(now), now, self.cfg)
        self._idle_inputs = None if ops else inputs
        for op in ops:
            started = self.table.add(op, now)
            if started is not None:
                log.info("placement node=%d operator %d %s shard=%d: %s", self.s.node_id, started.id, started.kind.value, started.shard_id, started.note)

    # -- steps for store leaders ----------------------------------------------------------
    def steps_for(self, node_id: int) -> list[ppb.OperatorStep]:
        """The steps for the store node_id: of the running operators whose
        shard its heartbeats say it leads (work per operator, not per shard)."""
        if not self.table.running:
            return []
        # A merge's CommitMerge is carried out by its target's leader.
        by_shard = {op.executing_shard(): op for op in self.table.running.values()}
        led = [sid for sid in by_shard if self.s.shard_table.leads(node_id, sid)]
        if not led:
            return []
        live = self.live(self.s.clock.monotonic())
        out = []
        for sid in sorted(led):
            shard = self.s.state.shards.get(sid)
            if shard is None:
                continue
            step = next_action(by_shard[sid], dataclasses.replace(shard, leader_node_id=node_id), live)
            if step is None:
                continue
            node = step_node(step)
            if node is not None and node not in live:
                continue  # withheld while the node is suspect or not up (see the module docstring)
            out.append(step_to_pb(by_shard[sid].id, sid, step))
        return out

    # -- admin -------------------------------------------------------------------------
    def _shard(self, shard_id: int) -> Shard:
        shard = self.s.state.shards.get(shard_id)
        if shard is None:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"placement: shard {shard_id} is not in the map")
        return shard

    def _store_up(self, node_id: int) -> None:
        n = self.s.state.nodes.get(node_id)
        if n is None or n.kind != NodeKind.STORE:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"placement: store node {node_id} is not registered")
        if n.state != NodeState.UP:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"placement: node {node_id} is {n.state.name.lower()}, not up")

    def _start(self, kind: OperatorKind, shard_id: int, steps: tuple[Step, ...], note: str) -> Operator:
        self.s.require_leader()
        now = self.s.clock.monotonic()
        want = Operator(0, kind, shard_id, steps, now, MANUAL_TIMEOUT_S, note=note)
        op = self.table.add(want, now)
        if op is None:
            busy = next(o for o in self.table.running.values() if o.shards() & want.shards())
            sid = min(busy.shards() & want.shards())
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"placement: shard {sid} has operator {busy.id} running; cancel it first")
        log.info("placement node=%d operator %d %s shard=%d: %s", self.s.node_id, op.id, kind.value, shard_id, note)
        return op

    def move(self, shard_id: int, from_node: int, to_node: int) -> Operator:
        self.s.require_leader()
        shard = self._shard(shard_id)
        nodes = {r.node_id for r in shard.replicas}
        if from_node not in nodes:
            raise OperatorError(grpc.StatusCode.INVALID_ARGUMENT, f"placement: shard {shard_id} has no replica on node {from_node} (replicas: {sorted(nodes)})")
        if to_node in nodes:
            raise OperatorError(grpc.StatusCode.INVALID_ARGUMENT, f"placement: shard {shard_id} already has a replica on node {to_node}")
        self._store_up(to_node)
        return self._start(OperatorKind.MOVE, shard_id, move_steps(from_node, to_node), f"move shard {shard_id} from node {from_node} to node {to_node} (ctl)")

    def transfer_leader(self, shard_id: int, node_id: int) -> Operator:
        self.s.require_leader()
        shard = self._shard(shard_id)
        if not any(r.node_id == node_id and not r.learner for r in shard.replicas):
            raise OperatorError(grpc.StatusCode.INVALID_ARGUMENT, f"placement: node {node_id} is not a voter of shard {shard_id}")
        self._store_up(node_id)
        return self._start(OperatorKind.TRANSFER_LEADER, shard_id, (TransferLeader(node_id),), f"transfer leadership of shard {shard_id} to node {node_id} (ctl)")

    def split(self, shard_id: int, at_slot: int) -> Operator:
        self.s.require_leader()
        shard = self._shard(shard_id)
        at = at_slot or middle_slot(shard)
        if at is None or not split_point_valid(shard, at):
            raise OperatorError(grpc.StatusCode.INVALID_ARGUMENT, f"placement: slot {at_slot} does not divide shard {shard_id}'s slots {list(shard.slots)}")
        new_id = next_shard_id(self.s.state, [*self.table.running.values(), *self.table.finished])
        return self._start(OperatorKind.SPLIT, shard_id, (Split(new_id, at),), f"split shard {shard_id} at slot {at} into shard {new_id} (ctl)")

    def merge(self, target_id: int, source_id: int) -> Operator:
        """Merge shard source_id into shard target_id (any two shards: a
        shard owns a set of slot ranges, so they need not be adjacent).
        When their replicas are on different nodes, the source's replicas
        move onto the target's first."""
        self.s.require_leader()
        if target_id == source_id:
            raise OperatorError(grpc.StatusCode.INVALID_ARGUMENT, f"placement: cannot merge shard {target_id} into itself")
        target, source = self._shard(target_id), self._shard(source_id)
        steps = merge_steps(source, target)
        if isinstance(steps, str):
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"placement: {steps}")
        for s in steps:
            if isinstance(s, AddLearner):
                self._store_up(s.node_id)
        moves = len(steps) - 2
        how = f" after {moves // 3} replica move(s) onto shard {target_id}'s nodes" if moves else ""
        return self._start(OperatorKind.MERGE, source_id, steps, f"merge shard {source_id} into shard {target_id}{how} (ctl)")

    def cancel(self, op_id: int) -> Operator | None:
        self.s.require_leader()
        op = self.table.running.get(op_id)
        if op is None:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"placement: no running operator {op_id}")
        log.info("placement node=%d operator %d cancelled (ctl)", self.s.node_id, op_id)
        return self.table.cancel(op_id, self.s.clock.monotonic(), shard=self.s.state.shards.get(op.shard_id), note="cancelled by ctl")

    async def drain(self, node_id: int, undo: bool) -> NodeState:
        self.s.require_leader()
        n = self.s.state.nodes.get(node_id)
        if n is None or n.kind != NodeKind.STORE:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"placement: store node {node_id} is not registered")
        out = await self.s.propose_ok(SetNodeState(node_id, NodeState.UP if undo else NodeState.DRAINING))
        assert isinstance(out, NodeState)
        log.info("placement node=%d node %d is %s", self.s.node_id, node_id, out.name.lower())
        return out

    def list(self) -> list[ppb.OperatorInfo]:
        now = self.s.clock.monotonic()
        return [op_to_pb(op, now) for op in self.table.all()]


# ------------------------------------------------------------------- codec


_KIND = {
    AddLearner: ppb.ADD_LEARNER, Promote: ppb.PROMOTE, RemoveReplica: ppb.REMOVE_REPLICA, TransferLeader: ppb.TRANSFER_LEADER,
    Split: ppb.SPLIT, PrepareMerge: ppb.PREPARE_MERGE, CommitMerge: ppb.COMMIT_MERGE,
}


def step_to_pb(op_id: int, shard_id: int, step: Step) -> ppb.OperatorStep:
    """shard_id: the shard whose leader carries the step out (a
    CommitMerge: the target, whatever shard_id says)."""
    if isinstance(step, CommitMerge):
        shard_id = step.target_shard_id
    pb = ppb.OperatorStep(operator_id=op_id, shard_id=shard_id, kind=_KIND[type(step)])
    if isinstance(step, Split):
        pb.new_shard_id = step.new_shard_id
        pb.at_slot = step.at_slot
    elif isinstance(step, PrepareMerge):
        pb.other_shard_id = step.target_shard_id
    elif isinstance(step, CommitMerge):
        pb.other_shard_id = step.source_shard_id
    else:
        pb.node_id = step.node_id
    return pb


def op_to_pb(op: Operator, now: float) -> ppb.OperatorInfo:
    return ppb.OperatorInfo(
        id=op.id,
        kind=op.kind.value,
        shard_id=op.shard_id,
        steps=[step_to_pb(op.id, op.shard_id, s) for s in op.steps],
        step_index=op.step_index,
        state=op.state.value,
        age_s=max(0.0, now - op.created_at),
        note=op.note,
    )


def loads_of(leader_stats: Mapping[int, ppb.ShardStats], shards: Mapping[int, Shard] | None = None) -> dict[int, ShardLoad]:
    """Each shard's figures from its leader's heartbeats (ShardTable.
    leader_stats); none for a shard whose slots the map shows changed since
    (a split or merge after the heartbeat: figures of the whole shard would
    split a half again)."""
    out: dict[int, ShardLoad] = {}
    for sid, st in leader_stats.items():
        s = shards.get(sid) if shards is not None else None
        if s is not None and st.epoch.slot_version < s.epoch.slot_version:
            continue
        out[sid] = ShardLoad(st.size_bytes, st.key_count, st.write_rate)
    return out
