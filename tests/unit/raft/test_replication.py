"""Log replication: commit on a majority, conflict repair (Figure 7), fast
log back-tracking, pipelining with an in-flight window, and the commitment
rule of Figure 8.

Reference: §5.3 (log replication), §5.4.2 (committing entries from previous
terms), thesis §10.2 (pipelining), §5.3's "the leader can decrement
nextIndex by term" optimisation.
"""

from __future__ import annotations

import pytest

from raft.core import Entry, EntryKind, HardState, MessageType, ProgressState, StateRole

from raft.testing.network import SimNetwork
from tests.unit.raft.helpers import Cluster, ents, new_storage


def _logs_equal(net: SimNetwork, ids=(1, 2, 3)) -> None:
    logs = [net.log_entries(i) for i in ids]
    assert all(log == logs[0] for log in logs), logs


def test_leader_appends_and_commits_on_majority() -> None:
    """Reference: §5.3. The leader replicates a new entry to all followers;
    once a majority has it, it is committed and applied everywhere."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.propose(1, b"a")
    net.propose(1, b"b")
    net.stabilize()
    for i in (1, 2, 3):
        assert net.applied[i] == [b"a", b"b"]
        assert net.nodes[i].raft.raft_log.committed == 3
    _logs_equal(net)
    assert net.log_entries(1) == [Entry(1, 1), Entry(1, 2, data=b"a"), Entry(1, 3, data=b"b")]


def test_commit_with_one_follower_down() -> None:
    """Reference: §5.3. A majority (leader + one of two followers) commits."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(3)
    net.propose(1, b"a")
    net.stabilize()
    assert net.applied[1] == [b"a"] and net.applied[2] == [b"a"]
    assert net.applied[3] == []
    net.heal()
    net.tick(1)  # heartbeat: 3 answers and is caught up
    net.stabilize()
    assert net.applied[3] == [b"a"]
    _logs_equal(net)


