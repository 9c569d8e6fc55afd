"""SimNetwork: an in-memory, single-threaded, seeded network of RawNodes.

No sockets, no sleeps, no asyncio, no clock: time is ``tick()`` calls, the
network is a FIFO list of in-flight messages, and "disk" is each node's
``MemoryStorage``. One ``random.Random(seed)`` drives every random choice the
network makes (drops, duplications, reorders, delays, and the seeds of the
per-node RNGs), so the same seed and the same calls give the same run, and a
failing seed replays exactly. With no chaos set and no drop rules, delivery is
FIFO and uses no randomness at all.

The host model (what a real ``GroupHost`` does with a Ready, in this order):

1. send ``rd.messages``;
2. persist: ``apply_snapshot(rd.snapshot)`` (and restore the app state from
   the snapshot data), ``append(rd.entries)``, ``set_hard_state(rd.hard_state)``;
3. send ``rd.messages_after_persist``;
4. apply ``rd.committed_entries``: NORMAL entries with data are appended to
   ``net.applied[id]``; CONF_CHANGE entries go through
   ``node.apply_conf_change`` and are recorded in ``net.conf_changes[id]``;
   read states are appended to ``net.read_states[id]``;
5. ``node.advance(rd)``.

The application state of node ``i`` is ``net.applied[i]``. It is volatile: a
crash loses it, and ``restart`` rebuilds it from the storage's snapshot data
(``encode_app_state``) plus the committed entries the restarted node applies
again (``Config.applied`` is the snapshot index).

Faults are evaluated when a message is delivered, not when it is sent: a
message in flight when ``cut`` is called is lost. ``heal()`` removes cuts,
isolation, drop rules and ignored types; it does not touch chaos
(``set_chaos()`` with no arguments turns chaos off).
"""

from __future__ import annotations

import logging
import random
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from raft.core import (
    Config,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateRole,
    StepPeerNotFound,
    decode_conf_change,
)

__all__ = [
    "PersistRecord",
    "SimNetwork",
    "SimStorage",
    "decode_app_state",
    "encode_app_state",
    "format_conf_change",
    "format_conf_state",
    "format_data",
    "format_entry",
    "format_message",
    "format_ready",
    "format_snapshot",
]

_LEN = struct.Struct(">I")


# -- application state encoding ------------------------------------------------
def encode_app_state(applied: Sequence[bytes]) -> bytes:
    """Encode the app state (the list of applied payloads) as snapshot data."""
    return b"".join(_LEN.pack(len(d)) + d for d in applied)


