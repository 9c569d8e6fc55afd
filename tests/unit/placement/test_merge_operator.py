"""Merging shards on placement's side: the MERGE operator's steps and their
confirmation (placement/operators.py), the scheduler's merge of small
shards with hysteresis against splitting (placement/scheduler.py), and the
map change a merge's report makes (placement/state.py)."""

from __future__ import annotations

import dataclasses

from placement.operators import (
    CommitMerge,
    Operator,
    OperatorKind,
    OperatorState,
    OperatorTable,
    PrepareMerge,
    merge_steps,
    move_steps,
    step_done,
)
from placement.convert import map_to_pb
from placement.scheduler import SchedulerConfig, ShardLoad, Stats, next_shard_id, schedule
from placement.commands import ReportOutcome, ReportShard
from placement.model import Epoch, Node, NodeKind, NodeState, Replica, Shard
from placement.state import PlacementState

NOW = 1000.0


def shard(sid: int, slots: tuple[tuple[int, int], ...], nodes: tuple[int, ...], epoch: Epoch = Epoch(), leader: int = 0) -> Shard:
    return Shard(sid, slots, tuple(Replica(n) for n in nodes), epoch, leader or nodes[0], 1)


def state(*shards: Shard, nodes: tuple[int, ...] = (1, 2, 3, 4)) -> PlacementState:
    st = PlacementState(cluster_id=7, slot_count=64)
    for n in nodes:
        st.nodes[n] = Node(n, NodeKind.STORE, f"h:{n}")
    for s in shards:
        st.shards[s.shard_id] = s
    st.max_shard_id = max(st.shards, default=0)  # as applying their reports would
    return st


# ------------------------------------------------------------------- steps


def test_merge_steps_of_co_located_shards_are_freeze_then_commit() -> None:
    a, b = shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (3, 2, 1))
    assert merge_steps(b, a) == (PrepareMerge(1), CommitMerge(2, 1))


def test_merge_steps_move_the_source_onto_the_targets_nodes_first() -> None:
    a, b = shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (2, 4, 5))
    assert merge_steps(b, a) == (*move_steps(4, 1), *move_steps(5, 3), PrepareMerge(1), CommitMerge(2, 1))


def test_merge_steps_refuse_different_replica_counts() -> None:
    a, b = shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2))
    why = merge_steps(b, a)
    assert isinstance(why, str) and "move them onto the same nodes first" in why


def test_prepare_merge_is_done_only_when_every_replica_reported_the_freeze() -> None:
    b = shard(2, ((32, 64),), (1, 2, 3))
    step = PrepareMerge(1)
    assert not step_done(step, b)
    assert not step_done(step, b, {2: {1: 1, 2: 1}})  # node 3 has not applied it yet
    assert not step_done(step, b, {2: {1: 1, 2: 1, 3: 9}})  # frozen for another shard
    assert step_done(step, b, {2: {1: 1, 2: 1, 3: 1}})
    assert not step_done(CommitMerge(2, 1), b, {2: {1: 1, 2: 1, 3: 1}})


def test_table_runs_a_merge_to_success_when_the_source_leaves_the_map() -> None:
    a, b = shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3))
    t = OperatorTable()
    op = t.add(Operator(0, OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)), NOW, 60.0), NOW)
    assert op is not None and op.shards() == {1, 2} and op.executing_shard() == 2
    # both shards are busy: no other operator on the target either
    assert t.add(Operator(0, OperatorKind.SPLIT, 1, (), NOW, 60.0), NOW) is None
    shards = {1: a, 2: b}
    t.confirm(shards, NOW + 1, {2: {1: 1, 2: 1}})
    assert t.running[op.id].step_index == 0
    t.confirm(shards, NOW + 2, {2: {1: 1, 2: 1, 3: 1}})
    cur = t.running[op.id]
    assert cur.step_index == 1 and cur.executing_shard() == 1  # the target's leader commits
    t.confirm(shards, NOW + 3, {2: {1: 1, 2: 1, 3: 1}})
    assert op.id in t.running
    merged = {1: dataclasses.replace(a, slots=((0, 64),), epoch=Epoch(1, 2))}
    ended = t.confirm(merged, NOW + 4)
    assert [o.id for o in ended] == [op.id]
    assert t.finished[-1].state == OperatorState.SUCCESS


