"""Leadership transfer.

Reference: Raft thesis §3.10. The leader stops accepting client requests,
brings the target's log up to date, then sends it TimeoutNow; the target
starts an election at once (term + 1, bypassing pre-vote and the
followers' leader lease) and wins it. If the transfer does not complete
within an election timeout, the leader aborts it and resumes.
"""

from __future__ import annotations

import pytest

from raft.core import ConfChange, ConfChangeType, Message, MessageType, ProposalDropped, StateRole

from raft.testing.network import SimNetwork
from tests.unit.raft.helpers import Cluster

ET = 10


def _elected(**kw) -> Cluster:
    c = Cluster.new(**kw)
    c.elect(1)
    c.nodes[1].propose(b"a")
    c.stabilize()
    return c


def test_transfer_to_up_to_date_follower() -> None:
    """Thesis §3.10: TimeoutNow makes the target campaign immediately; it wins
    at term + 1 without any tick."""
    c = _elected()
    c.nodes[1].transfer_leader(2)
    c.stabilize()
    tn = c.sent_of(MessageType.TIMEOUT_NOW)
    assert [(m.from_, m.to, m.term) for m in tn] == [(1, 2, 1)]
    r2 = c.nodes[2].raft
    assert r2.role == StateRole.LEADER
    assert r2.term == 2
    assert c.nodes[1].raft.role == StateRole.FOLLOWER
    assert c.nodes[1].raft.leader_id == 2
    assert c.nodes[1].raft.lead_transferee == 0
    # The target skipped pre-vote: it went straight to a real election.
    assert c.sent_of(MessageType.PRE_VOTE, from_=2) == []
    c.nodes[2].propose(b"b")
    c.stabilize()
    assert c.applied[1] == c.applied[3] == [b"a", b"b"]


def test_transfer_in_sim_network() -> None:
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.transfer_leader(1, 3)
    net.stabilize()
    assert net.leader() == 3
    assert net.nodes[3].raft.term == 2
    assert net.leader_history == [(1, 1), (2, 3)]


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """Thesis §3.10 step 2: the leader first replicates its log to the target,
    and sends TimeoutNow only once the target's log matches."""
    c = _elected()
    c.isolate(3)
    for d in (b"b", b"c", b"d"):
        c.nodes[1].propose(d)
    c.stabilize()
    last = c.nodes[1].raft.raft_log.last_index()
    assert c.nodes[3].raft.raft_log.last_index() < last
    c.heal()
    before = len(c.sent)
    c.nodes[1].transfer_leader(3)
    assert c.nodes[1].raft.lead_transferee == 3
    c.stabilize()
    sent = c.sent[before:]
    tn_at = next(k for k, m in enumerate(sent) if m.type == MessageType.TIMEOUT_NOW)
    caught_up = [
        k
        for k, m in enumerate(sent)
        if m.type == MessageType.APP_RESP and m.from_ == 3 and not m.reject and m.index == last
    ]
    assert caught_up and caught_up[0] < tn_at
    assert c.nodes[3].raft.role == StateRole.LEADER
    assert c.nodes[3].raft.term == 2
    assert c.applied[3] == [b"a", b"b", b"c", b"d"]


def test_proposals_dropped_during_transfer() -> None:
    """Thesis §3.10 step 1: the leader stops accepting client requests while
    the transfer is in progress."""
    c = _elected()
    c.isolate(3)
    c.nodes[1].propose(b"b")
    c.stabilize()
    c.nodes[1].transfer_leader(3)
    c.stabilize()
    assert c.nodes[1].raft.lead_transferee == 3
    assert c.nodes[1].status().lead_transferee == 3
    last = c.nodes[1].raft.raft_log.last_index()
    with pytest.raises(ProposalDropped):
        c.nodes[1].propose(b"during")
    with pytest.raises(ProposalDropped):
        c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert c.nodes[1].raft.raft_log.last_index() == last


