"""Regression (issue #7, multi-Raft bugs): a leader transfer followed by a
stale ReadIndex. After leadership moved, the old leader must never answer a
ReadIndex with an index that misses a write the new leader committed: not
while it still believes it leads (it missed the transfer's election), not
from a request it queued in its old term, and not as a follower (it asks
the new leader, whose index covers the new term's writes). Reference: Raft
thesis §6.4 (ReadIndex needs a heartbeat quorum in the current term)."""

from __future__ import annotations

import pytest

from raft.core import Message, MessageType, StateRole
from tests.unit.raft.helpers import Cluster

ET = 10


def _transfer_without_telling(c: Cluster, old: int, new: int) -> int:
    """Leadership goes from old to new while old hears nothing (links to
    old cut); new commits a write with the third node. Returns its index."""
    c.nodes[old].transfer_leader(new)
    c.cut_links = {(new, old), (3, old)}  # old sends, but hears nothing
    c.stabilize()
    assert c.nodes[new].raft.role == StateRole.LEADER
    assert c.nodes[old].raft.role == StateRole.LEADER, "old leader must not know yet"
    c.nodes[new].propose(b"v2")
    c.stabilize()
    idx = c.nodes[new].raft.raft_log.last_index()
    assert c.nodes[new].raft.raft_log.committed == idx
    return idx


@pytest.mark.parametrize("hears_higher_term", [True, False])
@pytest.mark.parametrize("check_quorum", [True, False])
def test_deposed_leader_does_not_answer_read_index_from_its_old_term(hears_higher_term: bool, check_quorum: bool) -> None:
    c = Cluster.new(check_quorum=check_quorum, pre_vote=check_quorum)
    c.elect(1)
    c.nodes[1].propose(b"v1")
    c.stabilize()
    old_term = c.nodes[1].raft.term
    v2 = _transfer_without_telling(c, 1, 2)
    # the old leader is asked for a linearizable read: it still thinks it leads
    c.nodes[1].read_index(b"stale?")
    if hears_higher_term:
        c.cut_links = {(2, 1)}  # node 3 (new term) answers the old leader's heartbeat
    c.stabilize()
    for _ in range(3 * ET):
        c.tick(1)
        c.stabilize()
    got = [rs for rs in c.read_states[1] if rs.request_ctx == b"stale?"]
    assert all(rs.index >= v2 for rs in got), f"old leader answered a read at {got}, missing index {v2} of term > {old_term}"
    if check_quorum:
        # it learns (a higher-term answer) or notices (no quorum for an election timeout)
        assert c.nodes[1].raft.role != StateRole.LEADER


def test_read_index_queued_before_a_transfer_is_not_answered_from_the_old_term() -> None:
    """A ReadIndex the leader took before its transfer completed, whose
    heartbeat acks come back only after it stepped down, yields nothing."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"v1")
    c.stabilize()
    c.drop_types = {MessageType.HEARTBEAT_RESP}  # the read's confirmations are lost at first
    c.nodes[1].read_index(b"before-transfer")
    c.stabilize()
    assert not [rs for rs in c.read_states[1] if rs.request_ctx == b"before-transfer"]
    c.nodes[1].transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raft.role == StateRole.LEADER and c.nodes[1].raft.role == StateRole.FOLLOWER
    c.nodes[2].propose(b"v2")
    c.stabilize()
    v2 = c.nodes[2].raft.raft_log.committed
    c.drop_types = set()
    # late acks for the old term's heartbeat (context "before-transfer") reach node 1 now
    for frm in (2, 3):
        c.nodes[1].step(Message(type=MessageType.HEARTBEAT_RESP, to=1, from_=frm, term=c.nodes[1].raft.term, context=b"before-transfer"))
    c.stabilize()
    got = [rs for rs in c.read_states[1] if rs.request_ctx == b"before-transfer"]
    assert all(rs.index >= v2 for rs in got), got
    # leadership comes back to node 1: its new term's heartbeats must not
    # carry (and get acked for) the old term's pending request
    c.nodes[2].transfer_leader(1)
    c.stabilize()
    assert c.nodes[1].raft.role == StateRole.LEADER
    for _ in range(3):
        c.tick(1)
        c.stabilize()
    got = [rs for rs in c.read_states[1] if rs.request_ctx == b"before-transfer"]
    assert all(rs.index >= v2 for rs in got), f"old term's read answered at {got}, before index {v2}"


def test_old_leader_as_follower_gets_an_index_covering_the_new_leaders_writes() -> None:
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"v1")
    c.stabilize()
    c.nodes[1].transfer_leader(2)
    c.stabilize()
    assert c.nodes[2].raft.role == StateRole.LEADER
    # node 1 misses the new leader's write
    c.filter = lambda m: not (m.to == 1 and m.type == MessageType.APP)
    c.nodes[2].propose(b"v2")
    c.stabilize()
    v2 = c.nodes[2].raft.raft_log.committed
    assert b"v2" not in c.applied[1]
    c.nodes[1].read_index(b"after")
    c.stabilize()
    got = [rs for rs in c.read_states[1] if rs.request_ctx == b"after"]
    assert got and all(rs.index >= v2 for rs in got), (got, v2)
    # serving it needs node 1 to apply up to the index first: the host waits
    assert c.nodes[1].raft.raft_log.applied < v2
