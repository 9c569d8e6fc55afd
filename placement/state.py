"""The placement state machine (PURE): the shard map, with the node
registry (placement/registry.py) and leases (placement/leasebook.py).

Placement's Raft group replicates commands (placement/commands.py); every
replica applies them in log order to a `PlacementState` and gets the same
state and the same results. Nothing here reads a clock, a socket or a
random generator: a command carries every value the proposer chose, so
`apply` is deterministic.

What the state holds (DESIGN.md, "The shard map"):

- cluster id and slot count (0 / 0 until bootstrapped);
- nodes: id, kind (store/router), address, labels (``zone`` spreads
  replicas), state (up/down/draining/removed);
- shards: id, slot ranges, replicas, epoch ``(conf_version, slot_version)``,
  leader hint and the Raft term of that hint;
- ``map_version``: +1 on every change of the above (what routers watch);
- leases (placement/leasebook.py): they do not bump the map version.

This module owns the map itself: bootstrap (initial placement of replicas
over the slots), shard reports gated by the epoch (TiKV's rule), merges
seen in reports, and the queries over slots. Records and snapshots are
encoded by placement/codec.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from placement import codec, registry
from placement.authbook import AuthBook
from placement.commands import (
    Applied,
    AttachKeys,
    AuthChange,
    Bootstrap,
    Command,
    GrantLease,
    LeaseKeysDeleted,
    MapChange,
    RegisterNode,
    RejectCode,
    Rejected,
    ReportOutcome,
    ReportResult,
    ReportShard,
    ReportShards,
    RevokeLease,
    SetNodeState,
)
from placement.leasebook import LeaseBook
from placement.model import Lease, Node, NodeKind, NodeState, Replica, Shard
from shard.slots import MAX_SLOTS, SlotRanges, intersect, normalize, slot_of


@dataclass(slots=True)
class PlacementState:
    cluster_id: int = 0
    slot_count: int = 0
    map_version: int = 0
    nodes: dict[int, Node] = field(default_factory=dict)
    shards: dict[int, Shard] = field(default_factory=dict)
    max_shard_id: int = 0
    """The highest shard id the map ever held: ids are never reused (a shard
    merged away leaves tombstones and stray Raft messages of its group on the
    stores; a new shard with its id would be refused or confused)."""
    retired: set[int] = field(default_factory=set)
    """Shards merged away. A store destroys a replica of one that the merge
    did not (one left behind by a move before the merge); absence from the
    map alone does not tell, since a split's new shard enters the map only
    once its parent reports the split."""
    lease_book: LeaseBook = field(default_factory=LeaseBook)
    auth: AuthBook = field(default_factory=AuthBook)
    """etcd's users, roles and simple tokens (placement/authbook.py): they do not bump the map version."""

    @property
    def bootstrapped(self) -> bool:
        return self.cluster_id != 0

    @property
    def leases(self) -> dict[int, Lease]:
        return self.lease_book.leases

    @property
    def ending(self) -> dict[int, frozenset[bytes]]:
        """Leases revoked or expired whose attached keys are not all deleted yet."""
        return self.lease_book.ending

    # -- apply ---------------------------------------------------------------
    def apply(self, cmd: Command) -> Applied:
        """Apply one command. Results by command:

        Bootstrap -> cluster id | Rejected;  RegisterNode -> node id;
        SetNodeState -> NodeState | Rejected;  ReportShard -> ReportResult;
        ReportShards -> tuple of ReportResult (one per shard, in order);
        GrantLease -> Lease | Rejected;  RevokeLease -> tuple of its keys | Rejected;
        AttachKeys -> tuple of indexes whose lease does not exist;
        LeaseKeysDeleted -> keys of that lease still to delete (int).
        """
        if isinstance(cmd, Bootstrap):
            return self._bootstrap(cmd)
        if isinstance(cmd, RegisterNode):
            nid, node = registry.register(self.nodes, cmd)
            return Applied(nid, None if node is None else MapChange(self._bump(), nodes=(node,)))
        if isinstance(cmd, SetNodeState):
            out = registry.set_state(self.nodes, cmd)
            if isinstance(out, Rejected):
                return Applied(out)
            state, node = out
            return Applied(state, None if node is None else MapChange(self._bump(), nodes=(node,)))
        if isinstance(cmd, ReportShard):
            result, touched, removed = self._report(cmd.shard)
            return Applied(result, None if not touched else MapChange(self._bump(), shards=touched, removed_shards=removed))
        if isinstance(cmd, ReportShards):
            return self._report_many(cmd.shards)
        if isinstance(cmd, GrantLease):
            return self.lease_book.grant(cmd)
        if isinstance(cmd, RevokeLease):
            return self.lease_book.revoke(cmd.lease_id)
        if isinstance(cmd, AttachKeys):
            return self.lease_book.attach(cmd.changes)
        if isinstance(cmd, LeaseKeysDeleted):
            return self.lease_book.keys_deleted(cmd)
        if isinstance(cmd, AuthChange):
            return self.auth.apply(cmd)
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

    def _report(self, shard: Shard) -> tuple[ReportResult, tuple[Shard, ...], tuple[int, ...]]:
        """Apply one report: (its result, the shards it changed, the shards it merged away)."""
        shard = dataclasses.replace(shard, slots=normalize(shard.slots))
        outcome = self.judge_report(shard)
        cur = self.shards.get(shard.shard_id)
        if outcome != ReportOutcome.ACCEPTED:
            return ReportResult(outcome, cur), (), ()
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
        return ReportResult(outcome, new), (new,), merged

    def _report_many(self, shards: Sequence[Shard]) -> Applied:
        """ReportShards: each report in order; one map change naming every
        shard they changed as it is now, and every shard they merged away."""
        results: list[ReportResult] = []
        touched: set[int] = set()
        for shard in shards:
            result, changed, removed = self._report(shard)
            results.append(result)
            touched.update(s.shard_id for s in changed)
            touched.update(removed)
        if not touched:
            return Applied(tuple(results))
        now = tuple(self.shards[sid] for sid in sorted(touched) if sid in self.shards)
        gone = tuple(sid for sid in sorted(touched) if sid not in self.shards)
        return Applied(tuple(results), MapChange(self._bump(), shards=now, removed_shards=gone))

    # -- queries ---------------------------------------------------------------
    def leases_of(self, key: bytes) -> frozenset[int]:
        return self.lease_book.leases_of(key)

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
        """Up nodes unheard for longer than down_after_s (placement/registry.py)."""
        return registry.nodes_to_mark_down(self.nodes, last_heard, now, down_after_s, default_heard)

    # -- records (placement/codec.py) ----------------------------------------------
    def encode_map(self) -> bytes:
        """The map part (cluster, nodes, shards): one record."""
        return codec.encode_map(
            codec.MapRecord(self.cluster_id, self.slot_count, self.map_version, self.nodes, self.shards, self.max_shard_id, self.retired)
        )

    def encode_lease(self, lease_id: int) -> bytes | None:
        """The record of one lease (live or ending), None if it has none."""
        rec = self.lease_book.record(lease_id)
        return None if rec is None else codec.encode_lease(rec)

    @classmethod
    def load(cls, map_record: bytes | None, lease_records: Iterable[bytes]) -> PlacementState:
        st = cls()
        if map_record is not None:
            m = codec.decode_map(map_record)
            st.cluster_id, st.slot_count, st.map_version = m.cluster_id, m.slot_count, m.map_version
            st.nodes, st.shards, st.max_shard_id, st.retired = m.nodes, m.shards, m.max_shard_id, m.retired
        st.lease_book.load(codec.decode_lease(rec) for rec in lease_records)
        return st

    def snapshot(self) -> bytes:
        leases = [r for lid in sorted({*self.leases, *self.ending}) if (r := self.encode_lease(lid)) is not None]
        return codec.encode_snapshot(self.encode_map(), leases, self.auth.encode())

    @classmethod
    def from_snapshot(cls, data: bytes) -> PlacementState:
        map_record, lease_records = codec.decode_snapshot(data)
        st = cls.load(map_record, lease_records)
        auth = codec.decode_snapshot_auth(data)
        if auth:
            st.auth = AuthBook.decode(auth)
        return st


# -------------------------------------------------------- initial placement


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
