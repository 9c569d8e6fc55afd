"""Raft's safety properties, checked over a SimNetwork after every step.

``check_safety(net)`` keeps its history per network (a weak map), so the
properties are checked across the whole run, not only the current state:

- Election safety: at most one leader per term, over every (term, leader)
  ever seen (``net.leader_history`` plus the live leaders at each check),
  and at most one vote granted per voter and term (``net.vote_history``).
- Log matching: for any two logs (live nodes: in memory; crashed nodes: their
  storage), if the entries at some index have the same term, the logs are
  identical up to that index (over the range both still hold).
- Leader completeness: every entry seen committed (an entry at or below a
  node's commit index), first seen by a node at term B, is in the log of
  every leader of a term > B (unless that leader compacted it).
- State machine safety: applied sequences are prefixes of one another (and
  of the longest sequence ever applied); a committed index never holds two
  different entries.
- Durability: a node's commit index never decreases, including across a
  restart (the restarted node's commit is its persisted one); the persisted
  term never decreases and the persisted vote never changes within a term.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from raft.core import Entry, HardState, StateRole
from raft.testing.network import SimNetwork, format_entry

__all__ = ["SafetyChecker", "SafetyViolation", "check_safety"]


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold."""


@dataclass
class _NodeView:
    node_id: int
    live: bool
    term: int
    role: StateRole | None
    committed: int
    entries: list[Entry]
    first: int  # index of entries[0] (or last + 1 if empty)

    def entry(self, index: int) -> Entry | None:
        k = index - self.first
        if 0 <= k < len(self.entries):
            return self.entries[k]
        return None


