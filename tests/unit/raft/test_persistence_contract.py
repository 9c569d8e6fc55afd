"""The durability contract between the core and its host.

Messages that acknowledge state (append acks, vote grants) may leave only
after the host persisted that state: they travel in
``Ready.messages_after_persist``, never in ``Ready.messages``. A node's own
acknowledgements (a candidate's own vote, a leader's own match index) enter
the core only inside ``advance()``, after the persist.

Reference: Raft thesis §10.2.1 (the leader writes its log in parallel with
replication, counting itself only once its own write is durable); etcd's
``msgsAfterAppend`` / ``stepsOnAdvance``.
"""

from __future__ import annotations

from raft.core import Entry, HardState, MessageType, StateRole

from tests.unit.raft.helpers import Cluster


def _elected(ids=(1, 2, 3), **kw) -> Cluster:
    c = Cluster.new(ids, **kw)
    c.elect(1)
    return c


def test_follower_append_ack_is_sent_only_after_persist() -> None:
    """Reference: §5.3, thesis §10.2.1. A follower's APP_RESP for new entries
    is in messages_after_persist of the Ready that holds those entries."""
    c = _elected()
    last = c.nodes[1].raft.raft_log.last_index()
    c.nodes[1].propose(b"x")
    c.handle_ready(1)  # sends the APPs
    app = [m for m in c.queue if m.type == MessageType.APP and m.to == 2]
    assert len(app) == 1 and app[0].entries == (Entry(term=1, index=last + 1, data=b"x"),)
    c.queue.clear()
    c.nodes[2].step(app[0])
    rd = c.take_ready(2)
    assert rd.entries == (Entry(term=1, index=last + 1, data=b"x"),)
    assert rd.must_sync is True
    assert [m.type for m in rd.messages] == []
    assert [(m.type, m.to, m.index, m.reject) for m in rd.messages_after_persist] == [
        (MessageType.APP_RESP, 1, last + 1, False)
    ]
    c.nodes[2].advance(rd)


def test_vote_grant_is_sent_only_after_persist() -> None:
    """Reference: §5.2 (a server votes at most once per term: the vote must be
    durable before the candidate learns of it)."""
    c = Cluster.new(pre_vote=False)
    c.campaign(1)
    c.handle_ready(1)
    vote = [m for m in c.queue if m.type == MessageType.VOTE and m.to == 2]
    assert len(vote) == 1
    c.queue.clear()
    c.nodes[2].step(vote[0])
    rd = c.take_ready(2)
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.must_sync is True
    assert [m for m in rd.messages if m.type == MessageType.VOTE_RESP] == []
    assert [(m.type, m.to, m.term, m.reject) for m in rd.messages_after_persist] == [
        (MessageType.VOTE_RESP, 1, 1, False)
    ]
    c.nodes[2].advance(rd)


def test_self_addressed_messages_never_appear_in_a_ready() -> None:
    """Own votes and the leader's own append acks are stepped in advance()."""
    c = Cluster.new()
    c.elect(1)
    c.nodes[1].propose(b"a")
    c.stabilize()
    for node_id, readies in c.readies.items():
        for rd in readies:
            assert all(m.to != node_id for m in rd.messages), rd.messages
            assert all(m.to != node_id for m in rd.messages_after_persist), rd.messages_after_persist


def test_single_node_commits_only_after_advance() -> None:
    """Reference: thesis §10.2.1. A single-node leader counts its own entry
    only once the Ready carrying it was persisted and advanced."""
    c = Cluster.new(ids=(1,))
    c.elect(1)
    node = c.nodes[1]
    committed_before = node.raft.raft_log.committed
    assert committed_before == node.raft.raft_log.last_index() == 1
    node.propose(b"x")
    rd = node.ready()
    assert rd.entries == (Entry(term=1, index=2, data=b"x"),)
    assert rd.committed_entries == ()
    assert rd.must_sync is True
    assert node.raft.raft_log.committed == 1
    c.persist(1, rd)
    node.advance(rd)
    assert node.raft.raft_log.committed == 2
    rd2 = node.ready()
    assert rd2.committed_entries == (Entry(term=1, index=2, data=b"x"),)
    assert rd2.hard_state == HardState(term=1, vote=1, commit=2)
    assert rd2.entries == ()
    assert rd2.must_sync is False
    node.advance(rd2)


def test_leader_does_not_count_itself_before_advance() -> None:
    """Reference: thesis §10.2.1. With voters {1,2,3}, one follower ack is a
    majority only together with the leader's own durable copy: until the
    leader advances the Ready holding the entry, the entry is not committed."""
    c = _elected()
    leader = c.nodes[1]
    leader.propose(b"x")
    rd = c.take_ready(1)  # held: not persisted, not advanced
    idx = rd.entries[-1].index
    assert rd.entries[-1].data == b"x"
    c.send(rd.messages)
    c.queue = type(c.queue)(m for m in c.queue if m.to == 2)  # only node 2 gets it
    while c.queue or c.nodes[2].has_ready():
        c.deliver_one()
        c.handle_ready(2)
    assert leader.raft.trk.progress[2].match == idx
    assert leader.raft.trk.progress[1].match < idx
    assert leader.raft.raft_log.committed == idx - 1
    c.persist(1, rd)
    c.send(rd.messages_after_persist)
    leader.advance(rd)
    assert leader.raft.trk.progress[1].match == idx
    assert leader.raft.raft_log.committed == idx


