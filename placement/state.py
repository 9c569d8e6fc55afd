"""The placement state machine: shard map, node registry and leases (PURE).

Placement's Raft group replicates *commands*; every replica applies them in
log order to a `PlacementState` and gets the same state and the same
results. Nothing here reads a clock, a socket or a random generator: a
command carries every value the proposer chose (cluster id, lease id, time
is never needed), so `apply` is deterministic.

What the state holds (DESIGN.md, "The shard map"):

- cluster id and slot count (0 / 0 until bootstrapped);
- nodes: id, kind (store/router), address, labels (``zone`` spreads
  replicas), state (up/down/draining/removed);
- shards: id, slot ranges, replicas, epoch ``(conf_version, slot_version)``,
  leader hint and the Raft term of that hint;
- ``map_version``: +1 on every change of the above (what routers watch);
- leases: id -> granted TTL and the keys attached to it; and the leases that
  ended (revoked or expired) whose keys are not all deleted yet.

Lease changes do not bump the map version: routers do not route by leases.

Commands have an explicit versioned encoding (`encode_command` /
`decode_command`): one version byte, then a JSON object with an ``op``
field. Never pickle. An entry this version cannot decode raises
`CodecError`: every replica would fail alike, so the process stops
(fail-stop) rather than diverge.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shard.slots import MAX_SLOTS, SlotRanges, intersect, normalize, slot_of

CODEC_VERSION = 1
DEFAULT_REPLICAS = 3
MAX_LEASE_TTL_S = 9_000_000_000
"""etcd's MaxLeaseTTL: a grant above it fails with "too large lease TTL"."""
ZONE_LABEL = "zone"


class CodecError(ValueError):
    """A command or record this version cannot decode."""


class NodeKind(enum.IntEnum):
    STORE = 1
    ROUTER = 2


class NodeState(enum.IntEnum):
    UP = 1
    DOWN = 2
    DRAINING = 3
    REMOVED = 4


class RejectCode(enum.IntEnum):
    INVALID = 1
    NOT_BOOTSTRAPPED = 2
    ALREADY_BOOTSTRAPPED = 3
    NO_STORE_NODES = 4
    NODE_NOT_FOUND = 5
    LEASE_NOT_FOUND = 6
    LEASE_EXISTS = 7
    LEASE_TTL_TOO_LARGE = 8


class ReportOutcome(enum.IntEnum):
    ACCEPTED = 1
    STALE = 2
    UNKNOWN_SHARD = 3
    SLOT_CONFLICT = 4
    NOT_BOOTSTRAPPED = 5


# ----------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    conf_version: int = 1
    slot_version: int = 1

    def is_newer_than(self, other: Epoch) -> bool:
        """Both parts at least other's, and not equal (TiKV's region epoch rule)."""
        return self.conf_version >= other.conf_version and self.slot_version >= other.slot_version and self != other


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    kind: NodeKind
    address: str
    labels: tuple[tuple[str, str], ...] = ()
    state: NodeState = NodeState.UP

    @property
    def zone(self) -> str:
        for k, v in self.labels:
            if k == ZONE_LABEL:
                return v
        return ""


@dataclass(frozen=True, slots=True)
class Replica:
    node_id: int
    learner: bool = False


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: int
    slots: SlotRanges
    replicas: tuple[Replica, ...]
    epoch: Epoch = Epoch()
    leader_node_id: int = 0
    leader_term: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    ttl_s: int
    keys: frozenset[bytes] = frozenset()


# --------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Bootstrap:
    cluster_id: int
    slot_count: int
    initial_shards: int = 0
    """0: one shard per up store node (at least one)."""
    replicas: int = DEFAULT_REPLICAS


@dataclass(frozen=True, slots=True)
class RegisterNode:
    node_id: int
    """0: the state assigns the next free id."""
    kind: NodeKind
    address: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SetNodeState:
    node_id: int
    state: NodeState


