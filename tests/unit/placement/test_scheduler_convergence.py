"""Leader balance that counts running transfers, suspect nodes, and the
scheduler applied to its own output (placement/scheduler.py,
placement/rebalancer.py; issue #13: leader balancing ping-ponged, and moved
leadership onto a store that had died)."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from flotillapb import placement_pb2 as ppb
from placement.operators import (
    AddLearner,
    Operator,
    OperatorKind,
    OperatorState,
    Promote,
    RemoveReplica,
    TransferLeader,
    move_steps,
    project,
    step_node,
)
from placement.rebalancer import Rebalancer
from placement.scheduler import SchedulerConfig, Stats, live_nodes, schedule
from placement.config import PlacementConfig
from placement.model import Epoch, Node, NodeKind, NodeState, Replica, Shard
from placement.shardtable import ShardTable
from placement.state import PlacementState
from raft.runtime.clock import FakeClock
from tests.unit.placement.test_scheduler import NOW, heard, make_state, summary

DEFAULT = SchedulerConfig()
CFG1 = SchedulerConfig(max_ops=10, max_ops_per_node=1)
SUSPECT = NOW - 5.0  # unheard for 5 s: suspect (suspect_after 3 s), not down (down_after 30 s)


def leaders_of(st: PlacementState, running: tuple[Operator, ...] | list[Operator] = ()) -> dict[int, int]:
    """node -> shards it leads once the given operators' transfers are done."""
    lead = {sid: s.leader_node_id for sid, s in st.shards.items()}
    for op in running:
        for step in op.steps[op.step_index :]:
            if isinstance(step, TransferLeader):
                lead[op.shard_id] = step.node_id
    return {n: sum(v == n for v in lead.values()) for n in st.nodes}


def transfer(sid: int, to: int) -> Operator:
    return Operator(1, OperatorKind.BALANCE_LEADER, sid, (TransferLeader(to),), NOW - 0.5, 60)


# ------------------------------------------------- running transfers (the overshoot)


def test_running_transfer_counts_2_2_0() -> None:
    """2/2/0 (ctl transfer-leader made it): a transfer 1 -> 3 is running and
    the map does not show it yet. The next round must not move a second
    shard off node 1 (counting the map alone did: 0/2/2, then 2/0/2, ...)."""
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 1), 3: ((1, 2, 3), 2), 4: ((1, 2, 3), 2)})
    ops = schedule(st, Stats(last_heard=heard(1, 2, 3), running=(transfer(1, 3),)), NOW, DEFAULT)
    assert [op for op in ops if op.kind == OperatorKind.BALANCE_LEADER] == []


def test_running_transfer_counts_4_0_0() -> None:
    """4/0/0 with a transfer 1 -> 2 running: one more shard leaves node 1,
    for node 3 (2/1/1 once both are done), not two."""
    st = make_state({1: "", 2: "", 3: ""}, {i: ((1, 2, 3), 1) for i in range(1, 5)})
    running = (transfer(1, 2),)
    ops = schedule(st, Stats(last_heard=heard(1, 2, 3), running=running), NOW, DEFAULT)
    assert summary(ops) == [("balance-leader", 2, (TransferLeader(3),))]
    assert leaders_of(st, (*running, *ops)) == {1: 2, 2: 1, 3: 1}


def test_a_lagging_map_gets_one_transfer() -> None:
    """2/2/0, rounds every 0.5 s while the map shows a transfer only a few
    rounds after it started (the new leader's next heartbeat): one transfer
    in all, and the counts end 1/2/1."""
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 1), 3: ((1, 2, 3), 2), 4: ((1, 2, 3), 2)})
    running: dict[int, tuple[Operator, int]] = {}  # shard -> (operator, round the map shows it)
    started = []
    for rnd in range(40):
        for sid, (op, shows) in list(running.items()):
            if rnd >= shows:
                (step,) = op.steps
                assert isinstance(step, TransferLeader)
                st.shards[sid] = dataclasses.replace(st.shards[sid], leader_node_id=step.node_id)
                del running[sid]  # the table confirms it from the map
        ops = schedule(st, Stats(last_heard=heard(1, 2, 3), running=tuple(op for op, _ in running.values())), NOW + rnd / 2, DEFAULT)
        for op in ops:
            running[op.shard_id] = (op, rnd + 3)
            started.append(op)
    assert len(started) == 1 and not running
    assert leaders_of(st) == {1: 1, 2: 2, 3: 1}


