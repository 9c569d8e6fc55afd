"""RawNode.forget_leader: a follower told that its leader's process is gone
stops waiting out the leader's lease (pre-vote with check-quorum would
otherwise refuse every candidate for a whole election timeout after the
last heartbeat) and campaigns after the random part of the election
timeout alone. A leader that is alive re-establishes itself with its next
heartbeat, and forgetting never changes who can win an election."""

from __future__ import annotations

from raft.core import StateRole
from raft.testing import SimNetwork

ET = 10  # SimNetwork's election_ticks


def _ticks_to_new_leader(net: SimNetwork, old: int, limit: int) -> int:
    for n in range(1, limit + 1):
        net.tick_all()
        net.stabilize()
        lead = net.leader()
        if lead is not None and lead != old:
            return n
    raise AssertionError(f"no new leader within {limit} ticks")


def _cluster(seed: int) -> SimNetwork:
    net = SimNetwork.new(ids=(1, 2, 3), seed=seed, pre_vote=True, check_quorum=True)
    net.campaign(1)
    net.stabilize()
    assert net.leader() == 1
    return net


def test_followers_that_forget_a_dead_leader_elect_sooner() -> None:
    """Over 40 seeds: with the lease waited out, no election comes before
    ET ticks (the lease) and the mean is about 1.3 ET; forgetting, most
    elections come within ET ticks (a split vote costs another random
    timeout) and the mean is below 0.8 ET."""
    forgot, waited = [], []
    for seed in range(40):
        net = _cluster(seed)
        net.crash(1)
        waited.append(_ticks_to_new_leader(net, 1, 5 * ET))
        net = _cluster(seed)
        net.crash(1)
        for nid in (2, 3):
            net.nodes[nid].forget_leader()
            assert net.nodes[nid].raft.leader_id == 0
        forgot.append(_ticks_to_new_leader(net, 1, 5 * ET))
    assert min(waited) >= ET
    assert sum(forgot) / len(forgot) < 0.8 * ET < sum(waited) / len(waited)
    assert sum(t <= ET for t in forgot) >= 30, forgot


def test_a_live_leader_is_taken_back_at_its_next_heartbeat() -> None:
    net = _cluster(0)
    net.nodes[2].forget_leader()
    assert net.nodes[2].raft.leader_id == 0
    net.tick(1, net.nodes[1].raft.heartbeat_timeout)  # the leader's heartbeat
    net.stabilize()
    assert net.nodes[2].raft.leader_id == 1
    assert net.nodes[1].raft.role == StateRole.LEADER


def test_forget_leader_is_a_no_op_for_leaders_and_leaderless_followers() -> None:
    net = _cluster(0)
    lead = net.nodes[1].raft
    term = lead.term
    net.nodes[1].forget_leader()
    assert lead.role == StateRole.LEADER and lead.leader_id == 1 and lead.term == term
    net.nodes[2].forget_leader()
    elapsed = net.nodes[2].raft.election_elapsed
    net.nodes[2].forget_leader()  # twice: nothing more happens
    assert net.nodes[2].raft.election_elapsed == elapsed and net.nodes[2].raft.term == term
