"""Leader election: randomized timeouts, majorities, split votes, the
up-to-date check, durable votes, pre-vote and check-quorum.

Reference: §5.2 (leader election), §5.4.1 (election restriction), Raft
thesis §9.6 (pre-vote, leader stickiness), §6.2 / etcd check-quorum.
"""

from __future__ import annotations

import pytest

from raft.core import Entry, HardState, Message, MessageType, ProposalDropped, StateRole

from raft.testing.network import SimNetwork
from tests.unit.raft.helpers import Cluster, drain, new_node, new_storage

ET = 10  # election_ticks


def _ticks_until_campaign(node) -> int:
    for n in range(1, 10 * ET):
        node.tick()
        if node.raft.role != StateRole.FOLLOWER:
            return n
    raise AssertionError("never campaigned")


def test_election_timeout_is_randomized_in_range() -> None:
    """Reference: §5.2. Election timeouts are chosen randomly from a fixed
    interval: [election_ticks, 2*election_ticks), different per node seed."""
    seen = [_ticks_until_campaign(new_node(1, new_storage(), seed=seed)) for seed in range(40)]
    assert all(ET <= n < 2 * ET for n in seen), seen
    assert len(set(seen)) >= 5, seen


def test_election_timeout_is_rerandomized_every_round() -> None:
    """Reference: §5.2. Each candidate restarts its randomized election
    timeout at the start of an election."""
    s = new_storage()
    node = new_node(1, s, seed=3, pre_vote=False)
    intervals = []
    last_term, n = 0, 0
    for _ in range(60 * ET):
        node.tick()
        n += 1
        drain(node, s)
        if node.raft.term != last_term:
            intervals.append(n)
            n = 0
            last_term = node.raft.term
    assert len(intervals) >= 20
    assert all(ET <= i < 2 * ET for i in intervals), intervals
    assert len(set(intervals)) >= 4, intervals


def _first_campaigner(seed: int) -> tuple[int, int]:
    net = SimNetwork.new(ids=(1, 2, 3), seed=seed)
    for t in range(1, 3 * ET):
        net.tick_all()
        for i, node in net.nodes.items():
            if node.raft.role != StateRole.FOLLOWER:
                return t, i
    raise AssertionError("no node campaigned")


def test_different_seeds_give_different_election_timings() -> None:
    """Reference: §5.2. Randomized timeouts spread servers out: over seeds,
    both the first node to time out and when it does vary; the same seed
    replays the same timing."""
    results = [_first_campaigner(seed) for seed in range(12)]
    assert all(ET <= t < 2 * ET for t, _ in results), results
    assert len({t for t, _ in results}) >= 3, results
    assert len({i for _, i in results}) >= 2, results
    assert [_first_campaigner(seed) for seed in range(12)] == results


def test_ticks_elect_exactly_one_leader() -> None:
    """Reference: §5.2. With only ticks (no explicit campaign), the cluster
    elects one leader, and everyone agrees on it and its term."""
    net = SimNetwork.new(ids=(1, 2, 3, 4, 5), seed=7)
    for _ in range(5 * ET):
        net.tick_all()
        net.stabilize()
        if net.leader() is not None:
            break
    lead = net.leader()
    assert lead is not None
    term = net.nodes[lead].raft.term
    assert [i for i, n in net.nodes.items() if n.raft.role == StateRole.LEADER] == [lead]
    assert {n.raft.leader_id for n in net.nodes.values()} == {lead}
    assert {n.raft.term for n in net.nodes.values()} == {term}


