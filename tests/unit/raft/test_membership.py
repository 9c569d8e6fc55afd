"""Membership changes, one server at a time, and learners.

Reference: Raft thesis §4.1 (single-server changes take effect when
applied here, as in etcd), §4.2.1 (catching up new servers: learners),
§4.2.2 (removing the current leader), §4.2.3 (disruptive servers).
"""

from __future__ import annotations

import pytest

from raft.core import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryKind,
    MessageType,
    ProposalDropped,
    StateRole,
)

from tests.unit.raft.helpers import Cluster

ET = 10
ADD = ConfChangeType.ADD_NODE
REMOVE = ConfChangeType.REMOVE_NODE
LEARNER = ConfChangeType.ADD_LEARNER


def _change(c: Cluster, cc: ConfChange, leader: int = 1) -> None:
    c.nodes[leader].propose_conf_change(cc)
    c.stabilize()


def _committed(c: Cluster, node_id: int = 1) -> int:
    return c.nodes[node_id].raft.raft_log.committed


def _cluster_with_learner(learners: tuple[int, ...] = (4,)) -> Cluster:
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"before")
    c.stabilize()
    for n in learners:
        _change(c, ConfChange(LEARNER, n))
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2, 3), learners=learners)
    for n in learners:
        c.add_node(n)
    c.tick(1)
    c.stabilize()
    return c


def test_add_learner_catches_up_and_is_not_in_quorum() -> None:
    """Thesis §4.2.1: learners receive the log but do not count in
    commitment: with voters {1,2,3}, learners 4 and 5, and voters 2, 3 down,
    an entry on the leader and both learners (3 of 5 nodes) is not
    committed."""
    c = _cluster_with_learner((4, 5))
    assert c.applied[4] == c.applied[5] == [b"before"]
    st = c.nodes[1].status()
    assert st.progress[4].is_learner is True and st.progress[5].is_learner is True
    assert st.progress[4].match == c.nodes[1].raft.raft_log.last_index()
    c.crash(2)
    c.crash(3)
    before = _committed(c)
    c.nodes[1].propose(b"x")
    c.stabilize()
    last = c.nodes[1].raft.raft_log.last_index()
    for n in (4, 5):
        assert c.nodes[n].raft.raft_log.last_index() == last  # the learners have it ...
        assert c.nodes[1].raft.trk.progress[n].match == last
    assert _committed(c) == before  # ... but it is not committed
    assert c.applied[1] == [b"before"]


def test_learner_does_not_vote() -> None:
    """Thesis §4.2.1: learners do not vote; a candidate needs a majority of
    the voters (here voter 2 alone, with learners 4 and 5, cannot win)."""
    c = _cluster_with_learner((4, 5))
    c.crash(1)
    c.crash(3)
    for _ in range(5 * ET):
        c.tick_all()
        c.stabilize()
    assert [i for i, n in c.nodes.items() if n.raft.role == StateRole.LEADER] == []
    assert c.nodes[4].raft.role == StateRole.FOLLOWER
    assert c.nodes[4].raft.vote == 0 and c.nodes[5].raft.vote == 0


def test_promote_learner() -> None:
    """Thesis §4.2.1: ADD_NODE on a caught-up learner makes it a voter; from
    then on the quorum is 3 of 4, so two acks (leader + one) no longer
    commit."""
    c = _cluster_with_learner()
    _change(c, ConfChange(ADD, 4))
    for i in (1, 2, 3, 4):
        assert c.nodes[i].status().conf_state == ConfState(voters=(1, 2, 3, 4), learners=()), i
    assert c.nodes[1].status().progress[4].is_learner is False
    # Voters {1,2,3,4}: with 2 down and 4 unreachable, {1,3} is not a quorum.
    c.crash(2)
    c.cut(1, 4)
    c.cut(3, 4)
    before = _committed(c)
    c.nodes[1].propose(b"x")
    c.stabilize()
    assert c.nodes[3].raft.raft_log.last_index() == c.nodes[1].raft.raft_log.last_index()
    assert _committed(c) == before
    c.heal()
    c.tick(1)
    c.stabilize()
    assert _committed(c) > before
    assert c.applied[4][-1] == b"x"


def test_promoted_learner_can_become_leader() -> None:
    """Thesis §4.2.1: a learner does not campaign; once promoted, the same
    node may campaign and win. (Check-quorum off, so that the followers'
    lease on the crashed leader does not hide the point.)"""
    c = Cluster.new(check_quorum=False)
    c.elect(1)
    _change(c, ConfChange(LEARNER, 4))
    c.add_node(4)
    c.tick(1)
    c.stabilize()
    c.campaign(4)
    c.stabilize()
    assert c.nodes[4].raft.role == StateRole.FOLLOWER  # learners do not campaign
    assert c.nodes[4].raft.term == 1
    _change(c, ConfChange(ADD, 4))
    c.crash(1)
    c.campaign(4)
    c.stabilize()
    assert c.nodes[4].raft.role == StateRole.LEADER
    assert c.nodes[4].raft.term == 2
    c.nodes[4].propose(b"from 4")
    c.stabilize()
    assert c.applied[2][-1] == b"from 4"