@dataclass(frozen=True, slots=True)
class ReportShard:
    shard: Shard


@dataclass(frozen=True, slots=True)
class GrantLease:
    lease_id: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class RevokeLease:
    lease_id: int


@dataclass(frozen=True, slots=True)
class KeyChange:
    lease_id: int
    key: bytes
    detach: bool = False


@dataclass(frozen=True, slots=True)
class AttachKeys:
    changes: tuple[KeyChange, ...]


@dataclass(frozen=True, slots=True)
class LeaseKeysDeleted:
    lease_id: int
    keys: tuple[bytes, ...]


Command = Bootstrap | RegisterNode | SetNodeState | ReportShard | GrantLease | RevokeLease | AttachKeys | LeaseKeysDeleted


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rejected:
    code: RejectCode
    message: str


@dataclass(frozen=True, slots=True)
class ReportResult:
    outcome: ReportOutcome
    current: Shard | None


@dataclass(frozen=True, slots=True)
class MapChange:
    """What one applied command changed in the map, at map_version. `full`:
    the cluster itself changed (bootstrap): watchers get the whole map."""

    map_version: int
    full: bool = False
    nodes: tuple[Node, ...] = ()
    shards: tuple[Shard, ...] = ()
    removed_shards: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Applied:
    result: object
    """What the proposer gets: a Rejected, or the command's value (see `apply`)."""
    change: MapChange | None = None
    leases_touched: tuple[int, ...] = ()
    """Leases whose record (live or ending) changed: the storage layer rewrites them."""


# ------------------------------------------------------------------ state


