"""Tests that check the core against the Raft paper ("In Search of an
Understandable Consensus Algorithm", extended version), section by section,
as etcd's raft_paper_test.go does. Each docstring names the section.

The node under test is driven directly: messages from its peers are
fabricated, and its Readies are drained into its MemoryStorage.
"""

from __future__ import annotations

import pytest

from raft.core import (
    Entry,
    HardState,
    Message,
    MessageType,
    StateRole,
)

from tests.unit.raft.helpers import drain, force_leader, new_node, new_storage


def _follower(node_id=1, voters=(1, 2, 3), entries=(), hs=None, **kw):
    s = new_storage(voters, entries=entries, hard_state=hs)
    return new_node(node_id, s, **kw), s


def _candidate(voters=(1, 2, 3), **kw):
    node, s = _follower(voters=voters, pre_vote=False, **kw)
    node.campaign()
    drain(node, s)
    assert node.raft.role == StateRole.CANDIDATE
    return node, s


def _leader(voters=(1, 2, 3), entries=(), hs=None, **kw):
    node, s = _follower(voters=voters, entries=entries, hs=hs, **kw)
    force_leader(node, s, voters)
    return node, s


# -- §5.1 ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["follower", "pre_candidate", "candidate", "leader"])
def test_update_term_from_message(role: str) -> None:
    """Reference: §5.1. If one server's current term is smaller than the
    other's, it updates its current term to the larger value; a candidate or
    leader that discovers its term is out of date reverts to follower."""
    if role == "follower":
        node, s = _follower()
    elif role == "pre_candidate":
        node, s = _follower()
        node.campaign()
        assert node.raft.role == StateRole.PRE_CANDIDATE
    elif role == "candidate":
        node, s = _candidate()
    else:
        node, s = _leader()
    node.step(Message(type=MessageType.APP, from_=2, to=1, term=5))
    assert node.raft.term == 5
    assert node.raft.role == StateRole.FOLLOWER
    assert node.raft.leader_id == 2


def test_reject_stale_term_message() -> None:
    """Reference: §5.1. If a server receives a request with a stale term
    number, it rejects the request: the log and state do not change."""
    node, s = _follower(entries=[Entry(1, 1), Entry(2, 2)], hs=HardState(term=2))
    node.step(
        Message(type=MessageType.APP, from_=2, to=1, term=1, log_term=2, index=2, entries=(Entry(1, 3, data=b"x"),))
    )
    assert node.raft.term == 2
    assert node.raft.raft_log.last_index() == 2
    assert node.raft.leader_id == 0
    d = drain(node, s)
    assert all(not rd.entries for rd in d.readies)
    # A stale vote request is not granted either.
    node.step(Message(type=MessageType.VOTE, from_=3, to=1, term=1, log_term=2, index=2))
    d = drain(node, s)
    assert [m for m in d.messages if m.type == MessageType.VOTE_RESP and not m.reject] == []
    assert node.raft.vote == 0


# -- §5.2 ------------------------------------------------------------------------


def test_start_as_follower() -> None:
    """Reference: §5.2. When servers start up, they begin as followers."""
    node, _ = _follower()
    assert node.raft.role == StateRole.FOLLOWER
    assert node.raft.term == 0
    assert node.raft.leader_id == 0


def test_leader_bcast_beat() -> None:
    """Reference: §5.2. Leaders send periodic heartbeats (AppendEntries that
    carry no entries) to all followers to maintain their authority."""
    node, s = _leader(heartbeat_ticks=1)
    for _ in range(3):
        node.tick()
        d = drain(node, s)
        beats = d.of(MessageType.HEARTBEAT)
        assert sorted(m.to for m in beats) == [2, 3]
        assert all(m.term == 1 and m.entries == () for m in beats)


@pytest.mark.parametrize("role", ["follower", "candidate"])
def test_nonleader_start_election(role: str) -> None:
    """Reference: §5.2. If a follower receives no communication over the
    election timeout, it begins an election: it increments its term, votes
    for itself and issues RequestVote RPCs to every other server. A candidate
    whose election times out starts a new election the same way."""
    et = 10
    if role == "follower":
        node, s = _follower(pre_vote=False, election_ticks=et)
        want_term = 1
    else:
        node, s = _candidate(election_ticks=et)
        want_term = 2
    for _ in range(2 * et):
        node.tick()
    d = drain(node, s)
    assert node.raft.term == want_term
    assert node.raft.role == StateRole.CANDIDATE
    assert node.raft.vote == 1
    votes = d.of(MessageType.VOTE)
    assert sorted(m.to for m in votes) == [2, 3]
    assert all(m.term == want_term for m in votes)