def test_no_commit_without_majority() -> None:
    """Reference: §5.3. With both followers unreachable the entry stays
    uncommitted, on the leader's log only, until a majority has it."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"a")
    net.stabilize()
    r1 = net.nodes[1].raft
    assert r1.raft_log.last_index() == 2
    assert r1.raft_log.committed == 1
    assert net.applied[1] == []
    net.heal()
    net.tick(1)
    net.stabilize()
    assert r1.raft_log.committed == 2
    assert [net.applied[i] for i in (1, 2, 3)] == [[b"a"]] * 3


def test_leader_starts_its_term_with_an_empty_entry() -> None:
    """Reference: §8 / thesis §6.4: a new leader appends an empty (no-op)
    entry of its term at the start of its term."""
    net = SimNetwork.new(ids=(1, 2, 3))
    net.campaign(1)
    net.propose(1, b"a")
    net.stabilize()
    assert net.log_entries(1)[0] == Entry(term=1, index=1, kind=EntryKind.NORMAL, data=b"")
    net.crash(1)
    for _ in range(60):
        net.tick_all()
        net.stabilize()
        if net.leader() is not None:
            break
    lead = net.leader()
    assert lead in (2, 3)
    term = net.nodes[lead].raft.term
    assert term == 2
    last = net.log_entries(lead)[-1]
    assert last == Entry(term=2, index=3, kind=EntryKind.NORMAL, data=b"")
    for i in (2, 3):
        assert net.nodes[i].raft.raft_log.committed == 3


# -- Figure 7 ----------------------------------------------------------------------

FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_leader_repairs_follower_log_figure7(case: str) -> None:
    """Reference: §5.3, Figure 7. Whatever the follower's log (missing
    entries, extra uncommitted entries, or both), the leader forces it to
    duplicate its own: conflicting entries are overwritten."""
    lead_log = ents(1, *FIG7_LEADER)
    c = Cluster(
        {
            1: new_storage(entries=lead_log, hard_state=HardState(term=8, commit=len(lead_log))),
            2: new_storage(entries=ents(1, *FIG7_FOLLOWERS[case]), hard_state=HardState(term=7)),
            3: new_storage(hard_state=HardState(term=7)),
        }
    )
    c.elect(1)
    assert c.nodes[1].raft.term == 9
    c.nodes[1].propose(b"new")
    c.stabilize()
    want = FIG7_LEADER + [9, 9]
    assert c.log_terms(1) == want
    assert c.log_terms(2) == want
    assert c.nodes[2].raft.raft_log.all_entries() == c.nodes[1].raft.raft_log.all_entries()
    assert c.nodes[2].raft.raft_log.committed == len(want)
    s2 = c.storages[2]
    assert [e.term for e in s2.entries(1, s2.last_index() + 1)] == want
    assert c.applied[2] == c.applied[1]
    assert c.applied[1][-1] == b"new"


# -- fast back-tracking -----------------------------------------------------------


def _rejections(c: Cluster, frm: int) -> list:
    return [m for m in c.sent_of(MessageType.APP_RESP, from_=frm) if m.reject]


def test_fast_backtracking_over_conflicting_terms() -> None:
    """Reference: §5.3 (end): when rejecting, the follower names the term of
    the conflicting entry and the first index it stores for that term, so
    the leader skips a whole term per round trip: a follower with 100
    conflicting entries is repaired in O(terms) rejections, not O(entries)."""
    common = [1, 1, 1]
    lead = ents(1, *common, *[3] * 100)
    foll = ents(1, *common, *[2] * 100)
    c = Cluster(
        {
            1: new_storage(entries=lead, hard_state=HardState(term=3, commit=3)),
            2: new_storage(entries=foll, hard_state=HardState(term=2, commit=3)),
            3: new_storage(entries=lead, hard_state=HardState(term=3, commit=3)),
        }
    )
    c.elect(1)
    c.nodes[1].propose(b"x")
    c.stabilize()
    assert c.log_terms(2) == c.log_terms(1) == common + [3] * 100 + [4, 4]
    assert len(_rejections(c, 2)) <= 3
    assert len(c.sent_of(MessageType.APP, from_=1, to=2)) <= 6


def test_fast_backtracking_for_a_short_follower_log() -> None:
    """Reference: §5.3. A follower missing many entries hints its last index,
    so one rejection suffices to find where its log ends."""
    lead = ents(1, *[1] * 100)
    c = Cluster(
        {
            1: new_storage(entries=lead, hard_state=HardState(term=1, commit=100)),
            2: new_storage(entries=ents(1, 1, 1), hard_state=HardState(term=1, commit=2)),
            3: new_storage(entries=lead, hard_state=HardState(term=1, commit=100)),
        }
    )
    c.elect(1)
    c.stabilize()
    assert c.log_terms(2) == [1] * 100 + [2]
    rej = _rejections(c, 2)
    assert len(rej) == 1
    assert rej[0].reject_hint == 2


# -- pipelining and flow control ---------------------------------------------------


def test_pipelining_bounded_by_max_inflight() -> None:
    """Thesis §10.2.1-2: in REPLICATE state the leader sends new appends
    without waiting for acknowledgements, up to max_inflight_msgs unacked
    messages per follower; acks reopen the window."""
    c = Cluster.new(max_inflight_msgs=4)
    c.elect(1)
    leader = c.nodes[1]
    assert leader.raft.trk.progress[2].state == ProgressState.REPLICATE
    before = len(c.sent)
    for k in range(10):
        leader.propose(b"p%d" % k)
        c.handle_ready(1)  # sends; nothing is delivered
    apps = [m for m in c.sent[before:] if m.type == MessageType.APP and m.to == 2]
    assert len(apps) == 4
    first = apps[0].index
    assert [m.index for m in apps] == [first, first + 1, first + 2, first + 3]
    assert all(len(m.entries) == 1 for m in apps)
    pr = leader.raft.trk.progress[2]
    assert pr.inflights.count() == 4
    assert pr.inflights.full()
    c.stabilize()
    assert [c.applied[i] for i in (1, 2, 3)] == [[b"p%d" % k for k in range(10)]] * 3
    assert leader.raft.trk.progress[2].inflights.count() == 0


def test_probe_state_sends_one_append_until_response() -> None:
    """etcd flow control: a follower in PROBE state gets at most one append
    in flight until it answers."""
    c = Cluster.new()
    c.campaign(1)
    while c.nodes[1].raft.role != StateRole.LEADER:
        for i in (1, 2, 3):
            c.handle_ready(i)
        c.deliver_one()
    assert c.nodes[1].raft.trk.progress[2].state == ProgressState.PROBE
    c.queue.clear()  # the vote traffic left is irrelevant
    before = len(c.sent)
    c.handle_ready(1)  # the empty entry's append
    for k in range(5):
        c.nodes[1].propose(b"p%d" % k)
        c.handle_ready(1)
    apps = [m for m in c.sent[before:] if m.type == MessageType.APP and m.to == 2]
    assert len(apps) == 1
    assert c.nodes[1].raft.trk.progress[2].state == ProgressState.PROBE


# -- Figure 8 ------------------------------------------------------------------------


def test_figure8_previous_term_entry_not_committed_by_counting_replicas() -> None:
    """Reference: §5.4.2, Figure 8. A new leader (term 3) holding an
    uncommitted entry of term 2 replicates it to a majority; it is still not
    committed by that count. It is committed only once an entry of the
    current term (the leader's empty entry) is on a majority."""
    c = Cluster(
        {
            1: new_storage(entries=ents(1, 1, 2), hard_state=HardState(term=2, vote=1, commit=1)),
            2: new_storage(entries=ents(1, 1), hard_state=HardState(term=2, commit=1)),
            3: new_storage(entries=ents(1, 1), hard_state=HardState(term=2, commit=1)),
        },
        max_size_per_msg=1,  # one entry per append, so entry 2 travels alone
    )
    c.campaign(1)
    leader = c.nodes[1]
    observed = False
    for _ in range(10_000):
        for i in (1, 2, 3):
            c.handle_ready(i)
        m = c.deliver_one()
        if m is None:
            break
        r = leader.raft
        if (
            m.type == MessageType.APP_RESP
            and m.to == 1
            and not m.reject
            and m.index == 2
            and max(r.trk.progress[f].match for f in (2, 3)) == 2  # no follower has entry 3 yet
        ):
            assert r.role == StateRole.LEADER and r.term == 3
            assert r.raft_log.term(2) == 2
            # Entry 2 is now on a majority the leader knows of ({1, m.from_}) ...
            assert r.trk.progress[m.from_].match == 2
            assert r.trk.progress[1].match == 3
            # ... yet it is not committed: it is not from the current term.
            assert r.raft_log.committed == 1
            observed = True
    assert observed
    c.stabilize()
    assert leader.raft.raft_log.committed == 3
    assert c.applied[1] == [b"i1", b"i2"]
    assert c.applied[2] == [b"i1", b"i2"] and c.applied[3] == [b"i1", b"i2"]
    # No follower was ever told a commit index of 2 by itself.
    commits = {m.commit for m in c.sent_of(MessageType.APP, from_=1)}
    assert 2 not in commits


def test_figure8_uncommitted_old_entry_can_be_overwritten() -> None:
    """Reference: §5.4.2, Figure 8 (d): an entry of an old term replicated on
    a minority is overwritten by a later leader whose log is more
    up-to-date, so counting it as committed would have been unsafe."""
    # S1 had appended (2, 2) in term 2 and reached S2 only; S5 won term 3
    # with S3, S4 and appended (3, 2).
    c = Cluster(
        {
            1: new_storage((1, 2, 3, 4, 5), entries=ents(1, 1, 2), hard_state=HardState(term=2, vote=1, commit=1)),
            2: new_storage((1, 2, 3, 4, 5), entries=ents(1, 1, 2), hard_state=HardState(term=2, vote=1, commit=1)),
            3: new_storage((1, 2, 3, 4, 5), entries=ents(1, 1), hard_state=HardState(term=3, vote=5, commit=1)),
            4: new_storage((1, 2, 3, 4, 5), entries=ents(1, 1), hard_state=HardState(term=3, vote=5, commit=1)),
            5: new_storage(
                (1, 2, 3, 4, 5),
                entries=[Entry(1, 1, data=b"i1"), Entry(3, 2, data=b"s5")],
                hard_state=HardState(term=3, vote=5, commit=1),
            ),
        },
        pre_vote=False,
        check_quorum=False,
    )
    c.elect(5)
    assert c.nodes[5].raft.term == 4
    c.stabilize()
    for i in (1, 2, 3, 4, 5):
        assert c.log_terms(i) == [1, 3, 4], i
        assert c.applied[i] == [b"i1", b"s5"]
        assert c.nodes[i].raft.raft_log.term(2) == 3