@dataclass(slots=True)
class PlacementState:
    cluster_id: int = 0
    slot_count: int = 0
    map_version: int = 0
    nodes: dict[int, Node] = field(default_factory=dict)
    shards: dict[int, Shard] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    ending: dict[int, frozenset[bytes]] = field(default_factory=dict)
    """Leases revoked or expired whose attached keys are not all deleted yet."""
    max_shard_id: int = 0
    """The highest shard id the map ever held: ids are never reused (a shard
    merged away leaves tombstones and stray Raft messages of its group on the
    stores; a new shard with its id would be refused or confused)."""
    retired: set[int] = field(default_factory=set)
    """Shards merged away. A store destroys a replica of one that the merge
    did not (one left behind by a move before the merge); absence from the
    map alone does not tell, since a split's new shard enters the map only
    once its parent reports the split."""
    _key_lease: dict[bytes, int] = field(default_factory=dict)

    @property
    def bootstrapped(self) -> bool:
        return self.cluster_id != 0

    # -- apply ---------------------------------------------------------------
    def apply(self, cmd: Command) -> Applied:
        """Apply one command. Results by command:

        Bootstrap -> cluster id | Rejected;  RegisterNode -> node id;
        SetNodeState -> NodeState | Rejected;  ReportShard -> ReportResult;
        GrantLease -> Lease | Rejected;  RevokeLease -> tuple of its keys | Rejected;
        AttachKeys -> tuple of indexes whose lease does not exist;
        LeaseKeysDeleted -> keys of that lease still to delete (int).
        """
        if isinstance(cmd, Bootstrap):
            return self._bootstrap(cmd)
        if isinstance(cmd, RegisterNode):
            return self._register(cmd)
        if isinstance(cmd, SetNodeState):
            return self._set_node_state(cmd)
        if isinstance(cmd, ReportShard):
            return self._report(cmd.shard)
        if isinstance(cmd, GrantLease):
            return self._grant(cmd)
        if isinstance(cmd, RevokeLease):
            return self._revoke(cmd.lease_id)
        if isinstance(cmd, AttachKeys):
            return self._attach(cmd.changes)
        if isinstance(cmd, LeaseKeysDeleted):
            return self._keys_deleted(cmd)
        raise TypeError(f"not a placement command: {cmd!r}")

    def _bump(self) -> int:
        self.map_version += 1
        return self.map_version

    def _bootstrap(self, cmd: Bootstrap) -> Applied:
        if self.bootstrapped:
            return Applied(Rejected(RejectCode.ALREADY_BOOTSTRAPPED, f"cluster {self.cluster_id:x} is already bootstrapped"))
        if cmd.cluster_id == 0:
            return Applied(Rejected(RejectCode.INVALID, "cluster id must not be 0"))
        if not 0 < cmd.slot_count <= MAX_SLOTS:
            return Applied(Rejected(RejectCode.INVALID, f"slot count must be in 1..{MAX_SLOTS}, got {cmd.slot_count}"))
        if cmd.replicas < 1:
            return Applied(Rejected(RejectCode.INVALID, f"replicas must be at least 1, got {cmd.replicas}"))
        stores = [n for n in self.nodes.values() if n.kind == NodeKind.STORE and n.state == NodeState.UP]
        if not stores:
            return Applied(Rejected(RejectCode.NO_STORE_NODES, "no store node is registered and up: register store nodes first"))
        shard_count = cmd.initial_shards or len(stores)
        if not 0 < shard_count <= cmd.slot_count:
            return Applied(Rejected(RejectCode.INVALID, f"initial shards must be in 1..{cmd.slot_count}, got {shard_count}"))
        placements = place_replicas(stores, shard_count, cmd.replicas)
        self.cluster_id = cmd.cluster_id
        self.slot_count = cmd.slot_count
        for i, node_ids in enumerate(placements):
            sid = i + 1
            self.shards[sid] = Shard(
                shard_id=sid,
                slots=initial_slots(i, shard_count, cmd.slot_count),
                replicas=tuple(Replica(nid) for nid in node_ids),
            )
        self.max_shard_id = max(self.max_shard_id, shard_count)
        return Applied(cmd.cluster_id, MapChange(self._bump(), full=True))

    def _register(self, cmd: RegisterNode) -> Applied:
        nid = cmd.node_id or (max(self.nodes, default=0) + 1)
        labels = tuple(sorted(dict(cmd.labels).items()))
        node = Node(nid, cmd.kind, cmd.address, labels, NodeState.UP)
        if self.nodes.get(nid) == node:
            return Applied(nid)
        self.nodes[nid] = node
        return Applied(nid, MapChange(self._bump(), nodes=(node,)))

    def _set_node_state(self, cmd: SetNodeState) -> Applied:
        node = self.nodes.get(cmd.node_id)
        if node is None:
            return Applied(Rejected(RejectCode.NODE_NOT_FOUND, f"node {cmd.node_id} is not registered"))
        if node.state == cmd.state:
            return Applied(node.state)
        node = dataclasses.replace(node, state=cmd.state)
        self.nodes[cmd.node_id] = node
        return Applied(node.state, MapChange(self._bump(), nodes=(node,)))

    def judge_report(self, shard: Shard) -> ReportOutcome:
        """What applying ReportShard(shard) would answer (a leader checks
        heartbeats with it before proposing, so stale reports never reach the log)."""
        if not self.bootstrapped:
            return ReportOutcome.NOT_BOOTSTRAPPED
        cur = self.shards.get(shard.shard_id)
        if cur is None:
            # A shard a split created: it enters the map once its slots are
            # free, i.e. once its parent reported giving them up.
            if shard.shard_id == 0 or not shard.slots or shard.slots[-1][1] > self.slot_count:
                return ReportOutcome.UNKNOWN_SHARD
            for other in self.shards.values():
                if intersect(other.slots, shard.slots):
                    return ReportOutcome.SLOT_CONFLICT
            return ReportOutcome.ACCEPTED
        if shard.epoch.is_newer_than(cur.epoch):
            if shard.slots != cur.slots:
                for other in self.shards.values():
                    if other.shard_id != shard.shard_id and intersect(other.slots, shard.slots) and not self._absorbed(other, shard):
                        return ReportOutcome.SLOT_CONFLICT
            return ReportOutcome.ACCEPTED
        if shard.epoch == cur.epoch and shard.leader_node_id and shard.leader_term > cur.leader_term:
            return ReportOutcome.ACCEPTED  # same epoch, a newer leader: only the hint changes
        return ReportOutcome.STALE

    @staticmethod
    def _absorbed(other: Shard, shard: Shard) -> bool:
        """Did shard (reported at a newer epoch) take over all of other's
        slots, i.e. merge it? A shard's slots grow only by a CommitMerge in
        its own log, which needs the other shard frozen for it."""
        return bool(other.slots) and normalize(intersect(other.slots, shard.slots)) == normalize(other.slots)

    def _report(self, shard: Shard) -> Applied:
        shard = dataclasses.replace(shard, slots=normalize(shard.slots))
        outcome = self.judge_report(shard)
        cur = self.shards.get(shard.shard_id)
        if outcome != ReportOutcome.ACCEPTED:
            return Applied(ReportResult(outcome, cur))
        if cur is None:
            new = shard  # a split's new shard (judge_report checked its slots are free)
        elif shard.epoch == cur.epoch:
            new = dataclasses.replace(cur, leader_node_id=shard.leader_node_id, leader_term=shard.leader_term)
        elif shard.leader_term < cur.leader_term:
            new = dataclasses.replace(shard, leader_node_id=cur.leader_node_id, leader_term=cur.leader_term)
        else:
            new = shard
        # A merge: the shards whose slots this one took over leave the map in the same change.
        merged = tuple(sorted(
            sid for sid, other in self.shards.items()
            if sid != shard.shard_id and cur is not None and intersect(other.slots, new.slots) and self._absorbed(other, new)
        ))
        for sid in merged:
            del self.shards[sid]
            self.retired.add(sid)
        self.shards[shard.shard_id] = new
        self.max_shard_id = max(self.max_shard_id, shard.shard_id)
        return Applied(ReportResult(outcome, new), MapChange(self._bump(), shards=(new,), removed_shards=merged))

    def _grant(self, cmd: GrantLease) -> Applied:
        if cmd.lease_id == 0:
            return Applied(Rejected(RejectCode.INVALID, "lease id 0 means no lease: the proposer picks an id"))
        if cmd.ttl_s > MAX_LEASE_TTL_S:
            return Applied(Rejected(RejectCode.LEASE_TTL_TOO_LARGE, f"TTL {cmd.ttl_s} s is above {MAX_LEASE_TTL_S} s"))
        if cmd.ttl_s <= 0:
            return Applied(Rejected(RejectCode.INVALID, f"TTL must be positive after clamping, got {cmd.ttl_s}"))
        if cmd.lease_id in self.leases or cmd.lease_id in self.ending:
            return Applied(Rejected(RejectCode.LEASE_EXISTS, f"lease {cmd.lease_id:x} already exists"))
        lease = Lease(cmd.lease_id, cmd.ttl_s)
        self.leases[cmd.lease_id] = lease
        return Applied(lease, leases_touched=(cmd.lease_id,))

    def _revoke(self, lease_id: int) -> Applied:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return Applied(Rejected(RejectCode.LEASE_NOT_FOUND, f"lease {lease_id:x} not found"))
        for k in lease.keys:
            self._key_lease.pop(k, None)
        if lease.keys:
            self.ending[lease_id] = lease.keys
        return Applied(tuple(sorted(lease.keys)), leases_touched=(lease_id,))

    def _attach(self, changes: Sequence[KeyChange]) -> Applied:
        not_found: list[int] = []
        touched: set[int] = set()
        for i, ch in enumerate(changes):
            old = self._key_lease.get(ch.key)
            if ch.detach:
                if old is not None and old == ch.lease_id:
                    self._set_keys(old, self.leases[old].keys - {ch.key})
                    del self._key_lease[ch.key]
                    touched.add(old)
                continue
            lease = self.leases.get(ch.lease_id)
            if lease is None:
                not_found.append(i)
                continue
            if old == ch.lease_id:
                continue
            if old is not None:  # a key has at most one lease: it moves
                self._set_keys(old, self.leases[old].keys - {ch.key})
                touched.add(old)
            self._set_keys(ch.lease_id, lease.keys | {ch.key})
            self._key_lease[ch.key] = ch.lease_id
            touched.add(ch.lease_id)
        return Applied(tuple(not_found), leases_touched=tuple(sorted(touched)))

    def _set_keys(self, lease_id: int, keys: frozenset[bytes]) -> None:
        self.leases[lease_id] = dataclasses.replace(self.leases[lease_id], keys=keys)

    def _keys_deleted(self, cmd: LeaseKeysDeleted) -> Applied:
        left = self.ending.get(cmd.lease_id)
        if left is None:
            return Applied(0)
        left = left - frozenset(cmd.keys)
        if left:
            self.ending[cmd.lease_id] = left
        else:
            del self.ending[cmd.lease_id]
        return Applied(len(left), leases_touched=(cmd.lease_id,))

    # -- queries ---------------------------------------------------------------
    def lease_of(self, key: bytes) -> int | None:
        return self._key_lease.get(key)

    def shard_of_slot(self, slot: int) -> Shard | None:
        for s in self.shards.values():
            for lo, hi in s.slots:
                if lo <= slot < hi:
                    return s
        return None

    def keys_by_shard(self, keys: Iterable[bytes]) -> dict[int, tuple[bytes, ...]]:
        """Group keys by the shard that owns their slot (0: no shard owns it)."""
        out: dict[int, list[bytes]] = {}
        for k in sorted(keys):
            s = self.shard_of_slot(slot_of(k, self.slot_count)) if self.slot_count else None
            out.setdefault(s.shard_id if s else 0, []).append(k)
        return {sid: tuple(ks) for sid, ks in sorted(out.items())}

    def nodes_to_mark_down(self, last_heard: Mapping[int, float], now: float, down_after_s: float, default_heard: float) -> list[int]:
        """Up nodes unheard for longer than down_after_s (a node never heard
        counts as heard at default_heard: when this leader took over)."""
        return [
            nid
            for nid, n in sorted(self.nodes.items())
            if n.state == NodeState.UP and now - last_heard.get(nid, default_heard) > down_after_s
        ]

    # -- encoding ----------------------------------------------------------------
    def encode_map(self) -> bytes:
        """The map part (cluster, nodes, shards): one record."""
        return _dump(
            {
                "cluster_id": self.cluster_id,
                "slot_count": self.slot_count,
                "map_version": self.map_version,
                "nodes": [_node_obj(n) for _, n in sorted(self.nodes.items())],
                "shards": [_shard_obj(s) for _, s in sorted(self.shards.items())],
                "max_shard_id": self.max_shard_id,
                "retired": sorted(self.retired),
            }
        )

    def encode_lease(self, lease_id: int) -> bytes | None:
        """The record of one lease (live or ending), None if it has none."""
        lease = self.leases.get(lease_id)
        if lease is not None:
            return _dump({"id": lease_id, "ttl": lease.ttl_s, "keys": sorted(k.hex() for k in lease.keys), "ending": False})
        keys = self.ending.get(lease_id)
        if keys is not None:
            return _dump({"id": lease_id, "ttl": 0, "keys": sorted(k.hex() for k in keys), "ending": True})
        return None

    @classmethod
    def load(cls, map_record: bytes | None, lease_records: Iterable[bytes]) -> PlacementState:
        st = cls()
        if map_record is not None:
            o = _load(map_record)
            st.cluster_id = int(o["cluster_id"])
            st.slot_count = int(o["slot_count"])
            st.map_version = int(o["map_version"])
            for no in o["nodes"]:
                n = _node_from(no)
                st.nodes[n.node_id] = n
            for so in o["shards"]:
                s = _shard_from(so)
                st.shards[s.shard_id] = s
            st.max_shard_id = max(int(o.get("max_shard_id", 0)), max(st.shards, default=0))
            st.retired = {int(x) for x in o.get("retired", ())}
        for rec in lease_records:
            lo = _load(rec)
            lid = int(lo["id"])
            keys = frozenset(bytes.fromhex(k) for k in lo["keys"])
            if lo["ending"]:
                st.ending[lid] = keys
            else:
                st.leases[lid] = Lease(lid, int(lo["ttl"]), keys)
                for k in keys:
                    st._key_lease[k] = lid
        return st

    def snapshot(self) -> bytes:
        leases = [r for lid in sorted({*self.leases, *self.ending}) if (r := self.encode_lease(lid)) is not None]
        return _dump({"map": self.encode_map().hex(), "leases": [r.hex() for r in leases]})

    @classmethod
    def from_snapshot(cls, data: bytes) -> PlacementState:
        o = _load(data)
        return cls.load(bytes.fromhex(o["map"]), [bytes.fromhex(r) for r in o["leases"]])