def test_table_a_merge_whose_target_vanished_is_cancelled() -> None:
    t = OperatorTable()
    op = t.add(Operator(0, OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)), NOW, 60.0), NOW)
    assert op is not None
    t.confirm({}, NOW + 1)
    assert t.finished[-1].state == OperatorState.CANCELLED


# ---------------------------------------------------------------- scheduler


def loads(**by_shard: tuple[int, int]) -> dict[int, ShardLoad]:
    return {int(k[1:]): ShardLoad(size, n) for k, (size, n) in by_shard.items()}


MERGE_CFG = SchedulerConfig(replicas=3, balance=False, merge_keys=100, split_keys=1000)


def test_scheduler_merges_two_small_adjacent_co_located_shards() -> None:
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    ops = schedule(st, Stats(last_heard={1: NOW, 2: NOW, 3: NOW}, shards=loads(s1=(10, 5), s2=(10, 5))), NOW, MERGE_CFG)
    assert [(o.kind, o.shard_id, o.steps) for o in ops] == [(OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)))]


def test_scheduler_merge_is_off_by_default() -> None:
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    cfg = SchedulerConfig(replicas=3, balance=False)
    assert schedule(st, Stats(last_heard={1: NOW, 2: NOW, 3: NOW}, shards=loads(s1=(0, 0), s2=(0, 0))), NOW, cfg) == []


def test_scheduler_does_not_merge_what_would_split_again() -> None:
    """Hysteresis: each below the merge threshold, but together at half the
    split threshold or more: no merge."""
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    cfg = dataclasses.replace(MERGE_CFG, merge_keys=400, split_keys=1000)
    heard = {1: NOW, 2: NOW, 3: NOW}
    assert schedule(st, Stats(last_heard=heard, shards=loads(s1=(0, 300), s2=(0, 250))), NOW, cfg) == []
    assert len(schedule(st, Stats(last_heard=heard, shards=loads(s1=(0, 200), s2=(0, 250))), NOW, cfg)) == 1


def test_scheduler_does_not_merge_shards_on_different_nodes_or_not_adjacent() -> None:
    heard = {n: NOW for n in (1, 2, 3, 4)}
    apart = state(shard(1, ((0, 16),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), shard(3, ((16, 32),), (2, 3, 4)))
    ops = schedule(apart, Stats(last_heard=heard, shards=loads(s1=(0, 1), s2=(0, 1), s3=(0, 1))), NOW, MERGE_CFG)
    assert ops == []


def test_scheduler_does_not_merge_a_busy_shard() -> None:
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    running = (Operator(9, OperatorKind.TRANSFER_LEADER, 1, (), NOW, 60.0),)
    ops = schedule(st, Stats(last_heard={1: NOW, 2: NOW, 3: NOW}, shards=loads(s1=(0, 1), s2=(0, 1)), running=running), NOW, MERGE_CFG)
    assert ops == []


# -------------------------------------------------------------------- the map


def test_the_targets_report_of_the_merged_slots_removes_the_source() -> None:
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)))
    v = st.map_version
    merged = shard(1, ((0, 64),), (1, 2, 3), Epoch(1, 2))
    out = st.apply(ReportShard(merged))
    assert out.result.outcome == ReportOutcome.ACCEPTED  # type: ignore[attr-defined]
    assert set(st.shards) == {1} and st.shards[1].slots == ((0, 64),)
    assert out.change is not None and out.change.map_version == v + 1 and out.change.removed_shards == (2,)
    # the source is retired for good: in the map stores read, and across a reload
    assert st.retired == {2} and list(map_to_pb(st).retired_shards) == [2]
    assert PlacementState.load(st.encode_map(), []).retired == {2}
    assert PlacementState.from_snapshot(st.snapshot()).retired == {2}
    # the frozen source's late report is refused: its slots are taken
    late = st.apply(ReportShard(shard(2, ((32, 64),), (1, 2, 3), Epoch(1, 2))))
    assert late.result.outcome == ReportOutcome.SLOT_CONFLICT  # type: ignore[attr-defined]


