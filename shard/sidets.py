"""Closed timestamps of idle shards on a side channel, one per node pair (pure).

A shard leader that has nothing in flight (every entry proposed is in the
log, committed, applied and matched by every member, and no txn lock or
merge freeze) does not propose a ``ClosedTs`` entry per shard any more.
Instead its node runs *rounds*: in each it stamps one timestamp T with its
HLC and sends each peer node one message for all the idle shards it leads
with that peer as a member: the set of them as a delta (shard, term, applied
index I, members), T, and what every member acknowledged. DESIGN.md
("Revisions and time") has the argument; in short:

* An entry (S, term t, index I) is published only while S is idle at its
  leader: every proposal stamped before T is in S's log at or below I, and
  every later one is stamped by the same HLC, above T (rev >= stamp).
* A member acknowledges round r (timestamp T_r) only after its own HLC has
  passed T_r and a floor above T_r is on its disk (it stamps above T_r from
  then on, across restarts), and only for the shards whose term and leader
  it still sees as the publisher's (``Receiver.refuse``: a member that moved
  to a later term of S never vouches for the old leader again).
* T is usable for S (``stable``) once *every* member of S (voters and
  learners, as the publisher applied them) acknowledged a round at or after
  the one that published S's entry: whoever leads S later has stamped above
  T, so every write after index I gets a revision above T. A member added
  later joins behind a ``ClosedTs`` entry the leader logs before any conf
  change (``GroupHost.conf_change_barrier``).
* A replica reads at max(replicated closed_ts, T) only once it applied I,
  and never while it holds a txn lock or is frozen for a merge.

The side-channel value is never applied into the replicated state: the
replicated closed timestamp moves only through the log, as before.

Messages are dicts of ints and lists (encoded by the caller). This module
is pure: no clocks, I/O or asyncio.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["Entry", "Publisher", "Receiver", "decode", "encode"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One idle shard as its leader publishes it."""

    term: int
    index: int
    """The leader's applied (= last) index of the shard when it was found idle."""
    members: tuple[int, ...]
    """Every member of the shard's group (voters, learners), the publisher included."""
    since: int = 0
    """The publisher's round that sent this entry first (acks from earlier rounds do not cover it)."""


def _stable(entry: Entry, publisher: int, acked: dict[int, tuple[int, int]], refused: dict[int, frozenset[int]], shard_id: int, latest_ts: int) -> int:
    """The least timestamp every member of entry vouched for (0: none yet).
    acked: node -> (round, ts) of its latest acknowledgement."""
    out = latest_ts
    for m in entry.members:
        if m == publisher:
            continue
        a = acked.get(m)
        if a is None or a[0] < entry.since or shard_id in refused.get(m, frozenset()):
            return 0
        out = min(out, a[1])
    return out


@dataclass(slots=True)
class _Dest:
    """What the publisher sent one peer node, and what it acknowledged."""

    shards: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)
    """Shards whose entry (or removal) this peer has not been sent yet."""
    full: bool = True
    """Send the whole set next round (first contact, or the peer asked)."""
    last_round: int = 0
    """The last round sent to it."""