# -------------------------------------------------------------- placement


def initial_slots(index: int, shards: int, slot_count: int) -> SlotRanges:
    """Slots of the index-th (0-based) of `shards` equal contiguous ranges
    (the same split as the store node's static bootstrap)."""
    return ((index * slot_count // shards, (index + 1) * slot_count // shards),)


def place_replicas(stores: Sequence[Node], shard_count: int, replicas: int) -> list[tuple[int, ...]]:
    """Choose min(replicas, len(stores)) distinct nodes for each shard: the
    least loaded first, in a zone no other replica of the shard uses where
    labels allow (a node without a zone label is a zone of its own), ties by
    node id. Deterministic."""
    r = min(replicas, len(stores))
    load = {n.node_id: 0 for n in stores}
    out: list[tuple[int, ...]] = []
    for _ in range(shard_count):
        chosen: list[Node] = []
        zones: set[str] = set()
        for _ in range(r):
            best = min(
                (n for n in stores if n not in chosen),
                key=lambda n: (bool(n.zone) and n.zone in zones, load[n.node_id], n.node_id),
            )
            chosen.append(best)
            if best.zone:
                zones.add(best.zone)
            load[best.node_id] += 1
        out.append(tuple(n.node_id for n in chosen))
    return out


# -------------------------------------------------------------- the codec


def encode_command(cmd: Command) -> bytes:
    if isinstance(cmd, Bootstrap):
        o: dict[str, object] = {"op": "bootstrap", "cluster_id": cmd.cluster_id, "slot_count": cmd.slot_count,
                                "initial_shards": cmd.initial_shards, "replicas": cmd.replicas}
    elif isinstance(cmd, RegisterNode):
        o = {"op": "register_node", "node_id": cmd.node_id, "kind": int(cmd.kind), "address": cmd.address, "labels": [list(kv) for kv in cmd.labels]}
    elif isinstance(cmd, SetNodeState):
        o = {"op": "set_node_state", "node_id": cmd.node_id, "state": int(cmd.state)}
    elif isinstance(cmd, ReportShard):
        o = {"op": "report_shard", "shard": _shard_obj(cmd.shard)}
    elif isinstance(cmd, GrantLease):
        o = {"op": "grant_lease", "lease_id": cmd.lease_id, "ttl_s": cmd.ttl_s}
    elif isinstance(cmd, RevokeLease):
        o = {"op": "revoke_lease", "lease_id": cmd.lease_id}
    elif isinstance(cmd, AttachKeys):
        o = {"op": "attach_keys", "changes": [[c.lease_id, c.key.hex(), c.detach] for c in cmd.changes]}
    elif isinstance(cmd, LeaseKeysDeleted):
        o = {"op": "lease_keys_deleted", "lease_id": cmd.lease_id, "keys": [k.hex() for k in cmd.keys]}
    else:
        raise TypeError(f"not a placement command: {cmd!r}")
    return _dump(o)


def decode_command(data: bytes) -> Command:
    o = _load(data)
    try:
        op = o["op"]
        if op == "bootstrap":
            return Bootstrap(int(o["cluster_id"]), int(o["slot_count"]), int(o["initial_shards"]), int(o["replicas"]))
        if op == "register_node":
            return RegisterNode(int(o["node_id"]), NodeKind(o["kind"]), str(o["address"]), tuple((str(k), str(v)) for k, v in o["labels"]))
        if op == "set_node_state":
            return SetNodeState(int(o["node_id"]), NodeState(o["state"]))
        if op == "report_shard":
            return ReportShard(_shard_from(o["shard"]))
        if op == "grant_lease":
            return GrantLease(int(o["lease_id"]), int(o["ttl_s"]))
        if op == "revoke_lease":
            return RevokeLease(int(o["lease_id"]))
        if op == "attach_keys":
            return AttachKeys(tuple(KeyChange(int(lid), bytes.fromhex(k), bool(d)) for lid, k, d in o["changes"]))
        if op == "lease_keys_deleted":
            return LeaseKeysDeleted(int(o["lease_id"]), tuple(bytes.fromhex(k) for k in o["keys"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed placement command {op!r}: {exc}") from exc
    raise CodecError(f"unknown placement command {op!r}")


def _dump(o: Mapping[str, object]) -> bytes:
    return bytes([CODEC_VERSION]) + json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def _load(data: bytes) -> dict:  # type: ignore[type-arg]  # a JSON object: fields checked by the readers
    if not data or data[0] != CODEC_VERSION:
        raise CodecError(f"unknown placement record version {data[:1]!r} (this build reads {CODEC_VERSION})")
    try:
        o = json.loads(data[1:])
    except ValueError as exc:
        raise CodecError(f"malformed placement record: {exc}") from exc
    if not isinstance(o, dict):
        raise CodecError("malformed placement record: not an object")
    return o


def _node_obj(n: Node) -> dict[str, object]:
    return {"id": n.node_id, "kind": int(n.kind), "address": n.address, "labels": [list(kv) for kv in n.labels], "state": int(n.state)}


def _node_from(o: Mapping[str, object]) -> Node:
    labels = o["labels"]
    assert isinstance(labels, list)
    return Node(int(o["id"]), NodeKind(o["kind"]), str(o["address"]), tuple((str(k), str(v)) for k, v in labels), NodeState(o["state"]))  # type: ignore[call-overload]


def _shard_obj(s: Shard) -> dict[str, object]:
    return {
        "id": s.shard_id,
        "slots": [list(r) for r in s.slots],
        "replicas": [[r.node_id, r.learner] for r in s.replicas],
        "epoch": [s.epoch.conf_version, s.epoch.slot_version],
        "leader": s.leader_node_id,
        "leader_term": s.leader_term,
    }


def _shard_from(o: Mapping[str, object]) -> Shard:
    slots, replicas, epoch = o["slots"], o["replicas"], o["epoch"]
    assert isinstance(slots, list) and isinstance(replicas, list) and isinstance(epoch, list)
    return Shard(
        shard_id=int(o["id"]),  # type: ignore[call-overload]
        slots=normalize((int(lo), int(hi)) for lo, hi in slots),
        replicas=tuple(Replica(int(nid), bool(le)) for nid, le in replicas),
        epoch=Epoch(int(epoch[0]), int(epoch[1])),
        leader_node_id=int(o["leader"]),  # type: ignore[call-overload]
        leader_term=int(o["leader_term"]),  # type: ignore[call-overload]
    )