@pytest.mark.parametrize(
    ("down", "wins"),
    [((), True), ((4,), True), ((4, 5), True), ((3, 4, 5), False), ((2, 3, 4, 5), False)],
)
def test_candidate_wins_with_majority(down: tuple[int, ...], wins: bool) -> None:
    """Reference: §5.2. A candidate wins if it gets votes from a majority of
    the full cluster (5 voters: 3 votes, counting its own)."""
    net = SimNetwork.new(ids=(1, 2, 3, 4, 5), pre_vote=False)
    for d in down:
        net.isolate(d)
    net.campaign(1)
    node = net.nodes[1].raft
    assert node.term == 1
    if wins:
        assert node.role == StateRole.LEADER
        for i in set(net.nodes) - set(down):
            assert net.nodes[i].raft.leader_id == 1
            assert net.nodes[i].raft.vote == 1
    else:
        assert node.role == StateRole.CANDIDATE
        assert net.leader() is None


def test_candidate_with_pre_vote_does_not_bump_term_without_majority() -> None:
    """Raft thesis §9.6: a pre-candidate that cannot win a pre-vote majority
    never increments its term."""
    net = SimNetwork.new(ids=(1, 2, 3, 4, 5))
    for d in (3, 4, 5):
        net.isolate(d)
    net.campaign(1)
    assert net.nodes[1].raft.role == StateRole.PRE_CANDIDATE
    assert net.nodes[1].raft.term == 0
    assert net.storages[1].hard_state.term == 0


def test_split_vote_is_retried_in_a_later_term() -> None:
    """Reference: §5.2. If votes split and no candidate wins, each candidate
    times out and starts a new election with a higher term; randomized
    timeouts end the split."""
    c = Cluster.new((1, 2, 3, 4), pre_vote=False, check_quorum=False)
    c.cut(1, 4)
    c.cut(2, 3)
    c.campaign(1)
    c.campaign(2)  # both at term 1 before any message is delivered
    c.stabilize()
    # 1 has {1, 3}, 2 has {2, 4}: neither has 3 of 4.
    assert c.nodes[1].raft.role == StateRole.CANDIDATE
    assert c.nodes[2].raft.role == StateRole.CANDIDATE
    assert c.nodes[1].raft.term == c.nodes[2].raft.term == 1
    assert c.nodes[3].raft.vote == 1 and c.nodes[4].raft.vote == 2
    c.heal()
    leaders: list[int] = []
    for _ in range(10 * ET):
        c.tick_all()
        c.stabilize()
        leaders = [i for i, n in c.nodes.items() if n.raft.role == StateRole.LEADER]
        if leaders:
            break
    assert len(leaders) == 1
    lead = c.nodes[leaders[0]].raft
    assert lead.term >= 2
    assert all(n.raft.leader_id == leaders[0] and n.raft.term == lead.term for n in c.nodes.values())


def test_follower_rejects_candidate_with_stale_log() -> None:
    """Reference: §5.4.1. A candidate whose log is missing committed entries
    cannot win: every voter holding them refuses its vote."""
    net = SimNetwork.new(ids=(1, 2, 3), pre_vote=False, check_quorum=False)
    net.campaign(1)
    net.isolate(3)
    for d in (b"a", b"b", b"c"):
        net.propose(1, d)
    net.stabilize()
    assert net.nodes[1].raft.raft_log.committed == 4
    assert net.nodes[3].raft.raft_log.last_index() == 1
    net.heal()
    net.campaign(3)
    r3 = net.nodes[3].raft
    assert r3.role != StateRole.LEADER
    assert r3.term == 2
    # Neither voter granted: both hold later entries.
    assert net.nodes[1].raft.vote != 3 and net.nodes[2].raft.vote != 3
    # The cluster recovers with a leader that has every committed entry.
    for _ in range(10 * ET):
        net.tick_all()
        net.stabilize()
        if net.leader() is not None:
            break
    lead = net.leader()
    assert lead in (1, 2)
    assert net.applied[lead] == [b"a", b"b", b"c"]
    assert net.applied[3] == [b"a", b"b", b"c"]


