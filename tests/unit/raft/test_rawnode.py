"""RawNode: the host-facing API (errors, Ready/advance protocol, status)."""

from __future__ import annotations

import random

import pytest

from raft.core import (
    ConfChange,
    ConfChangeType,
    ConfigInvalid,
    Config,
    Entry,
    HardState,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    RaftInvariantError,
    RawNode,
    ReadState,
    SoftState,
    StateRole,
    StepLocalMessage,
    StepPeerNotFound,
)

from tests.unit.raft.helpers import LOG, Cluster, new_node, new_storage


@pytest.mark.parametrize("t", [MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM])
def test_step_local_message_is_refused(t: MessageType) -> None:
    node = new_node(1, new_storage())
    with pytest.raises(StepLocalMessage):
        node.step(Message(type=t, from_=1, to=1))
    assert node.raft.role == StateRole.FOLLOWER
    assert node.raft.term == 0
    assert not node.has_ready()


@pytest.mark.parametrize(
    "t",
    [
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.READ_INDEX_RESP,
    ],
)
def test_step_response_from_unknown_peer_is_refused(t: MessageType) -> None:
    node = new_node(1, new_storage())
    with pytest.raises(StepPeerNotFound):
        node.step(Message(type=t, from_=9, to=1, term=0))


def test_step_request_from_unknown_peer_is_accepted() -> None:
    """Requests (not responses) from a node not in the configuration are
    stepped: a new node learns of the cluster from the leader's appends."""
    node = new_node(1, new_storage())
    node.step(Message(type=MessageType.HEARTBEAT, from_=9, to=1, term=5))
    assert node.raft.term == 5
    assert node.raft.leader_id == 9


def test_ready_twice_without_advance_raises() -> None:
    node = new_node(1, new_storage())
    node.campaign()
    node.ready()
    with pytest.raises(RaftInvariantError):
        node.ready()


def test_advance_with_a_foreign_ready_raises() -> None:
    node = new_node(1, new_storage())
    node.campaign()
    rd = node.ready()
    other = new_node(2, new_storage())
    other.campaign()
    with pytest.raises(RaftInvariantError):
        node.advance(other.ready())
    node.advance(rd)


def test_propose_without_leader_is_dropped() -> None:
    node = new_node(1, new_storage())
    with pytest.raises(ProposalDropped):
        node.propose(b"x")
    with pytest.raises(ProposalDropped):
        node.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    assert node.raft.raft_log.last_index() == 0
    assert not node.has_ready()


def test_propose_on_candidate_is_dropped() -> None:
    node = new_node(1, new_storage(), pre_vote=False)
    node.campaign()
    assert node.raft.role == StateRole.CANDIDATE
    with pytest.raises(ProposalDropped):
        node.propose(b"x")


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ConfigInvalid):
        RawNode(Config(id=0), new_storage(), rng=random.Random(0), logger=LOG)
    with pytest.raises(ConfigInvalid):
        RawNode(Config(id=1, election_ticks=1, heartbeat_ticks=1), new_storage(), rng=random.Random(0), logger=LOG)


def test_fresh_node_has_no_ready() -> None:
    node = new_node(1, new_storage())
    assert not node.has_ready()
    st = node.status()
    assert st.hard_state == HardState()
    assert st.soft_state == SoftState(leader_id=0, role=StateRole.FOLLOWER)
    assert st.progress == {}
    assert st.conf_state.voters == (1, 2, 3)


def test_single_node_ready_sequence() -> None:
    """A one-voter node elects itself through the Ready/advance protocol and
    commits its empty entry of the new term."""
    storage = new_storage(voters=(1,))
    node = new_node(1, storage)
    node.campaign()
    soft_leader_seen = False
    committed: list[Entry] = []
    for _ in range(10):
        if not node.has_ready():
            break
        rd = node.ready()
        if rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER:
            soft_leader_seen = True
            assert rd.soft_state == SoftState(leader_id=1, role=StateRole.LEADER)
        assert rd.messages == () and rd.messages_after_persist == ()
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        committed.extend(rd.committed_entries)
        node.advance(rd)
    assert not node.has_ready()
    assert soft_leader_seen
    assert committed == [Entry(term=1, index=1)]
    assert storage.hard_state == HardState(term=1, vote=1, commit=1)
    st = node.status()
    assert st.applied == 1
    assert st.progress[1].match == 1
    assert st.progress[1].next == 2


def test_ready_read_states_are_delivered_once() -> None:
    c = Cluster.new(ids=(1,))
    c.elect(1)
    c.stabilize()
    c.nodes[1].read_index(b"ctx")
    rd = c.take_ready(1)
    assert rd.read_states == (ReadState(index=1, request_ctx=b"ctx"),)
    c.nodes[1].advance(rd)
    assert not c.nodes[1].has_ready()


def test_status_of_leader_lists_progress() -> None:
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.stabilize()
    st = c.nodes[1].status()
    assert st.soft_state == SoftState(leader_id=1, role=StateRole.LEADER)
    assert st.hard_state == HardState(term=1, vote=1, commit=2)
    assert st.last_index == 2
    assert st.applied == 2
    assert sorted(st.progress) == [1, 2, 3]
    for nid in (1, 2, 3):
        assert st.progress[nid].match == 2
        assert st.progress[nid].next == 3
        assert st.progress[nid].is_learner is False
    assert st.progress[2].state == ProgressState.REPLICATE
    # Followers report no progress.
    assert c.nodes[2].status().progress == {}
    assert c.nodes[2].status().soft_state == SoftState(leader_id=1, role=StateRole.FOLLOWER)


def test_restart_with_applied_skips_applied_entries() -> None:
    """Config.applied: entries up to it are not handed out again."""
    storage = new_storage(
        voters=(1,),
        entries=[Entry(term=1, index=i, data=b"e%d" % i) for i in (1, 2, 3)],
        hard_state=HardState(term=1, vote=1, commit=3),
    )
    node = new_node(1, storage, applied=2)
    rd = node.ready()
    assert rd.committed_entries == (Entry(term=1, index=3, data=b"e3"),)
    assert rd.entries == ()
    node.advance(rd)
    assert node.status().applied == 3


def test_restart_from_storage_hands_out_committed_entries() -> None:
    storage = new_storage(
        voters=(1, 2, 3),
        entries=[Entry(term=1, index=1), Entry(term=1, index=2, data=b"foo")],
        hard_state=HardState(term=1, vote=1, commit=1),
    )
    node = new_node(1, storage)
    assert node.raft.term == 1 and node.raft.vote == 1
    rd = node.ready()
    assert rd.hard_state is None
    assert rd.committed_entries == (Entry(term=1, index=1),)
    assert rd.entries == ()  # already durable
    assert rd.must_sync is False
    node.advance(rd)
    assert not node.has_ready()


def test_messages_are_handed_out_once() -> None:
    c = Cluster.new()
    c.elect(1)
    c.tick(1)
    rd = c.take_ready(1)
    assert len([m for m in rd.messages if m.type == MessageType.HEARTBEAT]) == 2
    c.nodes[1].advance(rd)
    assert not c.nodes[1].has_ready()