def decode_app_state(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + n > len(data):
            raise ValueError("truncated app state")
        out.append(bytes(data[pos : pos + n]))
        pos += n
    return out


# -- formatting (shared with the interaction environment) ----------------------
_MSG_NAMES = {t: t.name for t in MessageType}
_CC_PREFIX = {ConfChangeType.ADD_NODE: "v", ConfChangeType.REMOVE_NODE: "r", ConfChangeType.ADD_LEARNER: "l"}

# Fields always printed for a message type, in addition to any non-default one.
_ALWAYS: dict[MessageType, frozenset[str]] = {
    MessageType.APP: frozenset({"logterm", "index", "commit", "entries"}),
    MessageType.APP_RESP: frozenset({"index"}),
    MessageType.VOTE: frozenset({"logterm", "index"}),
    MessageType.PRE_VOTE: frozenset({"logterm", "index"}),
    MessageType.HEARTBEAT: frozenset({"commit"}),
    MessageType.READ_INDEX_RESP: frozenset({"index"}),
}


def format_data(data: bytes) -> str:
    """Printable payloads as "text", others as hex."""
    if all(32 <= b < 127 and b not in (34, 92) for b in data):
        return '"' + data.decode("ascii") + '"'
    return "0x" + data.hex()


def format_conf_change(cc: ConfChange) -> str:
    return f"{_CC_PREFIX[cc.type]}{cc.node_id}"


def format_entry(e: Entry) -> str:
    if e.kind == EntryKind.CONF_CHANGE:
        try:
            body = format_conf_change(decode_conf_change(e.data))
        except ValueError:
            body = format_data(e.data)
        return f"{e.term}/{e.index} EntryConfChange {body}"
    return f"{e.term}/{e.index} EntryNormal {format_data(e.data)}"


def format_conf_state(cs: ConfState) -> str:
    s = "voters=(" + " ".join(map(str, cs.voters)) + ")"
    if cs.learners:
        s += " learners=(" + " ".join(map(str, cs.learners)) + ")"
    return s


def format_snapshot(s: Snapshot) -> str:
    m = s.metadata
    return f"index={m.index} term={m.term} {format_conf_state(m.conf_state)}"


def format_message(m: Message) -> str:
    """``1->2 APP term=1 logterm=1 index=3 commit=3 entries=[1/4 EntryNormal "x"]``"""
    always = _ALWAYS.get(m.type, frozenset())
    parts = [f"{m.from_}->{m.to} {_MSG_NAMES[m.type]} term={m.term}"]
    if m.log_term or "logterm" in always:
        parts.append(f"logterm={m.log_term}")
    if m.index or "index" in always:
        parts.append(f"index={m.index}")
    if m.commit or "commit" in always:
        parts.append(f"commit={m.commit}")
    if m.entries or "entries" in always:
        parts.append("entries=[" + ", ".join(format_entry(e) for e in m.entries) + "]")
    if m.snapshot is not None:
        parts.append(f"snapshot=[{format_snapshot(m.snapshot)}]")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}")
    elif m.reject_hint:
        parts.append(f"hint={m.reject_hint}")
    if m.context:
        parts.append(f"ctx={format_data(m.context)}")
    return " ".join(parts)


def format_ready(rd: Ready, indent: str = "  ") -> list[str]:
    """The Ready in the order the host handles it: send, persist, send after
    persist, apply."""
    sub = indent + "  "
    out = [f"{indent}Ready must_sync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"{indent}soft_state role={rd.soft_state.role.name} leader={rd.soft_state.leader_id}")
    if rd.messages:
        out.append(f"{indent}messages:")
        out.extend(sub + format_message(m) for m in rd.messages)
    if rd.snapshot is not None:
        out.append(f"{indent}snapshot {format_snapshot(rd.snapshot)}")
    if rd.entries:
        out.append(f"{indent}entries:")
        out.extend(sub + format_entry(e) for e in rd.entries)
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"{indent}hard_state term={hs.term} vote={hs.vote} commit={hs.commit}")
    if rd.messages_after_persist:
        out.append(f"{indent}messages_after_persist:")
        out.extend(sub + format_message(m) for m in rd.messages_after_persist)
    if rd.committed_entries:
        out.append(f"{indent}committed_entries:")
        out.extend(sub + format_entry(e) for e in rd.committed_entries)
    if rd.read_states:
        out.append(f"{indent}read_states:")
        out.extend(f"{sub}index={r.index} ctx={format_data(r.request_ctx)}" for r in rd.read_states)
    return out


# -- the network ----------------------------------------------------------------
class SimStorage(MemoryStorage):
    """A MemoryStorage whose ``snapshot()`` serves the host's current applied
    state when that is newer than the stored snapshot: snapshots generated on
    demand, as TiKV does (and as etcd's interaction environment overrides
    it). Without this, a leader would send a stale snapshot, e.g. the
    bootstrap one, whose configuration does not contain the new node it is
    for, and the node would refuse it forever. ``stored_snapshot()`` is the
    durable one: a restart starts from it."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        super().__init__(conf_state)
        self.snapshot_source: Callable[[], Snapshot | None] | None = None

    def stored_snapshot(self) -> Snapshot:
        return super().snapshot()

    def snapshot(self) -> Snapshot:
        stored = super().snapshot()
        if self.snapshot_source is not None:
            fresh = self.snapshot_source()
            if fresh is not None and fresh.metadata.index > stored.metadata.index:
                return fresh
        return stored


def _stored_snapshot(storage: MemoryStorage) -> Snapshot:
    return storage.stored_snapshot() if isinstance(storage, SimStorage) else storage.snapshot()


@dataclass(frozen=True, slots=True)
class PersistRecord:
    """One persist batch of one node (what SimLogStore would have written)."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None