def test_vote_is_durable_across_restart() -> None:
    """Reference: §5.2, Figure 2 (votedFor is persistent state). A node that
    voted in a term and restarts does not vote for another candidate in that
    term, but still grants the same candidate again."""
    c = Cluster.new(pre_vote=False)
    c.campaign(1)
    c.handle_ready(1)
    vote = next(m for m in c.queue if m.to == 2)
    c.queue.clear()
    c.nodes[2].step(vote)
    c.handle_ready(2)
    assert c.storages[2].hard_state == HardState(term=1, vote=1, commit=0)
    c.queue.clear()
    c.crash(2)
    node = c.restart(2)
    assert (node.raft.term, node.raft.vote) == (1, 1)
    node.step(Message(type=MessageType.VOTE, from_=3, to=2, term=1, log_term=0, index=0))
    d = drain(node, c.storages[2])
    assert [(m.to, m.reject) for m in d.of(MessageType.VOTE_RESP)] == [(3, True)]
    node.step(Message(type=MessageType.VOTE, from_=1, to=2, term=1, log_term=0, index=0))
    d = drain(node, c.storages[2])
    assert [(m.to, m.reject) for m in d.of(MessageType.VOTE_RESP)] == [(1, False)]
    assert c.storages[2].hard_state.vote == 1


def test_vote_is_durable_across_restart_in_sim_network() -> None:
    """Reference: §5.2. Same as above, through SimNetwork's crash/restart."""
    net = SimNetwork.new(ids=(1, 2, 3), pre_vote=False)
    net.campaign(1)
    assert net.leader() == 1
    net.crash(2)
    net.restart(2)
    r2 = net.nodes[2].raft
    assert (r2.term, r2.vote, r2.leader_id) == (1, 1, 0)
    assert r2.raft_log.last_index() == 1


def test_pre_vote_rejoining_node_does_not_disrupt() -> None:
    """Raft thesis §9.6. A node partitioned away keeps failing its pre-vote
    and never raises its term, so when it rejoins the leader and everyone's
    term are unchanged."""
    net = SimNetwork.new(ids=(1, 2, 3), seed=1)
    net.campaign(1)
    assert net.leader() == 1
    net.isolate(3)
    for _ in range(8 * ET):
        net.tick_all()
        net.stabilize()
    assert net.nodes[3].raft.term == 1
    assert net.nodes[3].raft.role == StateRole.PRE_CANDIDATE
    net.heal()
    for _ in range(3):
        net.tick_all()
        net.stabilize()
    assert net.leader() == 1
    assert [net.nodes[i].raft.term for i in (1, 2, 3)] == [1, 1, 1]
    assert net.leader_history == [(1, 1)]
    net.propose(1, b"after")
    net.stabilize()
    assert net.applied[3] == [b"after"]
    assert net.nodes[3].raft.leader_id == 1


def test_without_pre_vote_a_rejoining_node_disrupts() -> None:
    """Contrast for the test above (§9.6 motivation): with pre-vote and
    check-quorum off, the isolated node's term grows and its return deposes
    the leader."""
    net = SimNetwork.new(ids=(1, 2, 3), seed=1, pre_vote=False, check_quorum=False)
    net.campaign(1)
    net.isolate(3)
    for _ in range(8 * ET):
        net.tick_all()
        net.stabilize()
    t3 = net.nodes[3].raft.term
    assert t3 > 2
    net.heal()
    for _ in range(3):
        net.tick_all()
        net.stabilize()
    assert net.nodes[1].raft.term >= t3


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    """etcd check-quorum (thesis §6.2): a leader that has not heard from a
    quorum within an election timeout steps down, so clients stop talking
    to it. The first check after isolation may still see followers' earlier
    activity, the second (at most 2 election timeouts) must not."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(1)
    stepped = None
    for t in range(1, 2 * ET + 1):
        net.tick(1)
        net.stabilize()
        if net.nodes[1].raft.role != StateRole.LEADER:
            stepped = t
            break
    assert stepped is not None, "isolated leader never stepped down"
    assert ET <= stepped <= 2 * ET
    r1 = net.nodes[1].raft
    assert r1.role == StateRole.FOLLOWER
    assert r1.term == 1  # stepping down does not bump the term
    assert r1.leader_id == 0
    with pytest.raises(ProposalDropped):
        net.propose(1, b"x")


def test_check_quorum_leader_with_quorum_stays() -> None:
    """A leader that keeps hearing from a quorum (here 1 of 2 followers)
    stays leader through many election timeouts."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(3)
    for _ in range(5 * ET):
        net.tick(1)
        net.tick(2)
        net.stabilize()
    assert net.nodes[1].raft.role == StateRole.LEADER
    assert net.nodes[1].raft.term == 1