def test_add_voter() -> None:
    """Thesis §4.1: adding a server changes the majority: with voters
    {1,2,3,4}, 2 and 3 down, nothing commits; with only 3 down, {1,2,4}
    commits."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(ADD, 4))
    c.handle_ready(1)
    # Appended, not applied: the configuration does not change yet.
    assert 4 not in c.nodes[1].raft.trk.progress
    c.stabilize()
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2, 3, 4))
    assert 4 in c.nodes[1].raft.trk.progress
    c.add_node(4)
    c.tick(1)
    c.stabilize()
    c.crash(3)
    c.nodes[1].propose(b"a")
    c.stabilize()
    assert c.applied[1] == [b"a"] and c.applied[4] == [b"a"]
    c.crash(2)
    before = _committed(c)
    c.nodes[1].propose(b"b")
    c.stabilize()
    assert _committed(c) == before
    assert c.applied[1] == [b"a"]


def test_remove_follower() -> None:
    """Thesis §4.1: after removing 3, the majority of {1,2} is both; the
    removed node is no longer sent appends."""
    c = Cluster.new()
    c.elect(1)
    _change(c, ConfChange(REMOVE, 3))
    for i in (1, 2):
        assert c.nodes[i].status().conf_state == ConfState(voters=(1, 2))
    assert 3 not in c.nodes[1].raft.trk.progress
    before = len(c.sent)
    c.nodes[1].propose(b"a")
    c.tick(1)
    c.stabilize()
    assert c.applied[1] == [b"a"] and c.applied[2] == [b"a"]
    assert [m for m in c.sent[before:] if m.to == 3] == []
    c.crash(2)
    committed = _committed(c)
    c.nodes[1].propose(b"b")
    c.stabilize()
    assert _committed(c) == committed


def test_remove_leader() -> None:
    """Thesis §4.2.2: a leader that is removed steps down once the change is
    committed; the remaining servers elect a leader among themselves, which
    has every committed entry."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"a")
    c.stabilize()
    _change(c, ConfChange(REMOVE, 1))
    assert c.nodes[1].raft.role != StateRole.LEADER
    for i in (2, 3):
        assert c.nodes[i].status().conf_state == ConfState(voters=(2, 3))
    lead = None
    for _ in range(6 * ET):
        c.tick_all()
        c.stabilize()
        leaders = [i for i, n in c.nodes.items() if n.raft.role == StateRole.LEADER]
        if leaders:
            lead = leaders[0]
            break
    assert lead in (2, 3)
    assert c.nodes[1].raft.role != StateRole.LEADER
    assert c.applied[lead] == [b"a"]
    c.nodes[lead].propose(b"b")
    c.stabilize()
    assert c.applied[2] == c.applied[3] == [b"a", b"b"]
    # The removed node cannot propose through anyone.
    assert c.nodes[1].raft.role != StateRole.LEADER


def test_second_conf_change_while_pending_is_refused() -> None:
    """Thesis §4.1: a leader does not start a configuration change until the
    previous one is applied."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(LEARNER, 4))
    with pytest.raises(ProposalDropped):
        c.nodes[1].propose_conf_change(ConfChange(LEARNER, 5))
    c.stabilize()
    ccs = [e for e in c.nodes[1].raft.raft_log.all_entries() if e.kind == EntryKind.CONF_CHANGE]
    assert len(ccs) == 1
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2, 3), learners=(4,))
    # Once applied, the next one is accepted.
    c.nodes[1].propose_conf_change(ConfChange(LEARNER, 5))
    c.stabilize()
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2, 3), learners=(4, 5))
    # Normal proposals are not affected by a pending change.
    c.nodes[1].propose_conf_change(ConfChange(REMOVE, 5))
    c.nodes[1].propose(b"ok")
    c.stabilize()
    assert c.applied[1] == [b"ok"]


def test_commit_after_removing_unresponsive_node() -> None:
    """Thesis §4.1: once the removal is applied, the smaller majority can
    commit entries the removed node never acknowledged."""
    c = Cluster.new((1, 2))
    c.elect(1)
    c.nodes[1].propose_conf_change(ConfChange(REMOVE, 2))
    c.handle_ready(1)  # the conf change's append leaves now
    c.filter = lambda m: not (m.type == MessageType.APP and any(e.data == b"x" for e in m.entries))
    c.nodes[1].propose(b"x")
    c.stabilize()
    assert c.nodes[1].status().conf_state == ConfState(voters=(1,))
    assert c.applied[1] == [b"x"]
    assert b"x" not in [e.data for e in c.nodes[2].raft.raft_log.all_entries()]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_removed_node_does_not_disrupt(pre_vote: bool) -> None:
    """Thesis §4.2.3: a removed server that never learned of its removal
    times out and campaigns; the others, hearing from a current leader,
    ignore it (check-quorum lease; with pre-vote it does not even raise its
    term)."""
    c = Cluster.new(pre_vote=pre_vote)
    c.elect(1)
    c.cut_links = {(1, 3), (2, 3)}  # 3 hears nothing more, but can still talk
    _change(c, ConfChange(REMOVE, 3))
    assert c.nodes[1].status().conf_state == ConfState(voters=(1, 2))
    assert c.nodes[3].status().conf_state == ConfState(voters=(1, 2, 3))
    for _ in range(6 * ET):
        c.tick_all()
        c.stabilize()
    assert c.nodes[3].raft.role != StateRole.LEADER
    if pre_vote:
        assert c.nodes[3].raft.term == 1
    else:
        assert c.nodes[3].raft.term > 1
        assert c.sent_of(MessageType.VOTE, from_=3)
    r1 = c.nodes[1].raft
    assert r1.role == StateRole.LEADER and r1.term == 1
    assert c.nodes[2].raft.term == 1 and c.nodes[2].raft.leader_id == 1
    c.nodes[1].propose(b"still")
    c.stabilize()
    assert c.applied[2] == [b"still"]