def test_candidate_counts_its_own_vote_only_after_advance() -> None:
    """Reference: §5.2. Without its own (persisted) vote, one grant out of
    three voters does not make a candidate leader."""
    c = Cluster.new(pre_vote=False)
    c.campaign(1)
    rd = c.take_ready(1)  # holds the vote for itself: not persisted yet
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert rd.must_sync is True
    c.send(rd.messages)
    c.queue = type(c.queue)(m for m in c.queue if m.to == 2)
    while c.queue or c.nodes[2].has_ready():
        c.deliver_one()
        c.handle_ready(2)
    assert c.nodes[1].raft.role == StateRole.CANDIDATE
    c.persist(1, rd)
    c.nodes[1].advance(rd)
    assert c.nodes[1].raft.role == StateRole.LEADER
    assert c.nodes[1].raft.term == 1


def test_pre_candidate_counts_its_own_pre_vote_only_after_advance() -> None:
    """Raft thesis §9.6: a pre-candidate needs a majority including itself."""
    c = Cluster.new()
    c.campaign(1)
    assert c.nodes[1].raft.role == StateRole.PRE_CANDIDATE
    rd = c.take_ready(1)
    # Pre-vote does not touch the term or the vote.
    assert rd.hard_state is None
    pre = [m for m in rd.messages if m.type == MessageType.PRE_VOTE]
    assert sorted(m.to for m in pre) == [2, 3]
    assert all(m.term == 1 for m in pre)
    assert c.nodes[1].raft.term == 0
    c.send(rd.messages)
    c.queue = type(c.queue)(m for m in c.queue if m.to == 2)
    while c.queue or c.nodes[2].has_ready():
        c.deliver_one()
        c.handle_ready(2)
    assert c.nodes[1].raft.role == StateRole.PRE_CANDIDATE
    c.nodes[1].advance(rd)
    assert c.nodes[1].raft.role == StateRole.CANDIDATE
    assert c.nodes[1].raft.term == 1


def test_must_sync_only_when_entries_term_or_vote_change() -> None:
    """A Ready whose hard state changes only in commit, or that holds only
    messages, needs no sync; one with entries or a new term/vote does."""
    c = _elected()
    c.nodes[1].propose(b"x")
    rd = c.handle_ready(1)
    assert rd is not None and rd.entries and rd.must_sync is True
    c.deliver_one(); c.deliver_one()  # APPs to 2 and 3
    rd2 = c.handle_ready(2)
    assert rd2 is not None and rd2.entries and rd2.must_sync is True
    c.stabilize()
    # Find follower Readies that only advanced commit.
    commit_only = [
        rd
        for rd in c.readies[2]
        if not rd.entries and rd.hard_state is not None and rd.committed_entries
    ]
    assert commit_only, "follower never got a commit-only Ready"
    assert all(rd.must_sync is False for rd in commit_only)
    # A heartbeat-only Ready on the leader.
    c.tick(1, 1)
    rd3 = c.take_ready(1)
    assert [m.type for m in rd3.messages] == [MessageType.HEARTBEAT, MessageType.HEARTBEAT]
    assert rd3.entries == () and rd3.hard_state is None
    assert rd3.must_sync is False
    c.nodes[1].advance(rd3)
    # A term change alone must be synced.
    c2 = Cluster.new(pre_vote=False)
    c2.campaign(2)
    c2.handle_ready(2)
    vote_to_3 = [m for m in c2.queue if m.to == 3][0]
    c2.nodes[3].step(vote_to_3)
    rd4 = c2.take_ready(3)
    assert rd4.entries == () and rd4.hard_state is not None and rd4.hard_state.term == 1
    assert rd4.must_sync is True


def test_restart_restores_term_vote_and_commit() -> None:
    """Reference: §5 (Figure 2, persistent state): currentTerm, votedFor and
    the log survive a restart, and the node resumes from them."""
    c = _elected()
    for d in (b"a", b"b"):
        c.nodes[1].propose(d)
    c.stabilize()
    hs = c.storages[2].hard_state
    assert hs.term == 1 and hs.vote == 1
    last = c.nodes[2].raft.raft_log.last_index()
    c.crash(2)
    n2 = c.restart(2)
    assert n2.raft.term == 1
    assert n2.raft.vote == 1
    assert n2.raft.raft_log.last_index() == last
    assert n2.raft.raft_log.committed == hs.commit
    assert n2.raft.role == StateRole.FOLLOWER
    # Re-applies its committed entries (MemoryStorage keeps no applied index).
    c.stabilize()
    assert c.applied[2] == [b"a", b"b"]