def test_leader_balance_waits_for_a_shard_between_leaders() -> None:
    """A shard with no leader in the map (electing) whose voters are live:
    the counts are not known, so no transfer this round."""
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 1), 3: ((1, 2, 3), 0), 4: ((1, 2, 3), 2)})
    assert schedule(st, Stats(last_heard=heard(1, 2, 3)), NOW, DEFAULT) == []
    st.shards[3] = dataclasses.replace(st.shards[3], leader_node_id=1)
    assert summary(schedule(st, Stats(last_heard=heard(1, 2, 3)), NOW, DEFAULT)) == [("balance-leader", 1, (TransferLeader(3),))]


# ------------------------------------------------------------------ suspect nodes


def test_no_leadership_onto_a_dead_store_before_down_after() -> None:
    """Store 3 died 5 s ago (still UP: down_after is 30 s) and the survivors
    elected new leaders: 3/3/0. It must not be given leadership (two at once,
    before); the live nodes are balanced, so nothing at all."""
    st = make_state({1: "", 2: "", 3: ""}, {i: ((1, 2, 3), 1 + i % 2) for i in range(1, 7)})
    stats = Stats(last_heard=heard(1, 2) | {3: SUSPECT})
    assert schedule(st, stats, NOW, DEFAULT) == []
    # heard again: it gets its share (by 2 transfers, spread 3 -> 1)
    assert [op.steps for op in schedule(st, Stats(last_heard=heard(1, 2, 3)), NOW, DEFAULT)] == [(TransferLeader(3),), (TransferLeader(3),)]


def test_leader_balance_among_live_nodes_only() -> None:
    """Leaders 3/1/0 with node 3 suspect: a transfer 1 -> 2, not 1 -> 3."""
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 1), 3: ((1, 2, 3), 1), 4: ((1, 2, 3), 2)})
    ops = schedule(st, Stats(last_heard=heard(1, 2) | {3: SUSPECT}), NOW, DEFAULT)
    assert summary(ops) == [("balance-leader", 1, (TransferLeader(2),))]


def test_suspect_after_is_at_most_down_after() -> None:
    """A test cluster's down_after of 2 s: unheard for 2.5 s is suspect even
    though suspect_after_s is 3."""
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 1), 3: ((1, 2, 3), 1), 4: ((1, 2, 3), 2)})
    cfg = dataclasses.replace(DEFAULT, down_after_s=2.0)
    assert live_nodes(st, heard(1, 2) | {3: NOW - 2.5}, NOW, cfg) == {1, 2}
    assert live_nodes(st, heard(1, 2) | {3: NOW - 2.5}, NOW, DEFAULT) == {1, 2, 3}
    assert live_nodes(st, heard(1, 2), NOW, DEFAULT) == {1, 2}  # never heard
    ops = schedule(st, Stats(last_heard=heard(1, 2) | {3: NOW - 2.5}), NOW, cfg)
    assert all(step_node(s) != 3 for op in ops for s in op.steps)


def test_replica_balance_neither_to_nor_from_a_suspect_node() -> None:
    st = make_state({1: "", 2: "", 3: "", 4: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2, 3), 2), 3: ((1, 2, 3), 3), 4: ((1, 2, 3), 1)})
    # the new node 4 is suspect: nothing moves to it
    assert schedule(st, Stats(last_heard=heard(1, 2, 3) | {4: SUSPECT}), NOW, CFG1) == []
    # node 1 (the lowest id of the most loaded) is suspect: the move to node 4 comes from node 2
    assert summary(schedule(st, Stats(last_heard=heard(2, 3, 4) | {1: SUSPECT}), NOW, CFG1)) == [("balance-replica", 1, move_steps(2, 4))]