class Publisher:
    """The leader side of one node (pure): which idle shards it publishes,
    the rounds' messages per peer node, the acknowledgements."""

    def __init__(self, node_id: int, incarnation: int) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        """Tells a peer that rounds restarted (this process restarted)."""
        self.round = 0
        self.ts = 0
        """The timestamp of the latest round."""
        self.entries: dict[int, Entry] = {}
        self.acked: dict[int, tuple[int, int]] = {}
        """node -> (round, ts) of its latest acknowledgement."""
        self.refused: dict[int, frozenset[int]] = {}
        """node -> the shards it refused in its latest acknowledgement."""
        self._dests: dict[int, _Dest] = {}

    def _dest(self, node: int) -> _Dest:
        d = self._dests.get(node)
        if d is None:
            d = self._dests[node] = _Dest()
        return d

    def set_entry(self, shard_id: int, entry: Entry | None) -> None:
        """Publish shard_id as idle with entry from the next round on (None:
        not idle here any more). An unchanged entry keeps its round."""
        old = self.entries.get(shard_id)
        if entry is None:
            if old is None:
                return
            del self.entries[shard_id]
            for m in old.members:
                if m != self.node_id:
                    self._dest(m).pending.add(shard_id)
            return
        if old is not None and (old.term, old.index, old.members) == (entry.term, entry.index, entry.members):
            return
        self.entries[shard_id] = Entry(entry.term, entry.index, entry.members, self.round + 1)
        for m in set(entry.members) | set(old.members if old else ()):
            if m != self.node_id:
                self._dest(m).pending.add(shard_id)

    def stable(self, shard_id: int) -> int:
        """The closed timestamp of shard_id every member vouched for (0: none)."""
        e = self.entries.get(shard_id)
        if e is None:
            return 0
        return _stable(e, self.node_id, self.acked, self.refused, shard_id, self.ts)

    def next_round(self, ts: int) -> dict[int, dict]:
        """A round at timestamp ts (above every earlier one): the message to
        each peer node that is a member of a published shard or was sent one."""
        assert ts > self.ts, "round timestamps must grow"
        self.round += 1
        self.ts = ts
        acks = [[n, r, t] for n, (r, t) in sorted(self.acked.items())]
        refused = [[n, sorted(s)] for n, s in sorted(self.refused.items()) if s]
        out: dict[int, dict] = {}
        for node, d in self._dests.items():
            msg: dict = {"k": "pub", "inc": self.incarnation, "round": self.round, "prev": d.last_round, "ts": ts, "acks": acks}
            if refused:
                msg["refused"] = refused
            if d.full:
                wanted = {sid for sid, e in self.entries.items() if node in e.members}
                msg["full"] = 1
                msg["add"] = [[sid, *_wire(self.entries[sid])] for sid in sorted(wanted)]
                d.shards = wanted
                d.full = False
            else:
                add, drop = [], []
                for sid in sorted(d.pending):
                    e = self.entries.get(sid)
                    if e is not None and node in e.members:
                        add.append([sid, *_wire(e)])
                        d.shards.add(sid)
                    elif sid in d.shards:
                        drop.append(sid)
                        d.shards.discard(sid)
                if add:
                    msg["add"] = add
                if drop:
                    msg["drop"] = drop
            d.pending.clear()
            d.last_round = self.round
            out[node] = msg
        return out

    def on_ack(self, node: int, ack: dict) -> None:
        """A peer's acknowledgement of a round (or its request for the whole set)."""
        if ack.get("inc") != self.incarnation:
            return  # for an earlier process of this node
        d = self._dest(node)
        if ack.get("full"):
            d.full = True
            return
        r, ts = int(ack["round"]), int(ack["ts"])
        prev = self.acked.get(node)
        if prev is None or r > prev[0]:
            self.acked[node] = (r, ts)
            self.refused[node] = frozenset(ack.get("refused", ()))

    def forget_node(self, node: int) -> None:
        """A peer that restarted or is gone: its acknowledgements no longer count."""
        self.acked.pop(node, None)
        self.refused.pop(node, None)
        self._dest(node).full = True


def _wire(e: Entry) -> list:
    return [e.term, e.index, list(e.members), e.since]


@dataclass(slots=True)
class _From:
    """What one publisher told this node."""

    incarnation: int
    round: int
    ts: int
    entries: dict[int, Entry] = field(default_factory=dict)
    acked: dict[int, tuple[int, int]] = field(default_factory=dict)
    refused: dict[int, frozenset[int]] = field(default_factory=dict)