def test_vote_request_carries_last_log_position() -> None:
    """Reference: §5.2/§5.4.1. RequestVote carries the candidate's last log
    index and term."""
    node, s = _follower(
        entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3)], hs=HardState(term=2), pre_vote=False
    )
    node.campaign()
    d = drain(node, s)
    votes = d.of(MessageType.VOTE)
    assert sorted((m.to, m.term, m.log_term, m.index) for m in votes) == [(2, 3, 2, 3), (3, 3, 2, 3)]


@pytest.mark.parametrize(
    ("size", "votes", "want"),
    [
        (1, {}, StateRole.LEADER),
        (3, {2: True, 3: True}, StateRole.LEADER),
        (3, {2: True}, StateRole.LEADER),
        (5, {2: True, 3: True, 4: True, 5: True}, StateRole.LEADER),
        (5, {2: True, 3: True, 4: True}, StateRole.LEADER),
        (5, {2: True, 3: True}, StateRole.LEADER),
        # Return to follower when a majority denies the vote.
        (3, {2: False, 3: False}, StateRole.FOLLOWER),
        (5, {2: False, 3: False, 4: False, 5: False}, StateRole.FOLLOWER),
        (5, {2: True, 3: False, 4: False, 5: False}, StateRole.FOLLOWER),
        # Stay candidate without a majority either way.
        (3, {}, StateRole.CANDIDATE),
        (5, {2: True}, StateRole.CANDIDATE),
        (5, {2: False, 3: False}, StateRole.CANDIDATE),
        (5, {}, StateRole.CANDIDATE),
    ],
)
def test_leader_election_in_one_round(size: int, votes: dict[int, bool], want: StateRole) -> None:
    """Reference: §5.2. A candidate wins an election if it receives votes
    from a majority of the servers in the full cluster for the same term."""
    voters = tuple(range(1, size + 1))
    node, s = _follower(voters=voters, pre_vote=False)
    node.campaign()
    drain(node, s)  # persists and counts its own vote
    for frm, granted in votes.items():
        node.step(Message(type=MessageType.VOTE_RESP, from_=frm, to=1, term=1, reject=not granted))
    assert node.raft.role == want
    assert node.raft.term == 1


@pytest.mark.parametrize(
    ("vote", "candidate", "reject"),
    [
        (0, 2, False),
        (0, 3, False),
        (2, 2, False),
        (3, 3, False),
        (2, 3, True),
        (3, 2, True),
    ],
)
def test_follower_vote(vote: int, candidate: int, reject: bool) -> None:
    """Reference: §5.2. Each server votes for at most one candidate in a
    given term, on a first-come-first-served basis."""
    node, s = _follower(hs=HardState(term=1, vote=vote))
    node.step(Message(type=MessageType.VOTE, from_=candidate, to=1, term=1))
    d = drain(node, s)
    resp = d.of(MessageType.VOTE_RESP)
    assert [(m.to, m.term, m.reject) for m in resp] == [(candidate, 1, reject)]
    assert node.raft.vote == (vote or candidate)
    assert s.hard_state.vote == (vote or candidate)


@pytest.mark.parametrize("term", [1, 2])
def test_candidate_fallback(term: int) -> None:
    """Reference: §5.2. A candidate that receives an AppendEntries from a
    leader whose term is at least as large as its own recognizes the leader
    and returns to follower state."""
    node, s = _candidate()
    assert node.raft.term == 1
    node.step(Message(type=MessageType.APP, from_=2, to=1, term=term))
    assert node.raft.role == StateRole.FOLLOWER
    assert node.raft.term == term
    assert node.raft.leader_id == 2


# -- §5.3 ------------------------------------------------------------------------


def test_leader_start_replication() -> None:
    """Reference: §5.3. The leader appends the command to its log as a new
    entry, then issues AppendEntries RPCs in parallel to each of the other
    servers, carrying the preceding entry's index and term."""
    node, s = _leader()
    li = node.raft.raft_log.last_index()
    # Bring both followers into replicate state at li.
    for f in (2, 3):
        node.step(Message(type=MessageType.APP_RESP, from_=f, to=1, term=1, index=li))
    drain(node, s)
    node.propose(b"some data")
    d = drain(node, s)
    apps = sorted(d.of(MessageType.APP), key=lambda m: m.to)
    want = (Entry(term=1, index=li + 1, data=b"some data"),)
    assert [(m.to, m.term, m.log_term, m.index, m.entries, m.commit) for m in apps] == [
        (2, 1, 1, li, want, li),
        (3, 1, 1, li, want, li),
    ]
    assert s.entries(li + 1, li + 2) == list(want)