def test_repair_and_new_voters_never_go_to_a_suspect_node() -> None:
    down = NodeState.DOWN
    st = make_state({1: "", 2: "", 3: ("", down), 4: "", 5: ""}, {1: ((1, 2, 3), 1), 2: ((1, 2), 1)})
    last = heard(1, 2, 5) | {3: NOW - 100, 4: SUSPECT}
    ops = schedule(st, Stats(last_heard=last), NOW, dataclasses.replace(CFG1, balance=False))
    assert summary(ops) == [("repair", 1, move_steps(3, 5))]  # node 4 would be first (lower id) if live
    ops = schedule(st, Stats(last_heard=last | {5: SUSPECT}), NOW, dataclasses.replace(CFG1, balance=False))
    assert ops == []


def test_drain_and_zones_never_go_to_a_suspect_node() -> None:
    draining = ("", NodeState.DRAINING)
    st = make_state({1: "", 2: "", 3: draining, 4: ""}, {1: ((1, 2, 3), 3)})
    ops = schedule(st, Stats(last_heard=heard(2, 3, 4) | {1: SUSPECT}), NOW, CFG1)
    assert summary(ops) == [("drain", 1, move_steps(3, 4))]
    st = make_state({1: "", 2: "", 3: draining}, {1: ((1, 2, 3), 3)})
    ops = schedule(st, Stats(last_heard=heard(2, 3) | {1: SUSPECT}), NOW, CFG1)
    assert summary(ops) == [("drain", 1, (TransferLeader(2),))]  # node 1 would be first if live
    st = make_state({1: "a", 2: "a", 3: "b", 4: "c"}, {1: ((1, 2, 3), 1)})
    assert schedule(st, Stats(last_heard=heard(1, 2, 3) | {4: SUSPECT}), NOW, CFG1) == []


# ------------------------------------------------ the rebalancer and suspect nodes


def rebalancer(st: PlacementState, last_heard: dict[int, float]) -> Rebalancer:
    clock = FakeClock(NOW)
    server = SimpleNamespace(state=st, heard=last_heard, ready_at=0.0, clock=clock, shard_table=ShardTable(), node_id=1)
    return Rebalancer(server, PlacementConfig().scheduler())  # type: ignore[arg-type]


def steps(rb: Rebalancer, node_id: int, *led: int) -> list[ppb.OperatorStep]:
    """The steps for node_id's heartbeat, its figures saying it leads `led`."""
    rb.s.shard_table.merge(ppb.StoreHeartbeatRequest(node_id=node_id, shards=[ppb.ShardStats(shard_id=s, is_leader=True) for s in led]))
    return rb.steps_for(node_id)


def test_rebalancer_cancels_a_transfer_to_a_suspect_node() -> None:
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1)})
    rb = rebalancer(st, heard(1, 2, 3))
    op = rb.table.add(transfer(1, 3), NOW)
    assert op is not None
    assert [s.node_id for s in steps(rb, 1, 1)] == [3]
    rb.s.heard[3] = SUSPECT  # type: ignore[attr-defined]
    assert steps(rb, 1, 1) == []
    rb.confirm(NOW)
    assert not rb.table.running
    assert rb.table.finished[-1].state == OperatorState.CANCELLED and "suspect" in rb.table.finished[-1].note


def test_rebalancer_withholds_a_new_replica_on_a_suspect_node() -> None:
    """AddLearner / Promote aimed at a suspect node wait (not cancelled)."""
    st = make_state({1: "", 2: "", 3: "", 4: ""}, {1: ((1, 2, 3), 1)})
    rb = rebalancer(st, heard(1, 2, 3) | {4: SUSPECT})
    assert rb.table.add(Operator(0, OperatorKind.MOVE, 1, move_steps(3, 4), NOW, 60), NOW) is not None
    assert steps(rb, 1, 1) == []
    rb.confirm(NOW)
    assert len(rb.table.running) == 1
    rb.s.heard[4] = NOW  # type: ignore[attr-defined]
    (step,) = steps(rb, 1, 1)
    assert step.kind == ppb.ADD_LEARNER and step.node_id == 4


