"""ReadIndex: linearizable reads without writing to the log.

Reference: Raft thesis §6.4. The leader records its commit index as the
read index, confirms it is still leader with a round of heartbeats, and
answers only once it has committed an entry of its own term (its commit
index is then at least that of any previous leader).
"""

from __future__ import annotations

from raft.core import MessageType, ReadState, StateRole

from raft.testing.network import SimNetwork
from tests.unit.raft.helpers import Cluster


def test_read_index_on_leader() -> None:
    """Thesis §6.4: the leader's answer carries its commit index."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.propose(1, b"a")
    net.stabilize()
    net.read_index(1, b"r1")
    net.stabilize()
    assert net.read_states[1] == [ReadState(index=2, request_ctx=b"r1")]


def test_read_index_needs_heartbeat_quorum() -> None:
    """Thesis §6.4 step 3: the read is answered only after a majority
    acknowledged a heartbeat sent after the request."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].read_index(b"r")
    rd = c.handle_ready(1)
    assert rd is not None and rd.read_states == ()
    beats = [m for m in rd.messages if m.type == MessageType.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.context == b"r" for m in beats)
    # One heartbeat response (plus the leader itself) is a majority.
    c.queue = type(c.queue)(m for m in c.queue if m.to == 2)
    while c.queue or c.nodes[2].has_ready():
        c.deliver_one()
        c.handle_ready(2)
    rd = c.handle_ready(1)
    assert rd is not None
    assert rd.read_states == (ReadState(index=1, request_ctx=b"r"),)


def test_read_index_waits_for_commit_in_current_term() -> None:
    """Thesis §6.4 step 1: a new leader whose empty entry is not yet
    committed does not know the latest commit index; it must not answer a
    read until that entry commits."""
    c = Cluster.new(check_quorum=False)
    c.elect(1)
    for d in (b"a", b"b"):
        c.nodes[1].propose(d)
    c.stabilize()
    c.crash(1)
    c.drop_types = {MessageType.APP}  # the new leader's empty entry goes nowhere
    c.elect(2)
    r2 = c.nodes[2].raft
    assert r2.term == 2
    assert r2.raft_log.last_index() == 4
    assert r2.raft_log.committed == 3  # the term-2 entry at 4 is not committed
    c.nodes[2].read_index(b"early")
    c.stabilize()
    c.tick(2, 3)  # heartbeats go around and are answered
    c.stabilize()
    assert c.read_states[2] == []
    assert r2.raft_log.committed == 3
    c.drop_types = set()
    c.tick(2)  # heartbeat response -> the leader retries the append
    c.stabilize()
    assert r2.raft_log.committed == 4
    assert c.read_states[2] == [ReadState(index=4, request_ctx=b"early")]


def test_read_index_from_follower_gets_leaders_commit_index() -> None:
    """Thesis §6.4: a follower asks the leader for the read index; the answer
    is the leader's commit index, even when the follower's own is behind."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(2)
    for d in (b"a", b"b", b"c"):
        net.propose(1, d)
    net.stabilize()
    assert net.nodes[1].raft.raft_log.committed == 4
    assert net.nodes[2].raft.raft_log.committed == 1
    net.heal()
    net.read_index(2, b"f")
    net.stabilize()
    assert net.read_states[2] == [ReadState(index=4, request_ctx=b"f")]
    assert net.read_states[1] == []
    # The follower may serve the read once it has applied up to 4.
    assert net.applied[2] == [b"a", b"b", b"c"]


def test_read_index_on_follower_without_leader_is_not_answered() -> None:
    net = SimNetwork.new(ids=(1, 2, 3))
    net.read_index(2, b"nobody")
    net.stabilize()
    assert net.read_states[2] == []


def test_stale_isolated_leader_does_not_answer_reads() -> None:
    """Thesis §6.4: a deposed leader that has not noticed yet cannot confirm
    its leadership with a heartbeat quorum, so its reads never return; the
    new leader's do."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.propose(1, b"a")
    net.stabilize()
    net.isolate(1)
    net.read_index(1, b"stale")
    for _ in range(60):
        net.tick_all()
        net.stabilize()
    assert net.read_states[1] == []
    new = net.leader()
    assert new in (2, 3)
    net.propose(new, b"b")
    net.stabilize()
    net.read_index(new, b"fresh")
    net.stabilize()
    idx = net.nodes[new].raft.raft_log.committed
    assert net.read_states[new] == [ReadState(index=idx, request_ctx=b"fresh")]
    net.heal()
    for _ in range(5):
        net.tick_all()
        net.stabilize()
    assert net.read_states[1] == []
    assert net.nodes[1].raft.role == StateRole.FOLLOWER


