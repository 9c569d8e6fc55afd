"""A tiny direct harness for Raft core tests that need more control than
SimNetwork gives: pre-populated storages (Figure 7 logs), Readies held back
before advance(), and a log of every message that left a node.

Delivery is FIFO and deterministic. The host procedure is the one RawNode's
docstring prescribes: send ``messages``, persist, send
``messages_after_persist``, apply, ``advance``.
"""

from __future__ import annotations

import json
import logging
import random
from collections import deque
from typing import Callable, Iterable, Sequence

from raft.core import (
    ConfChange,
    ConfState,
    Config,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    StateRole,
    StepPeerNotFound,
    decode_conf_change,
)

LOG = logging.getLogger("tests.raft")


def ents(first_index: int, *terms: int) -> list[Entry]:
    """Entries at first_index, first_index+1, ... with the given terms and
    data naming them, e.g. ents(1, 1, 1, 4) -> (1,1), (2,1), (3,4)."""
    return [Entry(term=t, index=first_index + k, data=b"i%d" % (first_index + k)) for k, t in enumerate(terms)]


def new_storage(
    voters: Sequence[int] = (1, 2, 3),
    learners: Sequence[int] = (),
    *,
    entries: Iterable[Entry] = (),
    hard_state: HardState | None = None,
) -> MemoryStorage:
    s = MemoryStorage(conf_state=ConfState(voters=tuple(voters), learners=tuple(learners)))
    s.append(list(entries))
    if hard_state is not None:
        s.set_hard_state(hard_state)
    return s


def new_node(node_id: int, storage: MemoryStorage, *, seed: int = 0, **overrides: object) -> RawNode:
    cfg = Config(id=node_id, **overrides)  # type: ignore[arg-type]
    return RawNode(cfg, storage, rng=random.Random(seed * 1000 + node_id), logger=LOG)


def encode_state(applied: Sequence[bytes]) -> bytes:
    return json.dumps([d.hex() for d in applied]).encode()


def decode_state(data: bytes) -> list[bytes]:
    return [bytes.fromhex(h) for h in json.loads(data.decode())] if data else []


class Drained:
    """What draining a node's Readies produced."""

    def __init__(self) -> None:
        self.messages: list[Message] = []  # messages + messages_after_persist, in order
        self.committed: list[Entry] = []
        self.readies: list[Ready] = []

    def of(self, t: MessageType, to: int | None = None) -> list[Message]:
        return [m for m in self.messages if m.type == t and (to is None or m.to == to)]


def drain(node: RawNode, storage: MemoryStorage, max_rounds: int = 100) -> Drained:
    """Handle every Ready of a lone node (persisting into storage), keeping
    what it wanted to send and what it committed."""
    out = Drained()
    for _ in range(max_rounds):
        if not node.has_ready():
            return out
        rd = node.ready()
        out.readies.append(rd)
        out.messages.extend(rd.messages)
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        out.messages.extend(rd.messages_after_persist)
        out.committed.extend(rd.committed_entries)
        node.advance(rd)
    raise AssertionError("node did not quiesce")


def force_leader(node: RawNode, storage: MemoryStorage, voters: Sequence[int]) -> Drained:
    """Make a lone node leader by stepping fabricated grants from the other
    voters (the paper tests' way), then drain its Readies."""
    node.campaign()
    drain(node, storage)
    if node.raft.role == StateRole.PRE_CANDIDATE:
        for v in voters:
            if v != node.raft.id:
                node.step(Message(type=MessageType.PRE_VOTE_RESP, from_=v, to=node.raft.id, term=node.raft.term + 1))
        drain(node, storage)
    if node.raft.role == StateRole.CANDIDATE:
        for v in voters:
            if v != node.raft.id:
                node.step(Message(type=MessageType.VOTE_RESP, from_=v, to=node.raft.id, term=node.raft.term))
    out = drain(node, storage)
    assert node.raft.role == StateRole.LEADER, node.raft.role
    return out