class _TraceHandler(logging.Handler):
    """Appends core log lines (no timestamps) to the network trace."""

    def __init__(self, net: SimNetwork) -> None:
        super().__init__(logging.DEBUG)
        self._net = net

    def emit(self, record: logging.LogRecord) -> None:
        net = self._net
        net.trace.append(f"{net._indent}{record.levelname} {record.getMessage()}")


class SimNetwork:
    """In-memory, single-threaded network of RawNodes. No sockets, sleeps or asyncio.

    Attributes (read them freely; change them only through methods):
        nodes            live nodes (a crashed node is absent until restart)
        storages         every node's MemoryStorage, crashed or not: the "disk"
        crashed          ids of crashed nodes
        applied          per node: data of applied NORMAL entries with non-empty data
        applied_index    per node: index of the last applied entry
        conf_changes     per node: (index, ConfChange) applied by the current incarnation
        read_states      per node: every ReadState the node returned
        persisted        per node: every persist batch, in order
        leader_history   every (term, node id) seen becoming leader, in order
        vote_history     every vote granted and sent: (term, voter, candidate)
        trace            one line per event / Ready / delivered message (if tracing)
        now              ticks of tick_all so far (network time; releases delayed messages)
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        trace: bool = True,
        log_to_trace: bool = False,
        logger: logging.Logger | None = None,
        bootstrap_index: int = 0,
        config_overrides: Mapping[str, object] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.config_overrides: dict[str, object] = dict(config_overrides or {})
        self.bootstrap_index = bootstrap_index
        self.nodes: dict[int, RawNode] = {}
        self.storages: dict[int, MemoryStorage] = {}  # SimStorage unless given
        self.crashed: set[int] = set()
        self.applied: dict[int, list[bytes]] = {}
        self.applied_index: dict[int, int] = {}
        self.conf_changes: dict[int, list[tuple[int, ConfChange]]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.persisted: dict[int, list[PersistRecord]] = {}
        self.leader_history: list[tuple[int, int]] = []
        self.vote_history: list[tuple[int, int, int]] = []
        self.trace: list[str] = []
        self.now = 0
        self.tracing = trace
        self._indent = ""
        self._inflight: list[Message] = []
        self._delayed: list[tuple[int, Message]] = []
        self._cuts: set[tuple[int, int]] = set()
        self._isolated: set[int] = set()
        self._drop_rules: dict[tuple[int, int], float] = {}
        self._ignored: set[MessageType] = set()
        self._crash_after_persist: set[int] = set()
        self._chaos_drop = 0.0
        self._chaos_dup = 0.0
        self._chaos_reorder = 0.0
        self._chaos_delay = 0.0
        self.on_apply: Callable[[int, Entry], None] | None = None
        """Optional hook, called with (node id, entry) for every applied entry."""
        if logger is None:
            if log_to_trace:
                logger = logging.Logger(f"raft.testing.sim.{id(self)}", logging.INFO)
                logger.addHandler(_TraceHandler(self))
            else:
                logger = logging.getLogger("raft.testing.sim")
        self.logger = logger

    @classmethod
    def new(
        cls,
        ids: Iterable[int] = (1, 2, 3),
        seed: int = 0,
        learners: Iterable[int] = (),
        *,
        trace: bool = True,
        log_to_trace: bool = False,
        logger: logging.Logger | None = None,
        bootstrap_index: int = 0,
        **config_overrides: object,
    ) -> SimNetwork:
        """A network of bootstrapped members: voters are ``ids`` minus
        ``learners``; every node of ``ids`` and ``learners`` starts with that
        configuration. ``config_overrides`` go into every node's ``Config``.

        With ``bootstrap_index=0`` the configuration lives only in the index-0
        metadata of each MemoryStorage (etcd's ``withPeers``), and the first
        election is at term 1. With ``bootstrap_index=k >= 1`` every member
        starts from a snapshot at (index k, term 1) holding the configuration
        (etcd interaction tests' ``index=k``): a node added later then gets
        the configuration through that snapshot. ``add_node`` requires it
        unless every member has compacted past index 0.
        """
        net = cls(
            seed,
            trace=trace,
            log_to_trace=log_to_trace,
            logger=logger,
            bootstrap_index=bootstrap_index,
            config_overrides=config_overrides,
        )
        learner_set = sorted(set(learners))
        members = sorted(set(ids) | set(learner_set))
        cs = ConfState(voters=tuple(i for i in members if i not in learner_set), learners=tuple(learner_set))
        for i in members:
            storage = SimStorage(conf_state=cs)
            if bootstrap_index > 0:
                storage.apply_snapshot(
                    Snapshot(SnapshotMetadata(index=bootstrap_index, term=1, conf_state=cs), encode_app_state([]))
                )
                storage.set_hard_state(HardState(term=1, vote=0, commit=bootstrap_index))
            net._start(i, storage)
        return net

    # -- membership and lifecycle ------------------------------------------
    def _config(self, node_id: int, applied: int) -> Config:
        return Config(id=node_id, applied=applied, **self.config_overrides)  # type: ignore[arg-type]

    def _start(self, node_id: int, storage: MemoryStorage) -> None:
        """Start a node from what is durable in storage (a boot or a restart)."""
        snap = _stored_snapshot(storage)
        snap_index = snap.metadata.index
        node_rng = random.Random(self.rng.getrandbits(64))
        if isinstance(storage, SimStorage):
            storage.snapshot_source = lambda: self._fresh_snapshot(node_id)
        self.storages[node_id] = storage
        self.applied[node_id] = decode_app_state(snap.data) if snap_index else []
        self.applied_index[node_id] = snap_index
        self.conf_changes[node_id] = []
        self.read_states.setdefault(node_id, [])
        self.persisted.setdefault(node_id, [])
        self.crashed.discard(node_id)
        self.nodes[node_id] = RawNode(self._config(node_id, snap_index), storage, rng=node_rng, logger=self.logger)

    def add_node(self, node_id: int, learner: bool = False) -> RawNode:
        """Create a new, empty node (``MemoryStorage()``) on the network. The
        caller proposes the conf change that adds it (``learner`` is only a
        reminder of which one: the configuration comes from the leader)."""
        del learner
        if node_id in self.storages:
            raise ValueError(f"node {node_id} already exists")
        if self.bootstrap_index == 0 and any(_stored_snapshot(s).metadata.index == 0 for s in self.storages.values()):
            raise ValueError(
                "add_node needs SimNetwork.new(..., bootstrap_index>=1) (or every member compacted): "
                "a new node that replays the log from index 1 never learns the bootstrap voters"
            )
        self._event(f"add-node {node_id}")
        self._start(node_id, SimStorage())
        return self.nodes[node_id]

    def crash(self, node_id: int) -> None:
        """The node loses everything not in its storage; its in-flight
        messages (to and from it) are lost; it stops ticking and receiving."""
        if node_id not in self.nodes:
            raise ValueError(f"node {node_id} is not running")
        del self.nodes[node_id]
        self.crashed.add(node_id)
        self._crash_after_persist.discard(node_id)
        lost = [m for m in self._inflight if m.to == node_id or m.from_ == node_id]
        lost += [m for _, m in self._delayed if m.to == node_id or m.from_ == node_id]
        self._inflight = [m for m in self._inflight if m.to != node_id and m.from_ != node_id]
        self._delayed = [(t, m) for t, m in self._delayed if m.to != node_id and m.from_ != node_id]
        self._event(f"crash {node_id}")
        for m in lost:
            # A snapshot stream to a crashed node breaks: its sender learns it.
            if m.type == MessageType.SNAP and m.from_ in self.nodes:
                self.nodes[m.from_].report_snapshot(m.to, ok=False)

    def crash_after_persist(self, node_id: int) -> None:
        """On the node's next Ready: send ``messages``, persist, then crash
        before sending ``messages_after_persist`` and before applying."""
        if node_id not in self.nodes:
            raise ValueError(f"node {node_id} is not running")
        self._crash_after_persist.add(node_id)

    def cancel_crash_after_persist(self, node_id: int | None = None) -> None:
        """Forget a pending ``crash_after_persist`` (of every node if None)."""
        if node_id is None:
            self._crash_after_persist.clear()
        else:
            self._crash_after_persist.discard(node_id)

    def restart(self, node_id: int) -> None:
        """A new RawNode from the same storage; the app state is rebuilt from
        the snapshot data and the committed entries the node applies again."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} is running: crash it first")
        if node_id not in self.storages:
            raise ValueError(f"unknown node {node_id}")
        self._event(f"restart {node_id}")
        self._start(node_id, self.storages[node_id])

    # -- inputs --------------------------------------------------------------
    def _live(self, node_id: int) -> RawNode:
        node = self.nodes.get(node_id)
        if node is None:
            raise ValueError(f"node {node_id} is not running")
        return node

    def campaign(self, node_id: int) -> None:
        self._live(node_id).campaign()
        self.stabilize()

    def propose(self, node_id: int, data: bytes) -> None:
        """Raises ProposalDropped. Does not stabilize."""
        self._live(node_id).propose(data)

    def propose_conf_change(self, node_id: int, cc: ConfChange) -> None:
        self._live(node_id).propose_conf_change(cc)

    def read_index(self, node_id: int, ctx: bytes) -> None:
        self._live(node_id).read_index(ctx)

    def transfer_leader(self, node_id: int, target: int) -> None:
        self._live(node_id).transfer_leader(target)

    def tick(self, node_id: int, n: int = 1) -> None:
        node = self._live(node_id)
        for _ in range(n):
            node.tick()

    def tick_all(self, n: int = 1) -> None:
        """Tick every live node n times; each round advances network time,
        which releases delayed messages that are due."""
        for _ in range(n):
            for i in sorted(self.nodes):
                self.nodes[i].tick()
            self.now += 1
            if self._delayed:
                due = [m for t, m in self._delayed if t <= self.now]
                if due:
                    self._delayed = [(t, m) for t, m in self._delayed if t > self.now]
                    self._inflight.extend(due)

    def compact(self, node_id: int, index: int | None = None) -> None:
        """Snapshot the app state at the applied index, then compact the log
        up to ``index`` (default: the applied index)."""
        node = self._live(node_id)
        applied = self.applied_index[node_id]
        if index is None:
            index = applied
        if index > applied:
            raise ValueError(f"cannot compact node {node_id} to {index}: applied is {applied}")
        storage = self.storages[node_id]
        if applied > _stored_snapshot(storage).metadata.index:
            storage.create_snapshot(applied, node.status().conf_state, encode_app_state(self.applied[node_id]))
        storage.compact(index)
        self._event(f"compact {node_id} {index}")

    # -- faults ----------------------------------------------------------------
    def cut(self, a: int, b: int) -> None:
        self._cuts.add((a, b))
        self._cuts.add((b, a))
        self._event(f"cut {a} {b}")

    def isolate(self, node_id: int) -> None:
        self._isolated.add(node_id)
        self._event(f"isolate {node_id}")

    def drop(self, *, from_: int, to: int, rate: float) -> None:
        """Drop messages from ``from_`` to ``to`` with probability ``rate``."""
        self._drop_rules[(from_, to)] = rate

    def ignore(self, t: MessageType) -> None:
        """Drop every message of type t."""
        self._ignored.add(t)

    def heal(self) -> None:
        """Remove cuts, isolation, drop rules and ignored types (not chaos)."""
        self._cuts.clear()
        self._isolated.clear()
        self._drop_rules.clear()
        self._ignored.clear()
        self._event("heal")

    def set_chaos(self, drop: float = 0.0, dup: float = 0.0, reorder: float = 0.0, delay: float = 0.0) -> None:
        """Random faults on every message: drop it, deliver it twice, shuffle
        a receiver's batch (``reorder`` is the chance per batch), or delay it
        by 1-3 ticks of ``tick_all``."""
        self._chaos_drop, self._chaos_dup, self._chaos_reorder, self._chaos_delay = drop, dup, reorder, delay

    # -- the loop ----------------------------------------------------------------
    def has_in_flight(self, ids: Iterable[int] | None = None) -> bool:
        if ids is None:
            return bool(self._inflight)
        s = set(ids)
        return any(m.to in s for m in self._inflight)

    def in_flight(self) -> tuple[Message, ...]:
        """Messages waiting for delivery (not counting delayed ones)."""
        return tuple(self._inflight)

    def stabilize(self, max_rounds: int = 10_000, ids: Iterable[int] | None = None) -> None:
        """Handle every Ready and deliver every message until quiet. With
        ``ids``, only those nodes handle Readys and receive messages."""
        only = None if ids is None else sorted(set(ids))
        for _ in range(max_rounds):
            busy = False
            for i in only if only is not None else sorted(self.nodes):
                if self.process_ready(i):
                    busy = True
            for i in only if only is not None else sorted({m.to for m in self._inflight}):
                if self.deliver_msgs(i):
                    busy = True
            if not busy:
                return
        raise RuntimeError(f"stabilize did not settle within {max_rounds} rounds (seed {self.seed})")

    def process_ready(self, node_id: int) -> bool:
        """Handle one Ready of the node if it has one. True if it had."""
        node = self.nodes.get(node_id)
        if node is None or not node.has_ready():
            return False
        rd = node.ready()
        tracing = self.tracing
        if tracing:
            self.trace.append(f"> {node_id} handling Ready")
            self.trace.extend(format_ready(rd))
            self._indent = "  "
        if rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER:
            self.leader_history.append((node.raft.term, node_id))
        self._inflight.extend(rd.messages)
        storage = self.storages[node_id]
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            self.applied[node_id] = decode_app_state(rd.snapshot.data)
            self.applied_index[node_id] = rd.snapshot.metadata.index
            self.conf_changes[node_id] = []
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        self.persisted[node_id].append(PersistRecord(rd.hard_state, rd.entries, rd.snapshot))
        if node_id in self._crash_after_persist:
            if tracing:
                self._indent = ""
                self.trace.append(
                    f"> {node_id} crashes after persist "
                    f"({len(rd.messages_after_persist)} messages_after_persist lost)"
                )
            self.crash(node_id)
            return True
        self._inflight.extend(rd.messages_after_persist)
        for m in rd.messages_after_persist:
            if m.type == MessageType.VOTE_RESP and not m.reject:
                self.vote_history.append((m.term, node_id, m.to))
        applied = self.applied[node_id]
        for e in rd.committed_entries:
            expected = self.applied_index[node_id] + 1
            if e.index != expected:
                raise AssertionError(f"node {node_id} asked to apply entry {e.index}, expected {expected}")
            self.applied_index[node_id] = e.index
            if e.kind == EntryKind.CONF_CHANGE:
                cc = decode_conf_change(e.data)
                node.apply_conf_change(cc)
                self.conf_changes[node_id].append((e.index, cc))
            elif e.data:
                applied.append(e.data)
            if self.on_apply is not None:
                self.on_apply(node_id, e)
        if rd.read_states:
            self.read_states[node_id].extend(rd.read_states)
        node.advance(rd)
        self._indent = ""
        return True

    def deliver_msgs(self, node_id: int) -> bool:
        """Deliver every in-flight message addressed to node_id (FIFO unless
        reordered by chaos). True if there was any."""
        if not self._inflight:
            return False
        batch = [m for m in self._inflight if m.to == node_id]
        if not batch:
            return False
        self._inflight = [m for m in self._inflight if m.to != node_id]
        if self._chaos_reorder and len(batch) > 1 and self.rng.random() < self._chaos_reorder:
            self.rng.shuffle(batch)
        if self.tracing:
            self.trace.append(f"> {node_id} receiving messages")
        for m in batch:
            self._deliver(m)
        self._indent = ""
        return True

    def _drop_reason(self, m: Message) -> str | None:
        if m.to not in self.nodes:
            return "crashed" if m.to in self.crashed else "unknown node"
        if m.from_ in self._isolated or m.to in self._isolated:
            return "isolated"
        if (m.from_, m.to) in self._cuts:
            return "cut"
        if m.type in self._ignored:
            return "ignored"
        rate = self._drop_rules.get((m.from_, m.to))
        if rate and self.rng.random() < rate:
            return "dropped"
        if self._chaos_drop and self.rng.random() < self._chaos_drop:
            return "dropped (chaos)"
        return None

    def _deliver(self, m: Message) -> None:
        tracing = self.tracing
        reason = self._drop_reason(m)
        if reason is not None:
            if tracing:
                self.trace.append(f"  {format_message(m)} DROPPED: {reason}")
            if m.type == MessageType.SNAP and m.from_ in self.nodes:
                self.nodes[m.from_].report_snapshot(m.to, ok=False)
            return
        if self._chaos_delay and self.rng.random() < self._chaos_delay:
            if tracing:
                self.trace.append(f"  {format_message(m)} DELAYED")
            self._delayed.append((self.now + self.rng.randint(1, 3), m))
            return
        if self._chaos_dup and self.rng.random() < self._chaos_dup:
            self._inflight.append(m)  # the copy arrives in a later round
        if tracing:
            self.trace.append(f"  {format_message(m)}")
            self._indent = "  "
        node = self.nodes[m.to]
        try:
            node.step(m)
        except StepPeerNotFound:
            if tracing:
                self.trace.append("  (ignored: response from a peer not in the configuration)")
        except ProposalDropped:
            if tracing:
                self.trace.append("  (proposal dropped)")
        if m.type == MessageType.SNAP and m.from_ in self.nodes:
            self.nodes[m.from_].report_snapshot(m.to, ok=True)

    def _fresh_snapshot(self, node_id: int) -> Snapshot | None:
        """A snapshot of the node's app state at its applied index (or None)."""
        node = self.nodes.get(node_id)
        if node is None:
            return None
        index = self.applied_index[node_id]
        storage = self.storages[node_id]
        if index <= _stored_snapshot(storage).metadata.index:
            return None
        meta = SnapshotMetadata(index=index, term=storage.term(index), conf_state=node.status().conf_state)
        return Snapshot(meta, encode_app_state(self.applied[node_id]))

    def _event(self, text: str) -> None:
        if self.tracing:
            self.trace.append(text)

    # -- queries -----------------------------------------------------------------
    def leader(self) -> int | None:
        """The live leader with the highest term (lowest id on a tie), or None."""
        best: tuple[int, int] | None = None
        for i in sorted(self.nodes):
            r = self.nodes[i].raft
            if r.role == StateRole.LEADER and (best is None or r.term > best[0]):
                best = (r.term, i)
        return None if best is None else best[1]

    def log_entries(self, node_id: int) -> list[Entry]:
        """The node's whole log: in memory (storage + unstable) if it is
        running, else what its storage holds."""
        node = self.nodes.get(node_id)
        if node is not None:
            return list(node.raft.raft_log.all_entries())
        s = self.storages[node_id]
        return s.entries(s.first_index(), s.last_index() + 1)