@dataclass
class SafetyChecker:
    leaders: dict[int, int] = field(default_factory=dict)
    leader_history_seen: int = 0
    votes: dict[tuple[int, int], int] = field(default_factory=dict)  # (term, voter) -> candidate
    vote_history_seen: int = 0
    committed: dict[int, Entry] = field(default_factory=dict)  # index -> entry seen committed
    committed_top: int = 0  # highest index seen committed
    commit_bound_term: dict[int, int] = field(default_factory=dict)  # index -> term of the first node seen with it committed
    node_commit: dict[int, int] = field(default_factory=dict)
    node_incarnation: dict[int, object] = field(default_factory=dict)
    persisted: dict[int, HardState] = field(default_factory=dict)
    longest_applied: list[bytes] = field(default_factory=list)
    applied_checked: dict[int, tuple[list[bytes], int]] = field(default_factory=dict)  # node -> (list, length checked)
    leader_checked: dict[tuple[int, int], int] = field(default_factory=dict)  # (node, term) -> committed index checked
    checks: int = 0

    def check(self, net: SimNetwork) -> None:
        self.checks += 1
        views = self._views(net)
        self._check_leaders(net, views)
        self._check_durability(net, views)
        self._record_committed(views)
        self._check_log_matching(views)
        self._check_leader_completeness(views)
        self._check_applied(net)

    # -- views -------------------------------------------------------------------
    def _views(self, net: SimNetwork) -> list[_NodeView]:
        views = []
        for i in sorted(net.storages):
            node = net.nodes.get(i)
            if node is not None:
                r = node.raft
                log = r.raft_log
                entries = list(log.all_entries())
                first = entries[0].index if entries else log.last_index() + 1
                views.append(_NodeView(i, True, r.term, r.role, log.committed, entries, first))
            else:
                s = net.storages[i]
                entries = s.entries(s.first_index(), s.last_index() + 1)
                hs = s.hard_state
                views.append(_NodeView(i, False, hs.term, None, hs.commit, entries, s.first_index()))
        return views

    # -- election safety -------------------------------------------------------
    def _check_leaders(self, net: SimNetwork, views: list[_NodeView]) -> None:
        seen = net.leader_history[self.leader_history_seen :]
        self.leader_history_seen = len(net.leader_history)
        seen = seen + [(v.term, v.node_id) for v in views if v.role == StateRole.LEADER]
        for term, nid in seen:
            prev = self.leaders.setdefault(term, nid)
            if prev != nid:
                raise SafetyViolation(f"election safety: two leaders in term {term}: {prev} and {nid}")
        for term, voter, candidate in net.vote_history[self.vote_history_seen :]:
            prev = self.votes.setdefault((term, voter), candidate)
            if prev != candidate:
                raise SafetyViolation(
                    f"election safety: node {voter} voted twice in term {term}: for {prev} and for {candidate}"
                )
        self.vote_history_seen = len(net.vote_history)

    # -- durability and monotonic commit ----------------------------------------
    def _check_durability(self, net: SimNetwork, views: list[_NodeView]) -> None:
        for v in views:
            i = v.node_id
            hs = net.storages[i].hard_state
            prev = self.persisted.get(i)
            if prev is not None:
                if hs.term < prev.term:
                    raise SafetyViolation(f"node {i}: persisted term went back from {prev.term} to {hs.term}")
                if hs.term == prev.term and prev.vote and hs.vote != prev.vote:
                    raise SafetyViolation(
                        f"node {i}: persisted vote changed within term {hs.term}: {prev.vote} -> {hs.vote}"
                    )
                if hs.commit < prev.commit:
                    raise SafetyViolation(f"node {i}: persisted commit went back from {prev.commit} to {hs.commit}")
            self.persisted[i] = hs
            if not v.live:
                continue
            node = net.nodes[i]
            if v.committed < hs.commit:
                raise SafetyViolation(f"node {i}: commit index {v.committed} is below its persisted commit {hs.commit}")
            last = self.node_commit.get(i, 0)
            if self.node_incarnation.get(i) is not node:
                # A restart: the new incarnation starts from the persisted commit
                # (checked just above); what was only in memory is gone.
                self.node_incarnation[i] = node
                last = 0
            if v.committed < last:
                raise SafetyViolation(f"node {i}: commit index went back from {last} to {v.committed}")
            self.node_commit[i] = v.committed

    # -- committed entries -------------------------------------------------------
    def _record_committed(self, views: list[_NodeView]) -> None:
        for v in views:
            if v.committed <= self.committed_top:
                continue
            for idx in range(max(self.committed_top + 1, v.first), v.committed + 1):
                e = v.entry(idx)
                if e is None:
                    break
                self.committed[idx] = e
                self.commit_bound_term[idx] = v.term
            self.committed_top = v.committed
        # Every node's committed prefix must agree with what was recorded.
        for v in views:
            lo = v.first
            hi = min(v.committed, self.committed_top, v.first + len(v.entries) - 1)
            for idx in range(hi, lo - 1, -1):
                rec = self.committed.get(idx)
                if rec is None:
                    continue
                e = v.entry(idx)
                if e is rec:
                    break  # shared objects: what is below was checked when it was on top
                if e != rec:
                    assert e is not None
                    raise SafetyViolation(
                        f"state machine safety: node {v.node_id} has {format_entry(e)} at committed index "
                        f"{idx}, but {format_entry(rec)} was committed there"
                    )

    # -- log matching -------------------------------------------------------------
    def _check_log_matching(self, views: list[_NodeView]) -> None:
        for a_i, a in enumerate(views):
            for b in views[a_i + 1 :]:
                if not a.entries or not b.entries:
                    continue
                lo = max(a.first, b.first)
                hi = min(a.first + len(a.entries), b.first + len(b.entries)) - 1
                if lo > hi:
                    continue
                k = hi
                while k >= lo and a.entries[k - a.first].term != b.entries[k - b.first].term:
                    k -= 1
                if k < lo:
                    continue
                sa = a.entries[lo - a.first : k - a.first + 1]
                sb = b.entries[lo - b.first : k - b.first + 1]
                if sa != sb:
                    for ea, eb in zip(sa, sb):
                        if ea != eb:
                            raise SafetyViolation(
                                f"log matching: nodes {a.node_id} and {b.node_id} agree on the term at index "
                                f"{k} but differ at index {ea.index}: {format_entry(ea)} vs {format_entry(eb)}"
                            )

    # -- leader completeness -------------------------------------------------------
    def _check_leader_completeness(self, views: list[_NodeView]) -> None:
        for v in views:
            if v.role != StateRole.LEADER:
                continue
            key = (v.node_id, v.term)
            start = self.leader_checked.get(key, 0) + 1
            for idx in range(max(start, v.first), self.committed_top + 1):
                rec = self.committed.get(idx)
                if rec is None or self.commit_bound_term[idx] >= v.term:
                    continue
                e = v.entry(idx)
                if e is None or e != rec:
                    got = "nothing" if e is None else format_entry(e)
                    raise SafetyViolation(
                        f"leader completeness: leader {v.node_id} of term {v.term} has {got} at index {idx}, "
                        f"but {format_entry(rec)} was committed there (seen committed at term "
                        f"{self.commit_bound_term[idx]})"
                    )
            self.leader_checked[key] = self.committed_top

    # -- applied state -------------------------------------------------------------
    def _check_applied(self, net: SimNetwork) -> None:
        longest = self.longest_applied
        for i in sorted(net.nodes):
            a = net.applied[i]
            prev, checked = self.applied_checked.get(i, (None, 0))
            if prev is not a or checked > len(a):
                checked = 0
            n = min(len(a), len(longest))
            if a[checked:n] != longest[checked:n]:
                for j in range(checked, n):
                    if a[j] != longest[j]:
                        raise SafetyViolation(
                            f"state machine safety: node {i} applied {a[j]!r} as its entry #{j + 1} of data, "
                            f"but {longest[j]!r} was applied there elsewhere"
                        )
            if len(a) > len(longest):
                longest.extend(a[len(longest) :])
            self.applied_checked[i] = (a, len(a))


_checkers: weakref.WeakKeyDictionary[SimNetwork, SafetyChecker] = weakref.WeakKeyDictionary()


def check_safety(net: SimNetwork) -> None:
    """Check every property above; raise SafetyViolation on the first that
    fails. Call after every step: history is kept per network."""
    checker = _checkers.get(net)
    if checker is None:
        checker = _checkers[net] = SafetyChecker()
    checker.check(net)