def test_a_report_taking_part_of_another_shards_slots_is_still_a_conflict() -> None:
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)))
    out = st.apply(ReportShard(shard(1, ((0, 48),), (1, 2, 3), Epoch(1, 2))))
    assert out.result.outcome == ReportOutcome.SLOT_CONFLICT  # type: ignore[attr-defined]
    assert set(st.shards) == {1, 2}


def test_a_merge_timed_out_at_its_commit_says_how_to_finish_it() -> None:
    a, b = shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3))
    t = OperatorTable()
    op = t.add(Operator(0, OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)), NOW, 60.0), NOW)
    assert op is not None
    t.confirm({1: a, 2: b}, NOW + 1, {2: {1: 1, 2: 1, 3: 1}})
    t.confirm({1: a, 2: b}, NOW + 100)
    done = t.finished[-1]
    assert done.state == OperatorState.TIMEOUT and "shard 2 stays frozen: merge it into shard 1 again" in done.note
    # started again, the freeze is confirmed at once and the commit is next
    again = t.add(Operator(0, OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)), NOW + 101, 60.0), NOW + 101)
    assert again is not None
    t.confirm({1: a, 2: b}, NOW + 102, {2: {1: 1, 2: 1, 3: 1}})
    assert t.running[again.id].current == CommitMerge(2, 1)


# ------------------------------------------------ finishing an abandoned merge


def test_scheduler_finishes_a_frozen_merge_no_operator_works_on() -> None:
    """Shard 2 reports a freeze for a merge into 1 but no operator runs (it
    timed out, or a new placement leader forgot it): merge it again, even
    with merging off, before anything else (a frozen shard serves nothing)."""
    st = state(shard(1, ((0, 32),), (1, 2, 3)), shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    heard = {1: NOW, 2: NOW, 3: NOW}
    frozen = {2: {1: 1, 2: 1, 3: 1}}
    cfg = SchedulerConfig(replicas=3, balance=False)
    ops = schedule(st, Stats(last_heard=heard, frozen=frozen), NOW, cfg)
    assert [(o.kind, o.shard_id, o.steps) for o in ops] == [(OperatorKind.MERGE, 2, (PrepareMerge(1), CommitMerge(2, 1)))]
    # Not while an operator works on either shard, nor when the target left.
    running = (Operator(9, OperatorKind.TRANSFER_LEADER, 1, (), NOW, 60.0),)
    assert schedule(st, Stats(last_heard=heard, frozen=frozen, running=running), NOW, cfg) == []
    alone = state(shard(2, ((32, 64),), (1, 2, 3)), nodes=(1, 2, 3))
    assert schedule(alone, Stats(last_heard=heard, frozen=frozen), NOW, cfg) == []
    # Nor by moving the replicas of a frozen shard.
    moved = state(shard(1, ((0, 32),), (1, 2, 4)), shard(2, ((32, 64),), (1, 2, 3)))
    assert [o for o in schedule(moved, Stats(last_heard={**heard, 4: NOW}, frozen=frozen), NOW, cfg) if o.kind == OperatorKind.MERGE] == []


def test_a_merged_shards_id_is_never_given_to_a_new_shard() -> None:
    """Shard 4 merged into 3: the next split must not create a new shard 4
    (its old replicas left tombstones on the stores, and stray messages of
    its Raft group may still be in flight). Also across a snapshot."""
    st = state(*(shard(i, ((16 * (i - 1), 16 * i),), (1, 2, 3)) for i in (1, 2, 3, 4)), nodes=(1, 2, 3))
    out = st.apply(ReportShard(shard(3, ((32, 64),), (1, 2, 3), Epoch(1, 2))))
    assert out.result.outcome == ReportOutcome.ACCEPTED  # type: ignore[attr-defined]
    assert set(st.shards) == {1, 2, 3}
    assert next_shard_id(st, []) == 5
    assert next_shard_id(PlacementState.from_snapshot(st.snapshot()), []) == 5