def test_leader_commit_entry() -> None:
    """Reference: §5.3. A log entry is committed once the leader that created
    it has replicated it on a majority; the leader applies it and includes
    the commit index in future AppendEntries."""
    node, s = _leader()
    li = node.raft.raft_log.last_index()
    for f in (2, 3):
        node.step(Message(type=MessageType.APP_RESP, from_=f, to=1, term=1, index=li))
    drain(node, s)
    node.propose(b"some data")
    drain(node, s)
    node.step(Message(type=MessageType.APP_RESP, from_=2, to=1, term=1, index=li + 1))
    assert node.raft.raft_log.committed == li + 1
    d = drain(node, s)
    assert Entry(term=1, index=li + 1, data=b"some data") in d.committed
    apps = d.of(MessageType.APP)
    assert apps, "leader did not tell followers the new commit index"
    assert all(m.commit == li + 1 for m in apps)


@pytest.mark.parametrize(
    ("size", "acceptors", "committed"),
    [
        (1, (), True),
        (3, (), False),
        (3, (2,), True),
        (3, (2, 3), True),
        (5, (), False),
        (5, (2,), False),
        (5, (2, 3), True),
        (5, (2, 3, 4), True),
        (5, (2, 3, 4, 5), True),
    ],
)
def test_leader_acknowledge_commit(size: int, acceptors: tuple[int, ...], committed: bool) -> None:
    """Reference: §5.3. The leader commits an entry once a majority (counting
    itself) has it."""
    voters = tuple(range(1, size + 1))
    node, s = _leader(voters=voters)
    li = node.raft.raft_log.last_index()
    node.propose(b"some data")
    drain(node, s)
    for a in acceptors:
        node.step(Message(type=MessageType.APP_RESP, from_=a, to=1, term=1, index=li + 1))
    assert (node.raft.raft_log.committed > li) is committed


@pytest.mark.parametrize(
    "prior",
    [
        [],
        [Entry(2, 1)],
        [Entry(1, 1), Entry(2, 2)],
        [Entry(1, 1)],
    ],
)
def test_leader_commit_preceding_entries(prior: list[Entry]) -> None:
    """Reference: §5.3. When the leader commits an entry of its term, it also
    commits all preceding entries in its log, including those created by
    previous leaders."""
    node, s = _leader(entries=prior, hs=HardState(term=2))
    assert node.raft.term == 3
    li = node.raft.raft_log.last_index()
    node.propose(b"some data")
    drain(node, s)
    for f in (2, 3):
        node.step(Message(type=MessageType.APP_RESP, from_=f, to=1, term=3, index=li + 1))
    d = drain(node, s)
    want = prior + [Entry(3, len(prior) + 1), Entry(3, len(prior) + 2, data=b"some data")]
    assert d.committed == want


@pytest.mark.parametrize(
    ("entries", "commit"),
    [
        ([Entry(1, 1, data=b"some data")], 1),
        ([Entry(1, 1, data=b"some data"), Entry(1, 2, data=b"some data2")], 2),
        ([Entry(1, 1, data=b"some data2"), Entry(1, 2, data=b"some data")], 2),
        ([Entry(1, 1, data=b"some data"), Entry(1, 2, data=b"some data2")], 1),
    ],
)
def test_follower_commit_entry(entries: list[Entry], commit: int) -> None:
    """Reference: §5.3. Once a follower learns that a log entry is committed
    (the leader's commit index), it applies the entry in log order."""
    node, s = _follower(hs=HardState(term=1))
    node.step(Message(type=MessageType.APP, from_=2, to=1, term=1, log_term=0, index=0, commit=commit, entries=tuple(entries)))
    assert node.raft.raft_log.committed == commit
    d = drain(node, s)
    assert d.committed == entries[:commit]