class Receiver:
    """A member's side (pure): the publications of each leader node, this
    node's acknowledgements, and each shard's usable closed timestamp."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self._from: dict[int, _From] = {}
        self._refused: dict[int, set[int]] = {}
        """publisher -> shards this node refuses (its term or leader differs)."""
        self.frozen: dict[int, tuple[int, int]] = {}
        """shard -> (ts, index): a stable value kept after its entry went away."""
        self._where: dict[int, int] = {}
        """shard -> the publisher whose entry it uses."""

    def on_publication(self, publisher: int, msg: dict, view: Callable[[int], tuple[int, int]]) -> dict:
        """Take a publication; return the acknowledgement to send back. The
        caller first makes its HLC pass msg["ts"] durably. view(shard) is this
        node's (term, leader) of a shard ((0, 0): not hosted)."""
        inc, rnd, ts = int(msg["inc"]), int(msg["round"]), int(msg["ts"])
        f = self._from.get(publisher)
        full = bool(msg.get("full"))
        if not full and (f is None or f.incarnation != inc or f.round != int(msg["prev"])):
            return {"k": "ack", "inc": inc, "full": 1}  # a gap: ask for the whole set
        if f is None or f.incarnation != inc or full:
            if f is not None:
                for sid in list(f.entries):
                    self._drop(publisher, f, sid)
            f = self._from[publisher] = _From(inc, rnd, ts)
            self._refused[publisher] = set()
        f.round, f.ts = rnd, ts
        f.acked = {int(n): (int(r), int(t)) for n, r, t in msg.get("acks", ())}
        f.refused = {int(n): frozenset(s) for n, s in msg.get("refused", ())}
        refused = self._refused.setdefault(publisher, set())
        for sid in msg.get("drop", ()):
            self._drop(publisher, f, sid)
            refused.discard(sid)
        for sid, term, index, members, since in msg.get("add", ()):
            e = Entry(int(term), int(index), tuple(members), int(since))
            if view(sid) != (e.term, publisher):
                if sid in f.entries:
                    self._drop(publisher, f, sid)
                refused.add(sid)
                continue
            refused.discard(sid)
            old_pub = self._where.get(sid)
            if old_pub is not None and old_pub != publisher:
                of = self._from.get(old_pub)
                if of is not None and sid in of.entries:
                    if of.entries[sid].term > e.term:
                        refused.add(sid)
                        continue
                    self._drop(old_pub, of, sid)
            f.entries[sid] = e
            self._where[sid] = publisher
        # Acknowledged: this node's own round/ts as a member, for the next stable().
        f.acked[self.node_id] = (rnd, ts)
        f.refused[self.node_id] = frozenset(refused)
        ack: dict = {"k": "ack", "inc": inc, "round": rnd, "ts": ts}
        if refused:
            ack["refused"] = sorted(refused)
        return ack

    def refuse(self, shard_id: int, view: Callable[[int], tuple[int, int]]) -> None:
        """shard_id's role, leader or term changed here: stop vouching for
        (and using) an entry of a publisher this node no longer follows at
        that entry's term; its stable value so far is kept."""
        pub = self._where.get(shard_id)
        if pub is None:
            return
        f = self._from.get(pub)
        if f is None or shard_id not in f.entries:
            return
        if view(shard_id) == (f.entries[shard_id].term, pub):
            return
        self._drop(pub, f, shard_id)
        self._refused.setdefault(pub, set()).add(shard_id)
        f.refused[self.node_id] = frozenset(self._refused[pub])

    def _drop(self, publisher: int, f: _From, shard_id: int) -> None:
        e = f.entries.pop(shard_id, None)
        if self._where.get(shard_id) == publisher:
            del self._where[shard_id]
        if e is None:
            return
        st = _stable(e, publisher, f.acked, f.refused, shard_id, f.ts)
        if st:
            old = self.frozen.get(shard_id)
            if old is None or st > old[0]:
                self.frozen[shard_id] = (st, max(e.index, old[1] if old else 0))

    def closed(self, shard_id: int, applied_index: int) -> int:
        """The side channel's closed timestamp of shard_id for a replica that
        applied applied_index (0: none usable). The caller ignores it while
        the replica holds a txn lock or is frozen."""
        best = 0
        fr = self.frozen.get(shard_id)
        if fr is not None and applied_index >= fr[1]:
            best = fr[0]
        pub = self._where.get(shard_id)
        if pub is not None:
            f = self._from[pub]
            e = f.entries[shard_id]
            if applied_index >= e.index:
                st = _stable(e, pub, f.acked, f.refused, shard_id, f.ts)
                if st > best:
                    # Kept: a value once used stays (a member's later refusal
                    # stops it growing, never takes it back).
                    self.frozen[shard_id] = (st, e.index)
                    best = st
        return best

    def forget(self, shard_id: int, below: int = 0) -> None:
        """Drop a frozen value the replicated closed timestamp caught up with
        (below: that closed timestamp), or every trace of a shard (below 0)."""
        fr = self.frozen.get(shard_id)
        if fr is not None and (below <= 0 or fr[0] <= below):
            del self.frozen[shard_id]

    def shards(self) -> Iterable[int]:
        return list(self._where)


def encode(msg: dict) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def decode(raw: bytes) -> dict:
    out = json.loads(raw)
    if not isinstance(out, dict):
        raise ValueError("a side-channel message must be an object")
    return out