def test_rebalancer_removing_the_leader_hands_leadership_to_a_live_voter() -> None:
    st = make_state({1: "", 2: "", 3: ""}, {1: ((1, 2, 3), 1)})
    rb = rebalancer(st, heard(1, 3) | {2: SUSPECT})
    assert rb.table.add(Operator(0, OperatorKind.MOVE, 1, (RemoveReplica(1),), NOW, 60), NOW) is not None
    (step,) = steps(rb, 1, 1)
    assert step.kind == ppb.TRANSFER_LEADER and step.node_id == 3
    rb.s.heard[3] = SUSPECT  # type: ignore[attr-defined]
    assert steps(rb, 1, 1) == []


def test_an_idle_rebalancer_skips_the_scheduler_until_an_input_moves() -> None:
    """A round with the inputs of the last round that found nothing finds
    nothing again without scheduling; a node dying (time passing, no map
    change) or new figures are inputs that move."""
    st = make_state({1: "", 2: "", 3: ("", NodeState.DOWN), 4: ""}, {1: ((1, 2, 3), 1)})
    rb = rebalancer(st, heard(1, 2, 3, 4))
    asyncio.run(rb.round())
    assert not rb.table.running and rb._idle_inputs is not None  # node 3 is down, not dead yet
    idle = rb._idle_inputs
    rb.s.clock.advance(1.0)  # type: ignore[attr-defined]
    rb.s.heard.update(heard(1, 2, 4, at=NOW + 1))  # type: ignore[attr-defined]
    asyncio.run(rb.round())
    assert rb._idle_inputs is idle and not rb.table.running
    rb.s.heard[3] = NOW - 100  # type: ignore[attr-defined]  # unheard past down_after: dead
    rb.s.clock.advance(1.0)  # type: ignore[attr-defined]
    rb.s.heard.update(heard(1, 2, 4, at=NOW + 2))  # type: ignore[attr-defined]
    asyncio.run(rb.round())
    assert [(op.kind, op.steps) for op in rb.table.running.values()] == [(OperatorKind.REPAIR, move_steps(3, 4))]


# ------------------------------------------------------- the scheduler on its own output

# A node's condition: live, suspect (UP, unheard for 5 s), down and dead
# (unheard past down_after), down but not yet dead, draining, removed.
CONDITIONS = ["live", "live", "live", "suspect", "dead", "down", "draining", "removed"]
HEARD = {"live": NOW, "suspect": SUSPECT, "dead": NOW - 100, "down": NOW - 10, "draining": NOW, "removed": NOW - 100}
STATE = {"live": NodeState.UP, "suspect": NodeState.UP, "dead": NodeState.DOWN, "down": NodeState.DOWN, "draining": NodeState.DRAINING, "removed": NodeState.REMOVED}


@hs.composite
def clusters(draw: hs.DrawFn) -> tuple[PlacementState, dict[int, float], list[Operator], SchedulerConfig]:
    n = draw(hs.integers(2, 6))
    cond = {nid: draw(hs.sampled_from(CONDITIONS)) for nid in range(1, n + 1)}
    zones = draw(hs.sampled_from([("",), ("a", "b"), ("a", "b", "c")]))
    st = PlacementState(cluster_id=7, slot_count=1024)
    for nid, c in cond.items():
        z = draw(hs.sampled_from(zones))
        st.nodes[nid] = Node(nid, NodeKind.STORE, f"h:{nid}", (("zone", z),) if z else (), STATE[c])
    shards = draw(hs.integers(1, 20))
    nodes = sorted(cond)
    running: list[Operator] = []
    for sid in range(1, shards + 1):
        reps = draw(hs.lists(hs.sampled_from(nodes), min_size=1, max_size=min(n, 4), unique=True))
        learners = set(draw(hs.lists(hs.sampled_from(reps), max_size=1))) if len(reps) > 1 else set()
        voters = [r for r in reps if r not in learners]
        leader = draw(hs.sampled_from([0, *voters]))
        lo, hi = (sid - 1) * 1024 // shards, sid * 1024 // shards
        st.shards[sid] = Shard(sid, ((lo, hi),), tuple(Replica(r, r in learners) for r in sorted(reps)), Epoch(), leader, 1)
        kind = draw(hs.sampled_from(["none", "none", "transfer", "move"]))
        others = [x for x in nodes if x not in reps]
        if kind == "transfer" and len(voters) > 1:
            running.append(Operator(len(running) + 1, OperatorKind.BALANCE_LEADER, sid, (TransferLeader(draw(hs.sampled_from(voters))),), NOW - 1, 60))
        elif kind == "move" and others:
            steps = move_steps(draw(hs.sampled_from(reps)), draw(hs.sampled_from(others)))
            running.append(Operator(len(running) + 1, OperatorKind.MOVE, sid, steps, NOW - 1, 60))
    cfg = SchedulerConfig(max_ops=draw(hs.integers(1, 6)), max_ops_per_node=draw(hs.integers(1, 3)))
    return st, {nid: HEARD[c] for nid, c in cond.items()}, running, cfg