@pytest.mark.parametrize(
    ("log_term", "index", "want_index", "reject", "hint", "hint_term"),
    [
        # Match with committed entries.
        (0, 0, 1, False, 0, 0),
        (1, 1, 1, False, 0, 0),
        # Match with uncommitted entries.
        (2, 2, 2, False, 0, 0),
        # Mismatch with an existing entry: hint the last index with a term <= log_term.
        (1, 2, 2, True, 1, 1),
        # A nonexistent entry: hint the last index.
        (3, 3, 3, True, 2, 2),
    ],
)
def test_follower_check_append(
    log_term: int, index: int, want_index: int, reject: bool, hint: int, hint_term: int
) -> None:
    """Reference: §5.3. When sending an AppendEntries RPC, the leader includes
    the index and term of the entry immediately preceding the new entries. If
    the follower does not find an entry in its log with the same index and
    term, it refuses the new entries."""
    node, s = _follower(entries=[Entry(1, 1), Entry(2, 2)], hs=HardState(term=2, commit=1))
    node.step(Message(type=MessageType.APP, from_=2, to=1, term=2, log_term=log_term, index=index))
    d = drain(node, s)
    resp = d.of(MessageType.APP_RESP)
    assert len(resp) == 1
    m = resp[0]
    assert (m.to, m.term, m.index, m.reject) == (2, 2, want_index, reject)
    if reject:
        assert (m.reject_hint, m.log_term) == (hint, hint_term)


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want_log", "want_unstable"),
    [
        (2, 2, [Entry(3, 3)], [Entry(1, 1), Entry(2, 2), Entry(3, 3)], [Entry(3, 3)]),
        (1, 1, [Entry(3, 2), Entry(4, 3)], [Entry(1, 1), Entry(3, 2), Entry(4, 3)], [Entry(3, 2), Entry(4, 3)]),
        (0, 0, [Entry(1, 1)], [Entry(1, 1), Entry(2, 2)], []),
        (0, 0, [Entry(3, 1)], [Entry(3, 1)], [Entry(3, 1)]),
    ],
)
def test_follower_append_entries(
    index: int, log_term: int, new: list[Entry], want_log: list[Entry], want_unstable: list[Entry]
) -> None:
    """Reference: §5.3. If an existing entry conflicts with a new one (same
    index, different terms), the follower deletes the existing entry and all
    that follow it, then appends any new entries not already in the log."""
    node, s = _follower(entries=[Entry(1, 1), Entry(2, 2)], hs=HardState(term=2))
    node.step(Message(type=MessageType.APP, from_=2, to=1, term=4, log_term=log_term, index=index, entries=tuple(new)))
    assert node.raft.raft_log.all_entries() == want_log
    rd = node.ready()
    assert list(rd.entries) == want_unstable
    s.append(rd.entries)
    if rd.hard_state is not None:
        s.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert s.entries(1, s.last_index() + 1) == want_log


# -- §5.4 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "log_term", "index", "reject"),
    [
        # Same last term: the longer log wins ties; equal logs grant.
        ([Entry(1, 1)], 1, 1, False),
        ([Entry(1, 1)], 1, 2, False),
        ([Entry(1, 1), Entry(1, 2)], 1, 1, True),
        # The candidate has a higher last term.
        ([Entry(1, 1)], 2, 1, False),
        ([Entry(1, 1)], 2, 2, False),
        ([Entry(1, 1), Entry(1, 2)], 2, 1, False),
        # The voter has a higher last term.
        ([Entry(2, 1)], 1, 1, True),
        ([Entry(2, 1)], 1, 2, True),
        ([Entry(2, 1), Entry(1, 2)], 1, 1, True),
    ],
)
def test_voter_up_to_date_check(log: list[Entry], log_term: int, index: int, reject: bool) -> None:
    """Reference: §5.4.1. The voter denies its vote if its own log is more
    up-to-date than that of the candidate: the log with the later last term
    is more up-to-date; with equal last terms, the longer log is."""
    node, s = _follower(entries=log, hs=HardState(term=2))
    node.step(Message(type=MessageType.VOTE, from_=2, to=1, term=3, log_term=log_term, index=index))
    d = drain(node, s)
    resp = d.of(MessageType.VOTE_RESP)
    assert [(m.to, m.term, m.reject) for m in resp] == [(2, 3, reject)]
    assert node.raft.term == 3
    assert node.raft.vote == (0 if reject else 2)


@pytest.mark.parametrize(("ack_index", "want_commit"), [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_log_from_current_term(ack_index: int, want_commit: int) -> None:
    """Reference: §5.4.2. Raft never commits log entries from previous terms
    by counting replicas; only entries from the leader's current term are
    committed that way (earlier ones are then committed indirectly)."""
    node, s = _follower(voters=(1, 2), entries=[Entry(1, 1), Entry(2, 2)], hs=HardState(term=2))
    force_leader(node, s, (1, 2))
    assert node.raft.term == 3
    assert node.raft.raft_log.last_index() == 3  # the empty entry of term 3
    node.step(Message(type=MessageType.APP_RESP, from_=2, to=1, term=3, index=ack_index))
    assert node.raft.raft_log.committed == want_commit