def test_majority_side_elects_new_leader_and_old_leader_follows() -> None:
    """Reference: §5.2, §5.1. The majority partition elects a new leader at a
    higher term; the old leader, healed, follows it."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(1)
    for _ in range(6 * ET):
        net.tick_all()
        net.stabilize()
    new = [i for i in (2, 3) if net.nodes[i].raft.role == StateRole.LEADER]
    assert len(new) == 1
    # The old leader stepped down (check-quorum) and, with pre-vote, keeps
    # failing pre-votes without raising its term.
    assert net.nodes[1].raft.role in (StateRole.FOLLOWER, StateRole.PRE_CANDIDATE)
    assert net.nodes[1].raft.term == 1
    net.heal()
    net.tick_all()
    net.stabilize()
    term = net.nodes[new[0]].raft.term
    assert term >= 2
    assert net.nodes[1].raft.term == term
    assert net.nodes[1].raft.leader_id == new[0]


@pytest.mark.parametrize("pre_vote", [True, False])
def test_leader_stickiness(pre_vote: bool) -> None:
    """Raft thesis §4.2.3 / §9.6: a follower that heard from a current leader
    within the minimum election timeout ignores (pre)vote requests, so a
    node cannot depose a healthy leader by campaigning."""
    net = SimNetwork.new(ids=(1, 2, 3), pre_vote=pre_vote)
    net.campaign(1)
    net.tick_all(1)
    net.stabilize()
    net.campaign(3)  # forced, e.g. a node with a faulty timer
    assert net.leader() == 1
    assert net.nodes[1].raft.term == 1
    assert net.nodes[2].raft.term == 1
    assert net.nodes[2].raft.vote == 1
    assert net.nodes[2].raft.leader_id == 1
    net.propose(1, b"still leader")
    net.stabilize()
    assert net.applied[2] == [b"still leader"]


def test_pre_vote_granted_once_leader_is_gone() -> None:
    """Raft thesis §9.6: pre-votes are granted by followers that have not
    heard from a leader for an election timeout, and the winner then runs
    a real election at term + 1."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.crash(1)
    for _ in range(4 * ET):
        net.tick_all()
        net.stabilize()
        if net.leader() is not None:
            break
    lead = net.leader()
    assert lead in (2, 3)
    assert net.nodes[lead].raft.term == 2
    assert net.nodes[5 - lead].raft.leader_id == lead


def test_learner_does_not_campaign() -> None:
    """Raft thesis §4.2.1: learners (non-voting members) never start
    elections."""
    net = SimNetwork.new(ids=(1, 2, 3), learners=(3,))
    for _ in range(5 * ET):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].raft.role == StateRole.FOLLOWER
    assert net.nodes[3].raft.term == 0
    net.campaign(3)
    assert net.nodes[3].raft.role == StateRole.FOLLOWER
    assert net.leader() is None


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    """Reference: §5.2. A candidate that learns of a legitimate leader of its
    own term becomes follower."""
    s = new_storage(entries=[Entry(1, 1)], hard_state=HardState(term=1))
    node = new_node(2, s, pre_vote=False)
    node.campaign()
    drain(node, s)
    assert node.raft.role == StateRole.CANDIDATE and node.raft.term == 2
    node.step(Message(type=MessageType.HEARTBEAT, from_=1, to=2, term=2))
    assert node.raft.role == StateRole.FOLLOWER
    assert node.raft.leader_id == 1