def test_transfer_aborted_after_election_timeout() -> None:
    """Thesis §3.10: if the transfer does not complete within an election
    timeout, the leader aborts it and accepts requests again."""
    c = _elected()
    c.isolate(3)
    c.nodes[1].transfer_leader(3)
    c.stabilize()
    for _ in range(ET - 1):
        c.tick(1)
        c.tick(2)
        c.stabilize()
    assert c.nodes[1].raft.lead_transferee == 3
    c.tick(1)
    c.stabilize()
    r1 = c.nodes[1].raft
    assert r1.lead_transferee == 0
    assert r1.role == StateRole.LEADER and r1.term == 1
    c.nodes[1].propose(b"after abort")
    c.stabilize()
    assert c.applied[2][-1] == b"after abort"
    # 3 never heard the TimeoutNow (it was cut off): it is still a follower of term 1.
    assert c.nodes[3].raft.term == 1


@pytest.mark.parametrize("target", [1, 9])
def test_transfer_to_self_or_non_member_is_ignored(target: int) -> None:
    """Thesis §3.10: only a voter other than the leader can be a target."""
    c = _elected()
    c.nodes[1].transfer_leader(target)
    c.stabilize()
    r1 = c.nodes[1].raft
    assert r1.lead_transferee == 0
    assert r1.role == StateRole.LEADER and r1.term == 1
    assert c.sent_of(MessageType.TIMEOUT_NOW) == []
    c.nodes[1].propose(b"b")  # not blocked
    c.stabilize()
    assert c.applied[2] == [b"a", b"b"]


def test_transfer_to_learner_is_ignored() -> None:
    """A learner cannot lead (thesis §4.2.1), so it is not a valid target."""
    c = _elected()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.stabilize()
    c.add_node(4)
    c.tick(1)
    c.stabilize()
    c.nodes[1].transfer_leader(4)
    c.stabilize()
    assert c.nodes[1].raft.lead_transferee == 0
    assert c.nodes[1].raft.role == StateRole.LEADER
    assert c.nodes[4].raft.role == StateRole.FOLLOWER
    assert c.sent_of(MessageType.TIMEOUT_NOW) == []


def test_transfer_requested_on_follower_is_forwarded() -> None:
    """A follower forwards a transfer request to the leader."""
    c = _elected()
    c.nodes[2].transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raft.role == StateRole.LEADER
    assert c.nodes[2].raft.term == 2
    assert [(m.from_, m.to) for m in c.sent_of(MessageType.TIMEOUT_NOW)] == [(1, 2)]


def test_new_transfer_target_replaces_pending_one() -> None:
    """A transfer to another target aborts the pending one and starts anew."""
    c = _elected()
    c.isolate(3)
    c.nodes[1].transfer_leader(3)
    c.stabilize()
    assert c.nodes[1].raft.lead_transferee == 3
    c.nodes[1].transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raft.role == StateRole.LEADER
    assert c.nodes[1].raft.lead_transferee == 0


def test_transfer_overrides_leader_lease_and_pre_vote() -> None:
    """Thesis §3.10 / §9.6: the election a TimeoutNow starts is not refused by
    followers that heard from the leader recently (the request says it is
    a transfer)."""
    c = _elected(pre_vote=True, check_quorum=True)
    c.tick(1)
    c.stabilize()  # 3 just heard a heartbeat: it is within its lease
    c.nodes[1].transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raft.role == StateRole.LEADER
    votes = c.sent_of(MessageType.VOTE_RESP, to=2)
    assert sorted((m.from_, m.reject) for m in votes) == [(1, False), (3, False)]


def test_learner_ignores_timeout_now() -> None:
    """A learner is not promotable: it ignores TimeoutNow (thesis §4.2.1)."""
    c = _elected()
    c.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    c.stabilize()
    c.add_node(4)
    c.tick(1)
    c.stabilize()
    c.nodes[4].step(Message(type=MessageType.TIMEOUT_NOW, from_=1, to=4, term=1))
    c.stabilize()
    assert c.nodes[4].raft.role == StateRole.FOLLOWER
    assert c.nodes[4].raft.term == 1
    assert c.nodes[1].raft.role == StateRole.LEADER