def apply(st: PlacementState, ops: list[Operator], live: frozenset[int]) -> None:
    """Carry the operators out on the map, as shard leaders would and the
    map would then show: replicas change, a transfer moves the leader, a
    leader removing itself first hands leadership on (next_action's
    choice). An operator aiming a step at a node that is not live never
    completes (the rebalancer cancels or withholds it, then it times out)."""
    for op in ops:
        if any((n := step_node(s)) is not None and n not in live for s in op.steps):
            continue
        s = st.shards[op.shard_id]
        reps, leader = s.replicas, s.leader_node_id
        for step in op.steps:
            if isinstance(step, TransferLeader):
                leader = step.node_id
            elif isinstance(step, RemoveReplica) and step.node_id == leader:
                voters = sorted((r.node_id for r in reps if not r.learner and r.node_id != leader), key=lambda x: (x not in live, x))
                leader = voters[0] if voters else 0
            reps = project(reps, (step,))
        st.shards[op.shard_id] = dataclasses.replace(s, replicas=reps, leader_node_id=leader)


def elect(st: PlacementState, live: frozenset[int]) -> None:
    """A shard whose leader is gone elects the lowest live voter, if most
    of its voters live (the map shows it at the winner's next report)."""
    for sid, s in st.shards.items():
        voters = [r.node_id for r in s.replicas if not r.learner]
        if s.leader_node_id not in live or s.leader_node_id not in voters:
            alive = [v for v in voters if v in live]
            if 2 * len(alive) > len(voters):
                st.shards[sid] = dataclasses.replace(s, leader_node_id=min(alive))


def key(st: PlacementState, running: list[Operator]) -> tuple[object, ...]:
    return (
        tuple((sid, s.replicas, s.leader_node_id) for sid, s in sorted(st.shards.items())),
        tuple(sorted((op.shard_id, op.steps) for op in running)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_converges_and_never_returns_to_a_state(cluster) -> None:  # type: ignore[no-untyped-def]
    """Each round schedules against the map and the operators still
    running, whose effects the map shows only in the next round (the lag
    that made leader balance overshoot). The states never repeat, no step
    aims at a node that is not live, and the rounds end with nothing to do."""
    st, last_heard, running, cfg = cluster
    live = live_nodes(st, last_heard, NOW, cfg)
    seen = {key(st, running)}
    for _ in range(300):
        ops = schedule(st, Stats(last_heard=last_heard, running=tuple(running)), NOW, cfg)
        busy = {sid for op in running for sid in op.shards()}
        for op in ops:
            assert op.shard_id not in busy, op
            for s in op.steps:
                n = step_node(s)
                assert n is None or n in live, (op, live)
        apply(st, running, live)
        elect(st, live)
        running = ops
        if not running and not schedule(st, Stats(last_heard=last_heard), NOW, cfg):
            return
        k = key(st, running)
        assert k not in seen, "the scheduler returned to an earlier state"
        seen.add(k)
    raise AssertionError("no convergence in 300 rounds")