class Cluster:
    """RawNodes over MemoryStorages with a FIFO message queue."""

    def __init__(self, storages: dict[int, MemoryStorage], *, seed: int = 0, **overrides: object) -> None:
        self.storages = storages
        self.seed = seed
        self.overrides = overrides
        self.nodes: dict[int, RawNode] = {i: new_node(i, s, seed=seed, **overrides) for i, s in storages.items()}
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []
        self.applied: dict[int, list[bytes]] = {i: [] for i in storages}
        self.conf_changes: dict[int, list[ConfChange]] = {i: [] for i in storages}
        self.readies: dict[int, list[Ready]] = {i: [] for i in storages}
        self.read_states: dict[int, list] = {i: [] for i in storages}
        self.cut_links: set[tuple[int, int]] = set()
        self.drop_types: set[MessageType] = set()
        self.filter: Callable[[Message], bool] | None = None  # False = drop

    @classmethod
    def new(cls, ids: Sequence[int] = (1, 2, 3), learners: Sequence[int] = (), **kw: object) -> "Cluster":
        return cls({i: new_storage(ids, learners) for i in (*ids, *learners)}, **kw)  # type: ignore[arg-type]

    # -- host procedure -----------------------------------------------------
    def persist(self, node_id: int, rd: Ready) -> None:
        s = self.storages[node_id]
        if rd.snapshot is not None:
            s.apply_snapshot(rd.snapshot)
            self.applied[node_id] = decode_state(rd.snapshot.data)
        if rd.entries:
            s.append(rd.entries)
        if rd.hard_state is not None:
            s.set_hard_state(rd.hard_state)

    def apply(self, node_id: int, rd: Ready) -> None:
        node = self.nodes[node_id]
        for e in rd.committed_entries:
            if e.kind == EntryKind.CONF_CHANGE:
                if e.data:
                    cc = decode_conf_change(e.data)
                    self.conf_changes[node_id].append(cc)
                    node.apply_conf_change(cc)
            elif e.data:
                self.applied[node_id].append(e.data)
        self.read_states[node_id].extend(rd.read_states)

    def send(self, msgs: Iterable[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if m.type in self.drop_types or (m.from_, m.to) in self.cut_links:
                continue
            if self.filter is not None and not self.filter(m):
                continue
            if m.to in self.nodes:
                self.queue.append(m)

    def take_ready(self, node_id: int) -> Ready:
        rd = self.nodes[node_id].ready()
        self.readies[node_id].append(rd)
        return rd

    def handle_ready(self, node_id: int) -> Ready | None:
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        rd = self.take_ready(node_id)
        self.send(rd.messages)
        self.persist(node_id, rd)
        self.send(rd.messages_after_persist)
        self.apply(node_id, rd)
        node.advance(rd)
        return rd

    def deliver_one(self) -> Message | None:
        if not self.queue:
            return None
        m = self.queue.popleft()
        node = self.nodes.get(m.to)
        if node is not None:
            try:
                node.step(m)
            except StepPeerNotFound:
                pass
        return m

    def stabilize(self, max_rounds: int = 2_000) -> None:
        for _ in range(max_rounds):
            progressed = False
            for i in sorted(self.nodes):
                if self.handle_ready(i) is not None:
                    progressed = True
            if self.queue:
                while self.queue:
                    self.deliver_one()
                progressed = True
            if not progressed:
                return
        raise AssertionError("cluster did not stabilize")

    # -- inputs ---------------------------------------------------------------
    def tick(self, node_id: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.tick()

    def campaign(self, node_id: int) -> None:
        self.nodes[node_id].campaign()

    def elect(self, node_id: int) -> None:
        self.campaign(node_id)
        self.stabilize()
        assert self.nodes[node_id].raft.role == StateRole.LEADER, self.nodes[node_id].raft.role

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, n: int) -> None:
        for o in self.nodes:
            if o != n:
                self.cut(n, o)

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop_types.clear()
        self.filter = None

    def add_node(self, node_id: int, conf_state: ConfState | None = None) -> RawNode:
        """Start a new, empty node. Like etcd's tests, it starts knowing the
        configuration it joins (default: that of the lowest-id live node),
        as if bootstrapped from it."""
        if conf_state is None:
            conf_state = self.nodes[min(self.nodes)].status().conf_state
        self.storages[node_id] = MemoryStorage(conf_state=conf_state)
        self.applied[node_id] = []
        self.conf_changes[node_id] = []
        self.readies[node_id] = []
        self.read_states[node_id] = []
        node = new_node(node_id, self.storages[node_id], seed=self.seed, **self.overrides)
        self.nodes[node_id] = node
        return node

    def compact(self, node_id: int, index: int | None = None) -> None:
        """Snapshot the node's applied state at index (default: applied) and
        compact its log up to it."""
        node = self.nodes[node_id]
        log = node.raft.raft_log
        index = log.applied if index is None else index
        s = self.storages[node_id]
        # Applied data up to index: every normal entry with data, from the
        # previous snapshot's state on.
        state = decode_state(s.snapshot().data)
        if s.first_index() <= index:
            for e in s.entries(s.first_index(), index + 1):
                if e.kind == EntryKind.NORMAL and e.data:
                    state.append(e.data)
        s.create_snapshot(index, node.status().conf_state, encode_state(state))
        s.compact(index)

    def crash(self, node_id: int) -> None:
        del self.nodes[node_id]

    def restart(self, node_id: int) -> RawNode:
        node = new_node(node_id, self.storages[node_id], seed=self.seed + 7, **self.overrides)
        self.nodes[node_id] = node
        self.applied[node_id] = decode_state(self.storages[node_id].snapshot().data)
        return node

    # -- reading ------------------------------------------------------------
    def sent_of(self, t: MessageType, *, from_: int | None = None, to: int | None = None) -> list[Message]:
        return [
            m
            for m in self.sent
            if m.type == t and (from_ is None or m.from_ == from_) and (to is None or m.to == to)
        ]

    def log_terms(self, node_id: int) -> list[int]:
        log = self.nodes[node_id].raft.raft_log
        return [log.term(i) for i in range(1, log.last_index() + 1)]
