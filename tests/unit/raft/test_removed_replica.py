"""Regression (issue #7, rebalancing): a replica moved away (the operator's
AddLearner, Promote, RemoveReplica steps) that missed its own removal comes
back and campaigns: the group keeps its leader and term and goes on
committing. Reference: Raft thesis §4.2.3 (disruptive servers)."""

from __future__ import annotations

import pytest

from raft.core import ConfChange, ConfChangeType, ConfState, StateRole
from tests.unit.raft.helpers import Cluster

ET = 10


@pytest.mark.parametrize("pre_vote", [True, False])
def test_moved_away_replica_that_comes_back_does_not_disturb(pre_vote: bool) -> None:
    c = Cluster.new(pre_vote=pre_vote)
    c.elect(1)
    c.nodes[1].propose(b"before")
    c.stabilize()
    # the move: learner 4, promoted, then 3 removed while 3 hears nothing
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.stabilize()
    c.add_node(4)
    c.tick(1)
    c.stabilize()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    c.stabilize()
    c.cut_links = {(1, 3), (2, 3), (4, 3)}
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    c.stabilize()
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2, 4))
    assert 3 in c.nodes[3].status().conf_state.voters  # it never learned
    term = c.nodes[1].raft.term
    # 3 comes back (its messages reach everyone again) and times out repeatedly
    c.cut_links = set()
    for _ in range(6 * ET):
        c.tick_all()
        c.stabilize()
    for n in (1, 2, 4):
        assert c.nodes[n].raft.term == term, f"node {n} term moved"
    assert c.nodes[1].raft.role == StateRole.LEADER
    assert c.nodes[3].raft.role != StateRole.LEADER
    c.nodes[1].propose(b"after")
    c.stabilize()
    assert c.applied[4][-1] == b"after" and c.applied[2][-1] == b"after"