def test_several_reads_each_answered_in_order() -> None:
    """Each request gets its own ReadState, in request order."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.read_index(1, b"x")
    net.read_index(1, b"y")
    net.read_index(2, b"z")
    net.stabilize()
    assert net.read_states[1] == [ReadState(1, b"x"), ReadState(1, b"y")]
    assert net.read_states[2] == [ReadState(1, b"z")]


def test_single_voter_answers_immediately() -> None:
    """A single-voter leader is its own quorum: no heartbeat round."""
    c = Cluster.new(ids=(1,))
    c.elect(1)
    c.stabilize()
    c.nodes[1].read_index(b"solo")
    rd = c.handle_ready(1)
    assert rd is not None
    assert rd.read_states == (ReadState(index=1, request_ctx=b"solo"),)
    assert rd.messages == ()


def _read_beats(rd: object) -> list[bytes]:
    """The contexts of the heartbeats for reads in a Ready's messages."""
    return [m.context for m in rd.messages if m.type == MessageType.HEARTBEAT and m.context]  # type: ignore[attr-defined]


def test_reads_that_arrive_during_a_round_share_the_next_one() -> None:
    """One heartbeat round for reads is in flight at a time: requests that
    arrive meanwhile are not answered by its acknowledgement (it may have
    been sent before they arrived), and all of them share the next round,
    which carries the newest one's context."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].read_index(b"a")
    rd = c.handle_ready(1)
    assert rd is not None and sorted(_read_beats(rd)) == [b"a", b"a"]
    c.nodes[1].read_index(b"b")
    c.nodes[2].read_index(b"c")  # a follower's request, forwarded to the leader
    c.handle_ready(2)
    while c.queue:  # the heartbeats of round a reach 2 and 3; c reaches the leader
        c.deliver_one()
    rd = c.handle_ready(1)
    assert rd is None or _read_beats(rd) == []  # no round for c while a's is out
    for n in (2, 3):
        c.handle_ready(n)  # their answers to round a
    c.deliver_one()  # 2's answer: a quorum for a
    rd = c.handle_ready(1)
    assert rd is not None
    assert rd.read_states == (ReadState(index=1, request_ctx=b"a"),)  # b waits: it came after round a was sent
    assert sorted(_read_beats(rd)) == [b"c", b"c"]  # one round for b and c
    c.stabilize()
    assert c.read_states[1] == [ReadState(1, b"a"), ReadState(1, b"b")]
    assert c.read_states[2] == [ReadState(1, b"c")]
    assert [m.context for m in c.sent if m.type == MessageType.HEARTBEAT and m.context].count(b"b") == 0


def test_a_lost_read_round_is_sent_again_by_the_heartbeat_tick() -> None:
    """The round in flight is lost: requests queued behind it are not stuck,
    the leader's next heartbeat carries the newest pending context."""
    c = Cluster.new()
    c.elect(1)
    c.drop_types = {MessageType.HEARTBEAT}
    c.nodes[1].read_index(b"lost")
    c.stabilize()
    c.drop_types = set()
    c.nodes[1].read_index(b"queued")
    c.stabilize()
    assert c.read_states[1] == []  # round "lost" still counts as in flight
    c.tick(1, c.nodes[1].raft.heartbeat_timeout)
    c.stabilize()
    assert c.read_states[1] == [ReadState(1, b"lost"), ReadState(1, b"queued")]
